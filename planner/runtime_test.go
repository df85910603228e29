package planner

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestVLLMSpreadsAReplicaOverNodesOnlyWhenOneNodeCannotHoldIt(t *testing.T) {
	// Mixtral-8x22B in BF16 is 281 GB of weights: more than 8×24 GB L4s hold.
	req := Request{Model: mustModel(t, "mixtral-8x22b"), Accelerator: mustAcc(t, "l4"),
		Overrides: Overrides{Quantization: BF16}, Runtime: RuntimeVLLM}
	res, err := Solve(req)
	if err != nil {
		t.Fatal(err)
	}
	p := res.Plan
	if p.TensorParallelism != 8 || p.PipelineParallelism != 2 || p.NodesPerReplica != 2 || p.GPUsPerReplica != 16 {
		t.Fatalf("plan = %s on %d nodes, %d GPUs per replica; want BF16 TP8 PP2 on 2 nodes, 16 GPUs", p.Name(), p.NodesPerReplica, p.GPUsPerReplica)
	}
	if p.MemoryPerGPUBytes > mustAcc(t, "l4").UsableMemoryBytes() {
		t.Errorf("plan needs %d bytes per GPU, more than an L4's usable memory", p.MemoryPerGPUBytes)
	}
	if p.Name() != "BF16 TP8 PP2" {
		t.Errorf("Name() = %q", p.Name())
	}

	// The same model fits one node of H100s: no replica spans nodes then.
	req.Accelerator = mustAcc(t, "h100-80gb")
	res, err = Solve(req)
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Plan; p.NodesPerReplica != 1 || p.PipelineParallelism != 1 {
		t.Errorf("on h100-80gb the plan is %s on %d nodes; want one node", p.Name(), p.NodesPerReplica)
	}
}

// The moe engine's device group (engine/gpu.Group) holds whole experts per
// GPU and replicates attention and the KV cache, which it keeps in float32;
// its reduction goes through host memory.
func TestTheMoERuntimeModelsItsDeviceGroup(t *testing.T) {
	req := request(t, "mixtral-8x7b", "h100-80gb", Targets{}, Overrides{}).withDefaults()
	eff := Efficiency{Bandwidth: 0.5, Compute: 0.5}
	moe := moeRuntime(t)
	one := newCandidate(req, moe, Int8, 1, 1, eff)
	two := newCandidate(req, moe, Int8, 2, 1, eff)
	megatron := newCandidate(req, referenceRuntime, Int8, 2, 1, eff)
	if w := two.weightBytesPerGPU(); w <= megatron.weightBytesPerGPU() || w >= one.weightBytesPerGPU() {
		t.Errorf("TP2 holds %.1f GB per GPU; want more than a head-and-expert split's %.1f GB (attention is replicated) and less than one GPU's %.1f GB",
			w/1e9, megatron.weightBytesPerGPU()/1e9, one.weightBytesPerGPU()/1e9)
	}
	if kv, ref := two.kvBytesPerTokenPerGPU(), newCandidate(req, referenceRuntime, Int8, 1, 1, eff).kvBytesPerTokenPerGPU(); kv != one.kvBytesPerTokenPerGPU() || kv != 2*ref {
		t.Errorf("KV per token per GPU: TP2 %.0f, TP1 %.0f, fp16 TP1 %.0f; want the whole float32 cache on every GPU", kv, one.kvBytesPerTokenPerGPU(), ref)
	}
	m := req.Model
	want := float64(m.Layers) * (moeGPULayout.HostLatency + 2*float64(m.HiddenSize)*4/moeGPULayout.HostBandwidth)
	if got := two.allReduceSeconds(1); math.Abs(got/want-1) > 1e-9 {
		t.Errorf("a token's reductions take %.3g s, want %.3g s (one host round trip per layer)", got, want)
	}
	if one.allReduceSeconds(1) != 0 {
		t.Error("one GPU reduces nothing")
	}
	// The cpu accelerator is not a GPU: the engine's CPU shards split heads.
	cpu := newCandidate(request(t, "mixtral-8x7b", "cpu", Targets{}, Overrides{}).withDefaults(), moe, Int8, 2, 1, eff)
	if cpu.layout != nil {
		t.Error("the GPU layout applied to the cpu accelerator")
	}
}

