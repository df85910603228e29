package controllers

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	"github.com/moe-operator/moe-operator/engine/server"
	"github.com/moe-operator/moe-operator/gateway/enginemetrics"
)

// The autoscaler reads the engine's metrics by name without importing the engine; the
// names must stay the engine's.
func TestAutoscalerMetricNamesAreTheEngines(t *testing.T) {
	g := NewWithT(t)
	g.Expect(enginemetrics.RequestsRunning).To(Equal(server.MetricRequestsRunning))
	g.Expect(enginemetrics.RequestsWaiting).To(Equal(server.MetricRequestsWaiting))
	g.Expect(enginemetrics.KVCacheUsage).To(Equal(server.MetricKVCacheUsage))
	g.Expect(enginemetrics.GenerationTokens).To(Equal(server.MetricGenerationTokens))
	g.Expect(enginemetrics.PromptTokens).To(Equal(server.MetricPromptTokens))
	g.Expect(enginemetrics.DeviceInfo).To(Equal(server.MetricDeviceInfo))
	g.Expect(enginemetrics.DeviceMemoryUsed).To(Equal(server.MetricDeviceMemoryUsed))
	g.Expect(enginemetrics.DeviceMemoryBudget).To(Equal(server.MetricDeviceMemoryBudget))
}

const engineExposition = `# HELP vllm:num_requests_running Requests in the running batch.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="tiny"} 3
# HELP vllm:num_requests_waiting Requests waiting to run (queued or preempted).
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="tiny"} 5
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="tiny"} 0.25
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{model_name="tiny"} 1234
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{model_name="tiny",le="0.3"} 1
vllm:e2e_request_latency_seconds_bucket{model_name="tiny",le="+Inf"} 2
vllm:e2e_request_latency_seconds_sum{model_name="tiny"} 1.5
vllm:e2e_request_latency_seconds_count{model_name="tiny"} 2
# TYPE go_goroutines gauge
go_goroutines 12
`

func TestParseEngineMetrics(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    EngineMetrics
		wantErr string
	}{
		{name: "an engine's exposition", text: engineExposition,
			want: EngineMetrics{Running: 3, Waiting: 5, KVCacheUsage: 0.25, GenerationTokens: 1234}},
		{name: "series of one name are summed",
			text: engineExposition + "vllm:num_requests_waiting{model_name=\"other\"} 2\n",
			want: EngineMetrics{Running: 3, Waiting: 7, KVCacheUsage: 0.25, GenerationTokens: 1234}},
		{name: "the prompt-token counter is read when present",
			text: engineExposition + "# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{model_name=\"tiny\"} 99\n",
			want: EngineMetrics{Running: 3, Waiting: 5, KVCacheUsage: 0.25, GenerationTokens: 1234, PromptTokens: 99}},
		{name: "the device and its memory are read when present",
			text: engineExposition + `# TYPE moe_engine_device_info gauge
moe_engine_device_info{device="vulkan:0 NVIDIA H100 80GB HBM3",model_name="tiny"} 1
# TYPE moe_engine_device_memory_used_bytes gauge
moe_engine_device_memory_used_bytes{model_name="tiny"} 5e+10
# TYPE moe_engine_device_memory_budget_bytes gauge
moe_engine_device_memory_budget_bytes{model_name="tiny"} 8e+10
`,
			want: EngineMetrics{Running: 3, Waiting: 5, KVCacheUsage: 0.25, GenerationTokens: 1234,
				Device: "vulkan:0 NVIDIA H100 80GB HBM3", DeviceMemoryUsed: 5e10, DeviceMemoryBudget: 8e10}},
		{name: "a missing metric is an error",
			text:    strings.ReplaceAll(engineExposition, "vllm:num_requests_waiting", "vllm:other"),
			wantErr: "vllm:num_requests_waiting: metric missing"},
		{name: "a negative load is an error",
			text:    strings.Replace(engineExposition, "} 3", "} -3", 1),
			wantErr: "is not a load"},
		{name: "a NaN is an error",
			text:    strings.Replace(engineExposition, "} 0.25", "} NaN", 1),
			wantErr: "is not a load"},
		{name: "garbage is an error", text: "<html>", wantErr: "parsing /metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			got, err := parseEngineMetrics(strings.NewReader(tt.text))
			if tt.wantErr != "" {
				g.Expect(err).To(MatchError(ContainSubstring(tt.wantErr)))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tt.want))
		})
	}
}

func FuzzParseEngineMetrics(f *testing.F) {
	f.Add(engineExposition)
	f.Add("vllm:num_requests_waiting 1e309\n")
	f.Add("# TYPE x summary\nx{quantile=\"0.5\"} 1\n")
	f.Fuzz(func(t *testing.T, text string) {
		m, err := parseEngineMetrics(strings.NewReader(text))
		if err == nil && (m.Running < 0 || m.Waiting < 0 || m.KVCacheUsage < 0 || m.GenerationTokens < 0) {
			t.Fatalf("accepted a negative load: %+v", m)
		}
	})
}

func TestPodIPAddresser(t *testing.T) {
	g := NewWithT(t)
	pod := func(ip string) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{PodIP: ip}}
	}
	addr, err := PodIPAddresser{}.PodAddress(pod("10.1.2.3"), 8000)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(addr).To(Equal("10.1.2.3:8000"))
	addr, err = PodIPAddresser{}.PodAddress(pod("fd00::7"), 8000)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(addr).To(Equal("[fd00::7]:8000"))
	_, err = PodIPAddresser{}.PodAddress(pod(""), 8000)
	g.Expect(err).To(MatchError(ContainSubstring("no IP yet")))
}

// loopbackAddresser sends every scrape to one address.
type loopbackAddresser string

func (a loopbackAddresser) PodAddress(*corev1.Pod, int32) (string, error) { return string(a), nil }

// TestVLLMExposition scrapes vLLM's own /metrics text (testdata/vllm-*-metrics.txt say where
// each line comes from) over HTTP, as the autoscaler reads a vllm runtime's leader.
func TestVLLMExposition(t *testing.T) {
	for _, tt := range []struct {
		file string
		want EngineMetrics
	}{
		{"vllm-v1-metrics.txt", EngineMetrics{Running: 8, Waiting: 3, KVCacheUsage: 0.0798685, GenerationTokens: 27453, PromptTokens: 140000}},
		// Before V1 the KV-cache gauge had another name.
		{"vllm-v0-metrics.txt", EngineMetrics{Running: 12, Waiting: 0, KVCacheUsage: 0.42, GenerationTokens: 9120}},
	} {
		t.Run(tt.file, func(t *testing.T) {
			g := NewWithT(t)
			text, err := os.ReadFile(filepath.Join("testdata", tt.file))
			g.Expect(err).NotTo(HaveOccurred())
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/metrics" {
					http.NotFound(w, r)
					return
				}
				// prometheus_client's CONTENT_TYPE_LATEST, which vLLM answers with.
				w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
				_, _ = w.Write(text)
			}))
			defer srv.Close()
			src := &HTTPMetrics{Addresser: loopbackAddresser(strings.TrimPrefix(srv.URL, "http://"))}
			got, err := src.Scrape(context.Background(), &corev1.Pod{}, 8000)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(got).To(Equal(tt.want))
		})
	}
}
