package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/scheduler"
)

// Metric names. They are vLLM's, because KEDA rules, prometheus-adapter
// configurations, the Gateway API inference extension and the operator's
// autoscaler read them: renaming one is an API change (docs/metrics.md).
const (
	MetricRequestsRunning   = "vllm:num_requests_running"
	MetricRequestsWaiting   = "vllm:num_requests_waiting"
	MetricKVCacheUsage      = "vllm:kv_cache_usage_perc"
	MetricPromptTokens      = "vllm:prompt_tokens_total"
	MetricGenerationTokens  = "vllm:generation_tokens_total"
	MetricRequestSuccess    = "vllm:request_success_total"
	MetricTimeToFirstToken  = "vllm:time_to_first_token_seconds"
	MetricInterTokenLatency = "vllm:inter_token_latency_seconds"
	MetricE2ELatency        = "vllm:e2e_request_latency_seconds"
	MetricQueueTime         = "vllm:request_queue_time_seconds"
	MetricPreemptions       = "vllm:num_preemptions_total"
	MetricPrefixQueries     = "vllm:prefix_cache_queries_total"
	MetricPrefixHits        = "vllm:prefix_cache_hits_total"

	// The engine's own, present only when the model runs on a device.
	MetricDeviceInfo         = "moe_engine_device_info"
	MetricDeviceMemoryUsed   = "moe_engine_device_memory_used_bytes"
	MetricDeviceMemoryBudget = "moe_engine_device_memory_budget_bytes"
)

// deviceCollector exports the accelerator the model runs on: its name as
// an info metric's label, and its memory.
type deviceCollector struct {
	device             func() (string, model.DeviceMemory, bool)
	info, used, budget *prometheus.Desc
}

func newDeviceCollector(labels prometheus.Labels, device func() (string, model.DeviceMemory, bool)) *deviceCollector {
	return &deviceCollector{
		device: device,
		info:   prometheus.NewDesc(MetricDeviceInfo, "The device the model runs on (1), by name; absent on the CPU.", []string{"device"}, labels),
		used:   prometheus.NewDesc(MetricDeviceMemoryUsed, "Device memory the engine holds: weights, working memory and the KV cache.", nil, labels),
		budget: prometheus.NewDesc(MetricDeviceMemoryBudget, "Device memory the engine may allocate (the driver's budget, or a limit).", nil, labels),
	}
}

func (c *deviceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.info
	ch <- c.used
	ch <- c.budget
}

func (c *deviceCollector) Collect(ch chan<- prometheus.Metric) {
	name, mem, ok := c.device()
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, name)
	ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(mem.Used))
	ch <- prometheus.MustNewConstMetric(c.budget, prometheus.GaugeValue, float64(mem.Budget))
}

// metrics holds the server's Prometheus registry. The gauges and token
// counters read the scheduler's Stats at scrape time; the histograms and
// the per-reason counter are fed by the scheduler as its Observer.
type metrics struct {
	reg                *prometheus.Registry
	success            *prometheus.CounterVec
	byReason           map[scheduler.FinishReason]prometheus.Counter
	ttft, itl, e2e, qt prometheus.Histogram
}

func newMetrics(modelName string, stats func() (scheduler.Stats, bool), device func() (string, model.DeviceMemory, bool)) *metrics {
	labels := prometheus.Labels{"model_name": modelName}
	m := &metrics{reg: prometheus.NewRegistry()}
	gauge := func(name, help string, v func(scheduler.Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 {
			st, ok := stats()
			if !ok {
				return 0
			}
			return v(st)
		})
	}
	counter := func(name, help string, v func(scheduler.Stats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 {
			st, ok := stats()
			if !ok {
				return 0
			}
			return v(st)
		})
	}
	histogram := func(name, help string, buckets []float64) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, ConstLabels: labels, Buckets: buckets})
	}
	m.success = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricRequestSuccess, Help: "Finished requests, by why they finished (stop, length, abort).", ConstLabels: labels,
	}, []string{"finished_reason"})
	m.byReason = map[scheduler.FinishReason]prometheus.Counter{}
	for _, r := range []scheduler.FinishReason{scheduler.FinishStop, scheduler.FinishLength, scheduler.FinishAbort} {
		m.byReason[r] = m.success.WithLabelValues(string(r))
	}
	latency := []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560}
	perToken := []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}
	request := []float64{0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680}
	m.ttft = histogram(MetricTimeToFirstToken, "Time from a request's arrival to its first generated token, in seconds.", latency)
	m.itl = histogram(MetricInterTokenLatency, "Time between consecutive generated tokens of a request, in seconds.", perToken)
	m.e2e = histogram(MetricE2ELatency, "Time from a request's arrival to its end, in seconds.", request)
	m.qt = histogram(MetricQueueTime, "Time a request waited in the queue before it first ran, in seconds.", request)
	m.reg.MustRegister(
		gauge(MetricRequestsRunning, "Requests in the running batch.", func(s scheduler.Stats) float64 { return float64(s.Running) }),
		gauge(MetricRequestsWaiting, "Requests waiting to run (queued or preempted).", func(s scheduler.Stats) float64 { return float64(s.Waiting) }),
		gauge(MetricKVCacheUsage, "Fraction of KV-cache blocks in use; 1 means full.", func(s scheduler.Stats) float64 { return s.KVUsage() }),
		counter(MetricPromptTokens, "Prompt tokens processed.", func(s scheduler.Stats) float64 { return float64(s.PromptTokens) }),
		counter(MetricGenerationTokens, "Tokens generated.", func(s scheduler.Stats) float64 { return float64(s.GenerationTokens) }),
		counter(MetricPreemptions, "Sequences preempted (their KV blocks released, to be recomputed).", func(s scheduler.Stats) float64 { return float64(s.Preemptions) }),
		counter(MetricPrefixQueries, "Prompt tokens looked up in the prefix cache.", func(s scheduler.Stats) float64 { return float64(s.PrefixCacheQueries) }),
		counter(MetricPrefixHits, "Prompt tokens found in the prefix cache, whose keys and values were not computed again.", func(s scheduler.Stats) float64 { return float64(s.PrefixCacheHits) }),
		m.success, m.ttft, m.itl, m.e2e, m.qt,
		newDeviceCollector(labels, device),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// The scheduler.Observer methods.

func (m *metrics) Scheduled(queued time.Duration) { m.qt.Observe(queued.Seconds()) }
func (m *metrics) FirstToken(ttft time.Duration)  { m.ttft.Observe(ttft.Seconds()) }
func (m *metrics) NextToken(itl time.Duration)    { m.itl.Observe(itl.Seconds()) }
func (m *metrics) Finished(r scheduler.FinishReason, e2e time.Duration) {
	if c, ok := m.byReason[r]; ok {
		c.Inc()
	} else {
		m.success.WithLabelValues(string(r)).Inc()
	}
	m.e2e.Observe(e2e.Seconds())
}
