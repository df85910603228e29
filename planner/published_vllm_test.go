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

// vllmBatchLatency predicts a batch row's latency: one batched prefill, then 128
// decode steps of the whole batch. cal, when set, replaces the profile's factors.
func vllmBatchLatency(t testing.TB, tp, batch int, cal *Calibration) float64 {
	t.Helper()
	req := Request{Model: mustModel(t, "mixtral-8x22b"), Accelerator: mustAcc(t, "a100-80gb"), Runtime: RuntimeVLLM,
		Targets: Targets{PromptTokens: 32, OutputTokens: 128, Context: 160}, Calibration: cal}
	p, err := Predict(req, BF16, tp, 1, batch)
	if err != nil {
		t.Fatal(err)
	}
	return float64(batch)*p.PrefillSeconds + 128*p.DecodeStepSeconds
}

// vllmLoadITL predicts a load row's inter-token latency. In steady state the replica
// makes qps × 50 tokens per second: the batch in flight is the smallest whose
// throughput reaches that.
func vllmLoadITL(t testing.TB, qps float64, cal *Calibration) float64 {
	t.Helper()
	req := Request{Model: mustModel(t, "mixtral-8x7b"), Accelerator: mustAcc(t, "h100-80gb"), Runtime: RuntimeVLLM,
		Targets: Targets{PromptTokens: 1000, OutputTokens: 50, Context: 1050}, Calibration: cal}
	var p Prediction
	for b := 1; b <= DefaultMaxBatchSize; b++ {
		var err error
		if p, err = Predict(req, BF16, 2, 1, b); err != nil {
			t.Fatal(err)
		}
		if p.OutputTokensPerSecond >= 50*qps {
			break
		}
	}
	return p.ITLSeconds
}

func TestPublishedVLLMBatchLatency(t *testing.T) {
	for _, row := range vllmBatchRows {
		t.Run(row.name, func(t *testing.T) {
			checkPublished(t, vllmBatchLatency(t, row.tp, row.batch, nil), row.latency, row.heldOut)
		})
	}
}

func TestPublishedVLLMLoadLatency(t *testing.T) {
	for _, row := range vllmLoadRows {
		t.Run(row.name, func(t *testing.T) {
			checkPublished(t, vllmLoadITL(t, row.qps, nil), row.itl, false)
		})
	}
}

// TestFitVLLMEfficiency refits the vllm profile's BF16 factors: the 0.01 grid point with
// the smallest worst relative error over the fitted rows (the held-out row excluded).
func TestFitVLLMEfficiency(t *testing.T) {
	if !*refit {
		t.Skip("run with -fit to refit the efficiency factors")
	}
	worstAt := func(eff Efficiency) float64 {
		cal := &Calibration{Version: CalibrationVersion, Efficiency: map[Quantization]Efficiency{BF16: eff}}
		worst := 0.0
		for _, r := range vllmBatchRows {
			if !r.heldOut {
				worst = math.Max(worst, math.Abs(relativeError(vllmBatchLatency(t, r.tp, r.batch, cal), r.latency)))
			}
		}
		for _, r := range vllmLoadRows {
			worst = math.Max(worst, math.Abs(relativeError(vllmLoadITL(t, r.qps, cal), r.itl)))
		}
		return worst
	}
	best, bestEff := math.Inf(1), Efficiency{}
	for eb := 40; eb <= 90; eb++ {
		for ec := 10; ec <= 80; ec++ {
			eff := Efficiency{Bandwidth: float64(eb) / 100, Compute: float64(ec) / 100}
			if w := worstAt(eff); w < best {
				best, bestEff = w, eff
			}
		}
	}
	t.Logf("BF16: bandwidth %.2f, compute %.2f, worst error %.1f%%", bestEff.Bandwidth, bestEff.Compute, 100*best)
	if def := vllmEfficiency[BF16]; math.Abs(def.Bandwidth-bestEff.Bandwidth) > 0.011 || math.Abs(def.Compute-bestEff.Compute) > 0.011 {
		t.Errorf("vllm BF16 default %+v differs from the fit %+v: update vllmEfficiency and docs/planner.md", def, bestEff)
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
