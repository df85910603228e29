package planner

import (
	"fmt"
	"maps"
	"slices"
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
	// GPU, when set, is how the engine lays a replica over GPUs where it
	// differs from Megatron-style tensor parallelism (heads and every
	// expert's intermediate dimension split, NVLink all-reduces).
	GPU *GPULayout `json:"gpu,omitempty"`
	// Kernels are the precisions the runtime computes in at all, whatever
	// the weights are stored as; nil means every precision. Pinning one
	// outside it is an invalid request.
	Kernels []Quantization `json:"kernels,omitempty"`
	// Profiles holds the runtime's own factors per accelerator name. They
	// come after the accelerator's own entry (the cpu profile) and before
	// Efficiency.
	Profiles map[string]Profile `json:"profiles,omitempty"`
	// Efficiency holds the runtime's factors per precision on GPUs without
	// a profile; a missing precision takes the GPU default
	// (DefaultEfficiency).
	Efficiency map[Quantization]Efficiency `json:"efficiency,omitempty"`
	// Source says where the factors come from.
	Source string `json:"source"`
}

// Profile is a runtime's efficiency factors on one accelerator and where
// they come from.
type Profile struct {
	// Efficiency holds the factors per precision; a missing precision takes
	// the runtime-wide factors.
	Efficiency map[Quantization]Efficiency `json:"efficiency"`
	// Calibrated is true when the factors were fitted to measurements of
	// the runtime on the accelerator, false when they are assumed.
	Calibrated bool `json:"calibrated"`
	// Source says where the factors come from and, for assumed ones, how
	// to measure them.
	Source string `json:"source"`
}

// GPULayout is an engine's own way of running a replica on GPUs.
type GPULayout struct {
	// KVBytesPerElement replaces the accelerator's KV-cache element size.
	KVBytesPerElement float64 `json:"kvBytesPerElement,omitempty"`
	// ExpertParallel places whole experts on the GPUs (expert e on GPU e mod
	// TP) and replicates attention, its weights and the KV cache on every
	// GPU; the first GPU alone holds the output head. One reduction per
	// layer joins the GPUs' expert outputs.
	ExpertParallel bool `json:"expertParallel,omitempty"`
	// HostBandwidth and HostLatency price that reduction when it goes
	// through host memory: every GPU's float32 part is read back and the
	// sum written back (2 transfers of the hidden states per GPU and layer,
	// at HostBandwidth bytes/s each way), and each layer costs HostLatency
	// seconds of submission and fence wait.
	HostBandwidth float64 `json:"hostBandwidth,omitempty"`
	HostLatency   float64 `json:"hostLatency,omitempty"`
}

// moeGPULayout is the moe engine's Vulkan backend (engine/gpu, gpu.Group):
// K and V in float32, experts split over a device group, the reduction
// through host memory. The host link's figures are assumed, not measured:
// 25 GB/s each way (PCIe Gen4 x16's 32 GB/s at the 80% a staged copy
// reaches) and 100 µs per layer for a submission per GPU and the fence
// waits.
var moeGPULayout = &GPULayout{KVBytesPerElement: 4, ExpertParallel: true, HostBandwidth: 25e9, HostLatency: 100e-6}

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

