package planner

import (
	"math"
	"testing"
)

// The vLLM profile's published rows. No vLLM release publishes a Mixtral table;
// these are the runs vLLM's maintainers recorded in the pull requests that tuned
// its fused-MoE kernel, quoted exactly. Precision is the model's default dtype
// (BF16).

// vllmBatchRows are Mixtral-8x22B on A100-80GB, benchmarks/benchmark_latency.py
// ("Avg latency" of one batch; its defaults: 32 prompt and 128 output tokens),
// with the tuned config, from vllm-project/vllm PR #4002 "[Kernel] Fused MoE
// Config for Mixtral 8x22" (2024-04-11).
var vllmBatchRows = []struct {
	name    string
	tp      int
	batch   int
	latency float64 // seconds for the whole batch
	heldOut bool    // not used to fit the factors
}{
	{"A100 TP4 batch 8", 4, 8, 5.4268179705676935, false},
	{"A100 TP4 batch 16", 4, 16, 6.107941208345195, false},
	{"A100 TP4 batch 32", 4, 32, 6.893939550562451, true},
	{"A100 TP8 batch 8", 8, 8, 3.7083894722008455, false},
	{"A100 TP8 batch 16", 8, 16, 4.047313968433688, false},
}

// vllmLoadRows are Mixtral-8x7B on 2×H100 (TP2) under Poisson arrivals of
// 1000-token prompts with 50 output tokens, mean inter-token latency, from
// vllm-project/vllm PR #2979 "Optimized fused MoE Kernel, take 2" (2024-02-22;
// the lengths are stated in PR #2913, which it replaced).
var vllmLoadRows = []struct {
	name string
	qps  float64
	itl  float64 // seconds
}{
	{"2×H100 TP2 at 1 request/s", 1, 0.0116},
	{"2×H100 TP2 at 2 requests/s", 2, 0.0126},
	{"2×H100 TP2 at 4 requests/s", 4, 0.0236},
	{"2×H100 TP2 at 6 requests/s", 6, 0.0329},
}

func TestPublishedVLLMBatchLatency(t *testing.T) {
	req := Request{Model: mustModel(t, "mixtral-8x22b"), Accelerator: mustAcc(t, "a100-80gb"), Runtime: RuntimeVLLM,
		Targets: Targets{PromptTokens: 32, OutputTokens: 128, Context: 160}}
	for _, row := range vllmBatchRows {
		t.Run(row.name, func(t *testing.T) {
			p, err := Predict(req, BF16, row.tp, 1, row.batch)
			if err != nil {
				t.Fatal(err)
			}
			// One batched prefill, then 128 decode steps of the whole batch.
			got := float64(row.batch)*p.PrefillSeconds + 128*p.DecodeStepSeconds
			checkPublished(t, got, row.latency, row.heldOut)
		})
	}
}

func TestPublishedVLLMLoadLatency(t *testing.T) {
	req := Request{Model: mustModel(t, "mixtral-8x7b"), Accelerator: mustAcc(t, "h100-80gb"), Runtime: RuntimeVLLM,
		Targets: Targets{PromptTokens: 1000, OutputTokens: 50, Context: 1050}}
	for _, row := range vllmLoadRows {
		t.Run(row.name, func(t *testing.T) {
			// In steady state the replica makes qps × 50 tokens per second: the
			// batch in flight is the smallest whose throughput reaches that.
			var p Prediction
			for b := 1; b <= DefaultMaxBatchSize; b++ {
				var err error
				if p, err = Predict(req, BF16, 2, 1, b); err != nil {
					t.Fatal(err)
				}
				if p.OutputTokensPerSecond >= 50*row.qps {
					break
				}
			}
			checkPublished(t, p.ITLSeconds, row.itl, false)
		})
	}
}

func checkPublished(t *testing.T, got, want float64, heldOut bool) {
	t.Helper()
	e := relativeError(got, want)
	kind := "fitted"
	if heldOut {
		kind = "held out"
	}
	t.Logf("predicted %.4g, published %.4g, error %+.1f%% (%s)", got, want, 100*e, kind)
	if math.Abs(e) > 0.35 {
		t.Errorf("predicted %.4g, published %.4g: error %+.1f%% exceeds ±35%%", got, want, 100*e)
	}
}
