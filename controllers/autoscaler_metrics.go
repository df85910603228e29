package controllers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
)

// The engine metrics the autoscaler reads: vLLM's names, as `moe serve` exports them
// (docs/metrics.md). They are an API shared with users' dashboards and KEDA rules; a test
// holds them equal to engine/server's constants, which this package does not import.
const (
	metricRequestsRunning = "vllm:num_requests_running"
	metricRequestsWaiting = "vllm:num_requests_waiting"
	metricKVCacheUsage    = "vllm:kv_cache_usage_perc"
	// metricKVCacheUsageV0 is the KV-cache gauge's name before vLLM's V1 engine (0.8 and
	// earlier), read when the V1 name is absent.
	metricKVCacheUsageV0   = "vllm:gpu_cache_usage_perc"
	metricGenerationTokens = "vllm:generation_tokens_total"
)

// maxMetricsBytes bounds one /metrics response. An engine's is a few kilobytes; anything
// much larger is not an engine.
const maxMetricsBytes = 4 << 20

// errMetricMissing marks a /metrics response that lacks one of the metrics the autoscaler
// needs, for example from an engine too old to export it.
var errMetricMissing = errors.New("metric missing")

// EngineMetrics is one reading of an engine pod's /metrics: the gauges and the generated-token
// counter, each summed over the series of its name (one engine serves one model).
type EngineMetrics struct {
	// Running and Waiting are vllm:num_requests_running and vllm:num_requests_waiting.
	Running, Waiting float64
	// KVCacheUsage is vllm:kv_cache_usage_perc, a fraction from 0 to 1.
	KVCacheUsage float64
	// GenerationTokens is the counter vllm:generation_tokens_total.
	GenerationTokens float64
}

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
		_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, maxMetricsBytes))
		return EngineMetrics{}, fmt.Errorf("scraping pod %s: GET /metrics answered %s", pod.Name, res.Status)
	}
	m, err := parseEngineMetrics(io.LimitReader(res.Body, maxMetricsBytes))
	if err != nil {
		return EngineMetrics{}, fmt.Errorf("scraping pod %s: %w", pod.Name, err)
	}
	return m, nil
}

// parseEngineMetrics reads the metrics the autoscaler uses from a Prometheus text
// exposition. Each must be present (with at least one series); values are summed over a
// name's series.
func parseEngineMetrics(r io.Reader) (EngineMetrics, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return EngineMetrics{}, fmt.Errorf("parsing /metrics: %w", err)
	}
	if _, ok := families[metricKVCacheUsage]; !ok {
		families[metricKVCacheUsage] = families[metricKVCacheUsageV0]
	}
	var m EngineMetrics
	for _, f := range []struct {
		name string
		dst  *float64
	}{
		{metricRequestsRunning, &m.Running},
		{metricRequestsWaiting, &m.Waiting},
		{metricKVCacheUsage, &m.KVCacheUsage},
		{metricGenerationTokens, &m.GenerationTokens},
	} {
		v, err := sumFamily(families[f.name])
		if err != nil {
			return EngineMetrics{}, fmt.Errorf("%s: %w", f.name, err)
		}
		*f.dst = v
	}
	return m, nil
}

// sumFamily adds up a gauge, counter or untyped family's samples.
func sumFamily(f *dto.MetricFamily) (float64, error) {
	if f == nil || len(f.GetMetric()) == 0 {
		return 0, errMetricMissing
	}
	var sum float64
	for _, m := range f.GetMetric() {
		var v float64
		switch {
		case m.GetGauge() != nil:
			v = m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			v = m.GetCounter().GetValue()
		case m.GetUntyped() != nil:
			v = m.GetUntyped().GetValue()
		default:
			return 0, fmt.Errorf("type %s is not a gauge or counter", f.GetType())
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return 0, fmt.Errorf("value %v is not a load", v)
		}
		sum += v
	}
	return sum, nil
}
