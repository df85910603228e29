package controllers

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/moe-operator/moe-operator/gateway/enginemetrics"
)

// EngineMetrics is one reading of an engine pod's /metrics (vLLM's names, which `moe serve`
// exports too; docs/metrics.md): the load gauges and the generated-token counter.
type EngineMetrics = enginemetrics.Reading

// parseEngineMetrics reads an exposition; every metric the autoscaler uses must be present.
var parseEngineMetrics = enginemetrics.Parse

// MetricsSource reads an engine pod's metrics. The autoscaler calls Scrape for every Ready
// pod of a MixtralDeployment on each pass, concurrently; port is the engine's HTTP port
// (spec.engine.port). An error means the reading is missing: the autoscaler then holds
// rather than scale down.
type MetricsSource interface {
	Scrape(ctx context.Context, pod *corev1.Pod, port int32) (EngineMetrics, error)
}

// PodAddresser says where an engine pod's HTTP port is reached from the operator, as
// host:port. Production uses the pod's IP (PodIPAddresser); tests point pods at servers on
// loopback.
type PodAddresser interface {
	PodAddress(pod *corev1.Pod, port int32) (string, error)
}

// PodIPAddresser reaches a pod at its IP (status.podIP) and the engine port. The operator
// therefore needs network access to the engine pods' port, which a NetworkPolicy that
// admits only the Service's clients would deny.
type PodIPAddresser struct{}

// PodAddress returns podIP:port, bracketing an IPv6 address. It fails when the pod has no
// IP yet.
func (PodIPAddresser) PodAddress(pod *corev1.Pod, port int32) (string, error) {
	if pod.Status.PodIP == "" {
		return "", fmt.Errorf("pod %s has no IP yet", pod.Name)
	}
	return net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(port))), nil
}

// HTTPMetrics scrapes GET http://ADDRESS/metrics in the Prometheus text format, ADDRESS
// coming from Addresser.
type HTTPMetrics struct {
	// Addresser maps a pod to host:port; nil means PodIPAddresser.
	Addresser PodAddresser
	// Client sends the requests; nil means a client with Timeout and no proxy.
	Client *http.Client
	// Timeout bounds one scrape; 0 means DefaultScrapeTimeout.
	Timeout time.Duration
}

// DefaultScrapeTimeout bounds one scrape of an engine pod.
const DefaultScrapeTimeout = 2 * time.Second

var defaultScrapeClient = &http.Client{
	Transport: &http.Transport{
		// Engine pods are reached directly, never through an HTTP proxy from the
		// operator's environment.
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: DefaultScrapeTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     90 * time.Second,
	},
}

// Scrape implements MetricsSource.
func (h *HTTPMetrics) Scrape(ctx context.Context, pod *corev1.Pod, port int32) (EngineMetrics, error) {
	addresser := h.Addresser
	if addresser == nil {
		addresser = PodIPAddresser{}
	}
	addr, err := addresser.PodAddress(pod, port)
	if err != nil {
		return EngineMetrics{}, err
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = DefaultScrapeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return EngineMetrics{}, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	c := h.Client
	if c == nil {
		c = defaultScrapeClient
	}
	res, err := c.Do(req)
	if err != nil {
		return EngineMetrics{}, fmt.Errorf("scraping pod %s: %w", pod.Name, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, enginemetrics.MaxBytes))
		return EngineMetrics{}, fmt.Errorf("scraping pod %s: GET /metrics answered %s", pod.Name, res.Status)
	}
	m, err := parseEngineMetrics(io.LimitReader(res.Body, enginemetrics.MaxBytes))
	if err != nil {
		return EngineMetrics{}, fmt.Errorf("scraping pod %s: %w", pod.Name, err)
	}
	return m, nil
}
