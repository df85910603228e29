package planner

import (
	"fmt"
	"sort"
)

// Runtime is an engine the planner has a profile for: the precisions it
// serves, how far one replica may spread, and how efficiently it drives the
// accelerator.
type Runtime struct {
	// Name is the key: "moe" (this project's engine) or "vllm".
	Name string `json:"name"`
	// MaxNodesPerReplica is how many nodes one replica may span: 1 for an
	// engine that runs a replica on one node only.
	MaxNodesPerReplica int `json:"maxNodesPerReplica"`
	// Quantizations are the precisions the runtime serves from full-precision
	// weights; weights stored quantized (Overrides.MaxPrecision) are served
	// at their own precision when the runtime reads that format.
	Quantizations []Quantization `json:"quantizations"`
	// Efficiency holds the runtime's factors per precision on GPUs; a missing
	// precision takes the accelerator's default. Accelerators with their own
	// factors (the cpu profile) keep them.
	Efficiency map[Quantization]Efficiency `json:"efficiency,omitempty"`
	// Source says where the factors come from.
	Source string `json:"source"`
}

// Runtime names.
const (
	RuntimeMoE  = "moe"
	RuntimeVLLM = "vllm"
)

// Inter-node links for pipeline parallelism across nodes: a 200 Gb/s
// RDMA-class fabric (InfiniBand HDR or RoCE), each hop one point-to-point
// send of the micro-batch's hidden states.
const (
	interNodeBandwidth = 25e9
	interNodeLatency   = 20e-6
)

// pipelineCandidates are the nodes per replica a multi-node runtime tries;
// each node runs one pipeline stage of a full node's tensor-parallel group.
var pipelineCandidates = []int{1, 2, 4}

// runtimes is the catalog. moe keeps the defaults fitted to TensorRT-LLM and
// gpt-fast (defaultEfficiency): its GPU kernels aim at the same rooflines.
// vllm's factors are fitted to published vLLM Mixtral-8x7B results; see
// docs/planner.md and TestPublishedVLLMThroughput.
var runtimes = []Runtime{
	{
		Name:               RuntimeMoE,
		MaxNodesPerReplica: 1,
		Quantizations:      []Quantization{BF16, FP8, Int8, Int4},
		Source:             "the GPU defaults (TensorRT-LLM v0.14 and gpt-fast Mixtral-8x7B figures)",
	},
	{
		Name:               RuntimeVLLM,
		MaxNodesPerReplica: 4,
		// vLLM quantizes full-precision weights online only to FP8; Int8 and
		// Int4 need a checkpoint quantized ahead of time (AWQ, GPTQ), which
		// it reads from the checkpoint's own config.
		Quantizations: []Quantization{BF16, FP8},
		Efficiency:    vllmEfficiency,
		Source:        vllmEfficiencySource,
	},
}

// RuntimeByName returns the named runtime's profile; "" is moe.
func RuntimeByName(name string) (Runtime, error) {
	if name == "" {
		name = RuntimeMoE
	}
	for _, r := range runtimes {
		if r.Name == name {
			return r, nil
		}
	}
	return Runtime{}, fmt.Errorf("%w: unknown runtime %q (known: %v)", ErrInvalidRequest, name, RuntimeNames())
}

// RuntimeNames lists the runtime keys, sorted.
func RuntimeNames() []string {
	names := make([]string, 0, len(runtimes))
	for _, r := range runtimes {
		names = append(names, r.Name)
	}
	sort.Strings(names)
	return names
}

// serves reports whether the runtime can serve q, given weights stored at
// stored ("" or Auto: full precision).
func (r Runtime) serves(q Quantization, stored Quantization) bool {
	if stored != "" && stored != Auto && stored != BF16 && q == stored {
		return true
	}
	for _, s := range r.Quantizations {
		if s == q {
			return true
		}
	}
	return false
}

// efficiency is the runtime's factor for q on a: the accelerator's own
// entry first, then the runtime's, then the GPU default.
func (r Runtime) efficiency(a Accelerator, q Quantization) Efficiency {
	if e, ok := a.Efficiency[q]; ok && e.valid() {
		return e
	}
	if e, ok := r.Efficiency[q]; ok && e.valid() {
		return e
	}
	return defaultEfficiency[q]
}

// vllmEfficiency is fitted to the published vLLM Mixtral figures in
// TestPublishedVLLM: Mixtral-8x22B batch latency on A100-80GB at TP4 and TP8
// (vllm-project/vllm PR #4002) and Mixtral-8x7B inter-token latency under
// Poisson load on 2×H100 (PR #2979), all from vLLM 0.3–0.4 (2024). The low
// compute factor is those versions' prefill, which stalls decoding; newer vLLM
// is faster, and a calibration overrides these factors. No published vLLM
// Mixtral FP8 figure was found: FP8 takes the BF16 factors scaled by the
// FP8/BF16 ratio of the GPU defaults (defaultEfficiency).
var vllmEfficiency = map[Quantization]Efficiency{
	BF16: {Bandwidth: 0.66, Compute: 0.18},
	FP8:  {Bandwidth: 0.59, Compute: 0.105},
}

const vllmEfficiencySource = "fitted to vLLM PR #4002 (Mixtral-8x22B, A100-80GB TP4/TP8) and PR #2979 (Mixtral-8x7B, 2×H100) figures; FP8 scaled from BF16"
