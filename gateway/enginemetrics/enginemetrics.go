// Package enginemetrics reads an inference engine's Prometheus /metrics: the vLLM-named load
// gauges and the generated-token counter that `moe serve` and vLLM both export. The
// operator's autoscaler and `moe gateway` read engines through it, over HTTP only: it
// imports nothing of the engine.
package enginemetrics

import (
	"errors"
	"fmt"
	"io"
	"math"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The metric names: vLLM's, as `moe serve` exports them (docs/metrics.md). They are an API
// shared with users' dashboards and KEDA rules; a test holds them equal to engine/server's
// constants.
const (
	RequestsRunning  = "vllm:num_requests_running"
	RequestsWaiting  = "vllm:num_requests_waiting"
	KVCacheUsage     = "vllm:kv_cache_usage_perc"
	GenerationTokens = "vllm:generation_tokens_total"
	// PromptTokens is read when present (both engines export it); a request that
	// generated nothing still moves it.
	PromptTokens = "vllm:prompt_tokens_total"
	// KVCacheUsageV0 is the KV-cache gauge's name before vLLM's V1 engine (0.8 and
	// earlier), read when the V1 name is absent.
	KVCacheUsageV0 = "vllm:gpu_cache_usage_perc"
	// The moe engine's device metrics, read when present: absent on the CPU and from vLLM.
	DeviceInfo         = "moe_engine_device_info"
	DeviceMemoryUsed   = "moe_engine_device_memory_used_bytes"
	DeviceMemoryBudget = "moe_engine_device_memory_budget_bytes"
)

// MaxBytes bounds one /metrics response. An engine's is a few kilobytes; anything much
// larger is not an engine.
const MaxBytes = 4 << 20

// ErrMissing marks an exposition that lacks one of the metrics, for example from an engine
// too old to export it.
var ErrMissing = errors.New("metric missing")

// Reading is one reading of an engine's /metrics, each value summed over the series of its
// name (one engine serves one model; vLLM's V1 engine adds an engine label).
type Reading struct {
	// Running and Waiting are vllm:num_requests_running and vllm:num_requests_waiting.
	Running, Waiting float64
	// KVCacheUsage is vllm:kv_cache_usage_perc, a fraction from 0 to 1.
	KVCacheUsage float64
	// GenerationTokens is the counter vllm:generation_tokens_total.
	GenerationTokens float64
	// PromptTokens is the counter vllm:prompt_tokens_total, 0 when absent.
	PromptTokens float64
	// Device is the device label of moe_engine_device_info, "" when absent (the engine
	// computes on the CPU, or is not moe); DeviceMemoryUsed and DeviceMemoryBudget are
	// its memory gauges in bytes.
	Device                               string
	DeviceMemoryUsed, DeviceMemoryBudget float64
}

// Parse reads a Prometheus text exposition. Each metric of Reading must be present, with
// at least one series; a negative, NaN or infinite value is an error.
func Parse(r io.Reader) (Reading, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return Reading{}, fmt.Errorf("parsing /metrics: %w", err)
	}
	if _, ok := families[KVCacheUsage]; !ok {
		families[KVCacheUsage] = families[KVCacheUsageV0]
	}
	var m Reading
	for _, f := range []struct {
		name string
		dst  *float64
	}{
		{RequestsRunning, &m.Running},
		{RequestsWaiting, &m.Waiting},
		{KVCacheUsage, &m.KVCacheUsage},
		{GenerationTokens, &m.GenerationTokens},
	} {
		v, err := sumFamily(families[f.name])
		if err != nil {
			return Reading{}, fmt.Errorf("%s: %w", f.name, err)
		}
		*f.dst = v
	}
	if f := families[PromptTokens]; f != nil {
		v, err := sumFamily(f)
		if err != nil {
			return Reading{}, fmt.Errorf("%s: %w", PromptTokens, err)
		}
		m.PromptTokens = v
	}
	if f := families[DeviceInfo]; f != nil && len(f.GetMetric()) > 0 {
		for _, l := range f.GetMetric()[0].GetLabel() {
			if l.GetName() == "device" {
				m.Device = l.GetValue()
			}
		}
		for _, g := range []struct {
			name string
			dst  *float64
		}{{DeviceMemoryUsed, &m.DeviceMemoryUsed}, {DeviceMemoryBudget, &m.DeviceMemoryBudget}} {
			if f := families[g.name]; f != nil {
				v, err := sumFamily(f)
				if err != nil {
					return Reading{}, fmt.Errorf("%s: %w", g.name, err)
				}
				*g.dst = v
			}
		}
	}
	return m, nil
}

// sumFamily adds up a gauge, counter or untyped family's samples.
func sumFamily(f *dto.MetricFamily) (float64, error) {
	if f == nil || len(f.GetMetric()) == 0 {
		return 0, ErrMissing
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