// runtimes is the catalog. moe has its own assumed profiles per GPU
// (moeProfiles) and no FP8 kernels; vllm's factors are fitted to published
// vLLM Mixtral-8x7B results; see docs/planner.md and
// TestPublishedVLLMThroughput.
var runtimes = []Runtime{
	{
		Name:               RuntimeMoE,
		MaxNodesPerReplica: 1,
		// The engine has no FP8 kernels on any backend: its CPU backend
		// runs --quantization fp8 as Q8_0 and its Vulkan shaders are Q8_0,
		// Q4_0 and 16-bit float. Int8 takes the same memory.
		Quantizations: []Quantization{BF16, Int8, Int4},
		Kernels:       []Quantization{BF16, Int8, Int4},
		GPU:           moeGPULayout,
		Profiles:      moeProfiles,
		Source: "assumed per-GPU profiles for the Vulkan backend (not calibrated on a device); " +
			"GPUs without one take the GPU defaults (TensorRT-LLM v0.14 and gpt-fast Mixtral-8x7B figures)",
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
			return r.clone(), nil
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

// AcceleratorProfile returns the runtime's own profile for the named
// accelerator; ok is false when it has none, and the accelerator then takes
// the runtime-wide factors or the GPU defaults.
func (r Runtime) AcceleratorProfile(accelerator string) (p Profile, ok bool) {
	p, ok = r.Profiles[accelerator]
	return p, ok
}

// computes reports whether the runtime has kernels for q.
func (r Runtime) computes(q Quantization) bool {
	return r.Kernels == nil || slices.Contains(r.Kernels, q)
}

// kernelError explains a pinned precision the runtime cannot compute in.
func (r Runtime) kernelError(q Quantization) error {
	hint := fmt.Sprintf("pin one of %v", r.Kernels)
	if q == FP8 {
		hint = "pin Int8, which takes the same memory (1.06 bytes per weight), or use the vllm runtime, which runs FP8"
	}
	return fmt.Errorf("%w: the %s engine has no %s kernels; %s", ErrInvalidRequest, r.Name, q, hint)
}

// serves reports whether the runtime can serve q, given weights stored at
// stored ("" or Auto: full precision).
func (r Runtime) serves(q Quantization, stored Quantization) bool {
	if !r.computes(q) {
		return false
	}
	if stored != "" && stored != Auto && stored != BF16 && q == stored {
		return true
	}
	return slices.Contains(r.Quantizations, q)
}

// efficiency is the runtime's factor for q on a: the accelerator's own
// entry first, then the runtime's profile for a, then the runtime-wide
// factors, then the GPU default.
func (r Runtime) efficiency(a Accelerator, q Quantization) Efficiency {
	if e, ok := a.Efficiency[q]; ok && e.valid() {
		return e
	}
	if e, ok := r.Profiles[a.Name].Efficiency[q]; ok && e.valid() {
		return e
	}
	if e, ok := r.Efficiency[q]; ok && e.valid() {
		return e
	}
	return defaultEfficiency[q]
}

// clone copies r so callers cannot mutate the catalog's slices and maps.
func (r Runtime) clone() Runtime {
	r.Quantizations = slices.Clone(r.Quantizations)
	r.Kernels = slices.Clone(r.Kernels)
	r.Efficiency = maps.Clone(r.Efficiency)
	if r.GPU != nil {
		gpu := *r.GPU
		r.GPU = &gpu
	}
	if r.Profiles != nil {
		profiles := make(map[string]Profile, len(r.Profiles))
		for name, p := range r.Profiles {
			p.Efficiency = maps.Clone(p.Efficiency)
			profiles[name] = p
		}
		r.Profiles = profiles
	}
	return r
}

// The moe engine's Vulkan backend on NVIDIA GPUs, ASSUMED: no GPU run has
// calibrated these factors (docs/planner.md, "The moe engine on GPUs").
// They describe a first Vulkan compute backend whose matrix-vector shaders
// (engine/gpu/shaders/matmul.comp) read Q8_0, Q4_0 or 16-bit float weights
// and accumulate on the shader ALUs, with no tensor cores (no cooperative
// matrix), and are chosen to err slow:
//
//   - Bandwidth: batch-1 decode streams weights at about 0.45 of the
//     datasheet bandwidth, below the 0.58 of TensorRT-LLM's tuned kernels:
//     one dispatch per matrix, 64-invocation workgroups and a barrier
//     between dispatches leave the memory system idle part of each step.
//   - Compute: prefill and large batches run on the FP32 (non-tensor)
//     ALUs, while the planner's compute rate is the accelerator's tensor
//     rate (BF16FLOPS for BF16, Int8OPS for Int8 and Int4). The factor is
//     the datasheet FP32 rate over that tensor rate, times 0.6 achieved:
//     H100 SXM 67 TFLOPS FP32 against 989 BF16 is 0.068, so 0.041.
//
// FP8 has no entry: the engine has no FP8 kernels (Runtime.Kernels).
var moeProfiles = map[string]Profile{
	// H100 SXM5: 67 TFLOPS FP32; 989.4 BF16, 1,978.9 INT8 dense.
	"h100-80gb": assumedVulkanProfile(67*tf, 989.4*tf, 1978.9*tf),
	// H200 SXM: the H100's die and clocks, 67 TFLOPS FP32.
	"h200": assumedVulkanProfile(67*tf, 989.4*tf, 1978.9*tf),
	// A100 SXM4: 19.5 TFLOPS FP32; 312 BF16, 624 INT8 dense.
	"a100-80gb": assumedVulkanProfile(19.5*tf, 312*tf, 624*tf),
	"a100-40gb": assumedVulkanProfile(19.5*tf, 312*tf, 624*tf),
	// L40S: 91.6 TFLOPS FP32; 362 BF16, 733 INT8 dense.
	"l40s": assumedVulkanProfile(91.6*tf, 362.05*tf, 733*tf),
	// L4: 30.3 TFLOPS FP32; 121 BF16, 242.5 INT8 dense.
	"l4": assumedVulkanProfile(30.3*tf, 121*tf, 242.5*tf),
}

// Assumed Vulkan-backend figures (see moeProfiles).
const (
	vulkanBandwidth   = 0.45
	vulkanALUAchieved = 0.6
	vulkanSource      = "assumed; not calibrated on a device — run hack/gpu-check.sh then hack/calibrate-gpu " +
		"(a Vulkan backend without tensor cores: bandwidth 0.45, compute 0.6 × FP32 rate / tensor rate)"
)

// assumedVulkanProfile is the moe engine's assumed profile on a GPU whose
// datasheet FP32 (non-tensor) rate is fp32 and whose dense tensor rates are
// bf16 and int8, all in FLOP/s (OP/s).
func assumedVulkanProfile(fp32, bf16, int8 float64) Profile {
	return Profile{
		Efficiency: map[Quantization]Efficiency{
			BF16: {Bandwidth: vulkanBandwidth, Compute: vulkanALUAchieved * fp32 / bf16},
			Int8: {Bandwidth: vulkanBandwidth, Compute: vulkanALUAchieved * fp32 / int8},
			Int4: {Bandwidth: vulkanBandwidth, Compute: vulkanALUAchieved * fp32 / int8},
		},
		Source: vulkanSource,
	}
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
