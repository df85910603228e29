package planner

import (
	"errors"
	"strings"
	"testing"
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