func TestTheMoERuntimeSaysWhenOnlyMultiNodeWouldFit(t *testing.T) {
	req := Request{Model: mustModel(t, "mixtral-8x22b"), Accelerator: mustAcc(t, "l4"), Overrides: Overrides{Quantization: BF16}}
	res, err := Solve(req)
	if !errors.Is(err, ErrInfeasible) {
		t.Fatalf("err = %v, want ErrInfeasible", err)
	}
	for _, r := range res.Rejected {
		if r.PipelineParallelism != 1 {
			t.Errorf("the moe runtime tried %s", r)
		}
	}
	for _, want := range []string{"runs a replica on one node only", "vllm runtime"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestVLLMServesFullPrecisionWeightsAtBF16OrFP8(t *testing.T) {
	m, a := mustModel(t, "mixtral-8x7b"), mustAcc(t, "h100-80gb")
	res, err := Solve(Request{Model: m, Accelerator: a, Runtime: RuntimeVLLM})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append([]Plan{res.Plan}, res.Alternatives...) {
		if p.Quantization != BF16 && p.Quantization != FP8 {
			t.Errorf("vllm plan %s: vLLM does not quantize full-precision weights to %s", p.Name(), p.Quantization)
		}
	}
	_, err = Solve(Request{Model: m, Accelerator: a, Runtime: RuntimeVLLM, Overrides: Overrides{Quantization: Int4}})
	if !errors.Is(err, ErrInfeasible) || !strings.Contains(err.Error(), "quantized ahead of time") {
		t.Errorf("Int4 from full-precision weights on vllm: err = %v, want infeasible with the reason", err)
	}
	// An Int4 checkpoint (AWQ, GPTQ) is served at its own precision.
	res, err = Solve(Request{Model: m, Accelerator: a, Runtime: RuntimeVLLM, Overrides: Overrides{MaxPrecision: Int4}})
	if err != nil || res.Plan.Quantization != Int4 {
		t.Errorf("Int4 checkpoint on vllm: plan %s, err %v; want Int4", res.Plan.Name(), err)
	}
}

func TestRuntimeRequestsAreValidated(t *testing.T) {
	m := mustModel(t, "mixtral-8x7b")
	if _, err := Solve(Request{Model: m, Accelerator: mustAcc(t, "cpu"), Runtime: RuntimeVLLM}); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("vllm on cpu: err = %v, want ErrInvalidRequest", err)
	}
	if _, err := Solve(Request{Model: m, Accelerator: mustAcc(t, "h100-80gb"), Runtime: "tgi"}); !errors.Is(err, ErrInvalidRequest) || !strings.Contains(err.Error(), "moe") {
		t.Errorf("unknown runtime: err = %v, want ErrInvalidRequest listing the known ones", err)
	}
}

func TestPipelineStagesShareTheModelAndAddOnlyHops(t *testing.T) {
	// One decode cycle over pp stages streams every weight once per
	// micro-batch: with the hops left out, TP8 PP2 at batch 2b predicts the
	// ITL of TP8 at batch b, and holds half the weights per GPU.
	req := Request{Model: mustModel(t, "mixtral-8x22b"), Accelerator: mustAcc(t, "h100-80gb"), Runtime: RuntimeVLLM}
	one, err := Predict(req, BF16, 8, 1, 16)
	if err != nil {
		t.Fatal(err)
	}
	two, err := Predict(req, BF16, 8, 2, 32)
	if err != nil {
		t.Fatal(err)
	}
	if r := two.MemoryPerGPUBytes; float64(r) > 0.65*float64(one.MemoryPerGPUBytes) {
		t.Errorf("PP2 holds %d bytes per GPU, PP1 %d: want about half", r, one.MemoryPerGPUBytes)
	}
	if two.ITLSeconds < one.ITLSeconds || two.ITLSeconds > 1.1*one.ITLSeconds {
		t.Errorf("PP2 at batch 32 has ITL %.4f s, PP1 at 16 %.4f s: want the same plus the hops", two.ITLSeconds, one.ITLSeconds)
	}
	if two.OutputTokensPerSecond < 1.8*one.OutputTokensPerSecond {
		t.Errorf("PP2 at batch 32 makes %.0f tok/s, PP1 at 16 %.0f: want about twice", two.OutputTokensPerSecond, one.OutputTokensPerSecond)
	}
}

func mustModel(t testing.TB, name string) Model {
	t.Helper()
	m, err := ModelPreset(name)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustAcc(t testing.TB, name string) Accelerator {
	t.Helper()
	a, err := AcceleratorByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestTheMoERuntimeHasAnAssumedProfileOnEachGPU(t *testing.T) {
	moe, vllm := moeRuntime(t), mustRuntime(t, RuntimeVLLM)
	for _, name := range []string{"h100-80gb", "h200", "a100-80gb", "l4"} {
		t.Run(name, func(t *testing.T) {
			p, ok := moe.AcceleratorProfile(name)
			if !ok {
				t.Fatalf("moe has no profile for %s", name)
			}
			if p.Calibrated {
				t.Error("the profile says it is calibrated; no GPU run has measured it")
			}
			for _, want := range []string{"assumed; not calibrated on a device", "hack/gpu-check.sh", "hack/calibrate-gpu"} {
				if !strings.Contains(p.Source, want) {
					t.Errorf("source %q does not say %q", p.Source, want)
				}
			}
			if _, ok := p.Efficiency[FP8]; ok {
				t.Error("the profile has FP8 factors; the engine has no FP8 kernels")
			}
			a := mustAcc(t, name)
			for _, q := range []Quantization{BF16, Int8, Int4} {
				e, ok := p.Efficiency[q]
				if !ok || !e.valid() {
					t.Errorf("%s factors %+v are missing or outside (0, 1]", q, e)
				}
				if got := moe.efficiency(a, q); got != e {
					t.Errorf("moe plans %s with %+v, not its profile's %+v", q, got, e)
				}
				if e == vllm.efficiency(a, q) || e == DefaultEfficiency(a, q) {
					t.Errorf("%s factors %+v are vLLM's or the TensorRT-LLM defaults", q, e)
				}
				// No tensor cores: the compute factor is a fraction of
				// the FP32 ALUs' share of the tensor rate.
				if e.Compute >= 0.6*DefaultEfficiency(a, q).Compute {
					t.Errorf("%s compute factor %.3f is not well below the tensor-core default %.3f", q, e.Compute, DefaultEfficiency(a, q).Compute)
				}
			}
		})
	}
}

func TestTheH100ProfileFollowsFromTheFP32Rate(t *testing.T) {
	p, _ := moeRuntime(t).AcceleratorProfile("h100-80gb")
	// 0.6 × 67 TFLOPS FP32 / 989.4 TFLOPS BF16, and / 1,978.9 TOPS INT8.
	if got := p.Efficiency[BF16]; math.Abs(got.Compute-0.0406) > 0.001 || got.Bandwidth != 0.45 {
		t.Errorf("BF16 = %+v, want bandwidth 0.45, compute 0.041", got)
	}
	if got := p.Efficiency[Int8]; math.Abs(got.Compute-0.0203) > 0.001 {
		t.Errorf("Int8 = %+v, want compute 0.020", got)
	}
}

func TestTheMoERuntimeNeverPlansFP8(t *testing.T) {
	// A TTFT the assumed profile meets on one H100 (its prefill runs on FP32 ALUs).
	targets := issueTargets
	targets.TTFT = 2 * time.Second
	res, err := Solve(request(t, "mixtral-8x7b", "h100-80gb", targets, Overrides{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append([]Plan{res.Plan}, res.Alternatives...) {
		if p.Quantization == FP8 {
			t.Errorf("moe plan %s uses FP8", p.Name())
		}
	}
	fp8 := 0
	for _, r := range res.Rejected {
		if r.Quantization == FP8 {
			fp8++
			if !strings.Contains(r.Reason, "the moe engine has no FP8 kernels") {
				t.Errorf("FP8 rejected with %q", r)
			}
		}
	}
	if fp8 == 0 {
		t.Error("no FP8 candidate was rejected, so none was considered")
	}
	// Weights stored as FP8 are converted down, not served as FP8.
	stored, err := Solve(request(t, "mixtral-8x7b", "h100-80gb", targets, Overrides{MaxPrecision: FP8}))
	if err != nil {
		t.Fatal(err)
	}
	if q := stored.Plan.Quantization; q != Int8 && q != Int4 {
		t.Errorf("FP8-stored weights planned as %s, want Int8 or Int4", q)
	}
}

func TestAnFP8PinOnTheMoERuntimeIsAnInvalidRequest(t *testing.T) {
	req := request(t, "mixtral-8x7b", "h100-80gb", Targets{}, Overrides{Quantization: FP8})
	_, err := Solve(req)
	if !errors.Is(err, ErrInvalidRequest) {
		t.Fatalf("err = %v, want ErrInvalidRequest", err)
	}
	for _, want := range []string{"the moe engine has no FP8 kernels", "Int8", "same memory", "vllm runtime"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := Predict(req, FP8, 2, 1, 1); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("Predict at FP8 on moe: err = %v, want ErrInvalidRequest", err)
	}
	req.Runtime = RuntimeVLLM
	if res, err := Solve(req); err != nil || res.Plan.Quantization != FP8 {
		t.Errorf("FP8 pinned on vllm: plan %s, err %v; want FP8", res.Plan.Name(), err)
	}
}

func TestEfficiencyTakesTheAcceleratorThenTheProfileThenTheRuntime(t *testing.T) {
	own, profile, wide := Efficiency{0.9, 0.9}, Efficiency{0.5, 0.05}, Efficiency{0.7, 0.3}
	rt := Runtime{Name: "test", Profiles: map[string]Profile{"gpu-a": {Efficiency: map[Quantization]Efficiency{BF16: profile}}},
		Efficiency: map[Quantization]Efficiency{BF16: wide}}
	tests := []struct {
		name string
		acc  Accelerator
		q    Quantization
		want Efficiency
	}{
		{"an accelerator's own entry wins", Accelerator{Name: "gpu-a", Efficiency: map[Quantization]Efficiency{BF16: own}}, BF16, own},
		{"the runtime's profile for the accelerator is next", Accelerator{Name: "gpu-a"}, BF16, profile},
		{"another accelerator takes the runtime-wide factors", Accelerator{Name: "gpu-b"}, BF16, wide},
		{"a precision neither has takes the GPU default", Accelerator{Name: "gpu-a"}, Int8, defaultEfficiency[Int8]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rt.efficiency(tt.acc, tt.q); got != tt.want {
				t.Errorf("efficiency = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestRuntimeByNameReturnsACopy(t *testing.T) {
	rt := moeRuntime(t)
	rt.Profiles["h100-80gb"].Efficiency[BF16] = Efficiency{Bandwidth: 1, Compute: 1}
	rt.Kernels[0] = FP8
	again := moeRuntime(t)
	if p, _ := again.AcceleratorProfile("h100-80gb"); p.Efficiency[BF16].Bandwidth == 1 || again.Kernels[0] == FP8 {
		t.Error("mutating a lookup result changed the catalog")
	}
}

func mustRuntime(t testing.TB, name string) Runtime {
	t.Helper()
	rt, err := RuntimeByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}
