package planner

const (
	gb  = 1e9
	gib = 1 << 30
	tb  = 1e12
	tf  = 1e12
)

// acceleratorAliases maps shorthand names to catalog names.
var acceleratorAliases = map[string]string{
	"h100":     "h100-80gb",
	"h100-sxm": "h100-80gb",
	"h200-sxm": "h200",
	"a100":     "a100-80gb",
}

// gpuRuntimeOverhead covers the CUDA context (about 0.5 GB), cuBLAS/cuBLASLt
// workspaces and NCCL buffers; vLLM and TensorRT-LLM both reserve on the
// order of 1-2 GB before weights.
const gpuRuntimeOverhead = 1.5 * gb

// nvlinkAllReduceLatency is the fixed cost of one small all-reduce over
// NVLink/NVSwitch. nccl-tests report roughly 10-30 µs for small messages on
// 8-GPU HGX systems; 25 µs is the value fitted to gpt-fast's batch-1 tensor
// parallel scaling on A100 (docs/planner.md).
const nvlinkAllReduceLatency = 25e-6

// pcieAllReduceLatency doubles it for all-reduces staged over PCIe and the
// host bridge, which have no switch fabric between GPUs.
const pcieAllReduceLatency = 50e-6

// gpuHeadroom leaves 10% of device memory free, as vLLM's default
// gpu_memory_utilization of 0.9 does.
const gpuHeadroom = 0.10

// accelerators is the catalog, in the order AcceleratorNames lists it. Every
// rate is a dense (not 2:4 sparse) datasheet peak; the Source field names the
// datasheet and, where this project measured the device, the measurement.
var accelerators = []Accelerator{
	{
		Name:        "h100-80gb",
		Description: "NVIDIA H100 80GB SXM5 (HGX, NVLink 4)",
		MemoryBytes: 80 * gb, // datasheet "80GB" HBM3
		// Datasheet 3.35 TB/s; this project measured ~3.0 TB/s copy (0.9).
		MemoryBandwidth: 3.35 * tb,
		// Datasheet 1,979 TFLOPS bf16 with sparsity, 989.4 dense; this
		// project measured 798 TFLOP/s on an 8192^3 bf16 GEMM (0.81).
		BF16FLOPS: 989.4 * tf,
		FP8FLOPS:  1978.9 * tf, // datasheet 3,958 with sparsity
		Int8OPS:   1978.9 * tf, // datasheet 3,958 TOPS with sparsity
		// NVLink 4: 900 GB/s per GPU, both directions together.
		Interconnect:              "NVLink 4 (NVSwitch)",
		InterconnectBandwidth:     450 * gb,
		InterconnectLatency:       nvlinkAllReduceLatency,
		GPUsPerNode:               8, // HGX H100 8-GPU baseboard
		KVBytesPerElement:         2,
		ActivationBytesPerElement: 2,
		RuntimeOverheadBytes:      gpuRuntimeOverhead,
		MemoryHeadroom:            gpuHeadroom,
		ResourceName:              "nvidia.com/gpu",
		ProductLabel:              "NVIDIA-H100-80GB-HBM3",
		Source: "NVIDIA H100 Tensor Core GPU datasheet (SXM5 column); bandwidth and bf16 GEMM also " +
			"measured on this project's H100 (3.0 TB/s copy, 798 TFLOP/s), see docs/planner.md",
	},
	{
		Name:                      "h200",
		Description:               "NVIDIA H200 141GB SXM (HGX, NVLink 4)",
		MemoryBytes:               141 * gb,   // datasheet 141GB HBM3e
		MemoryBandwidth:           4.8 * tb,   // datasheet; measured ~4.3 TB/s copy (0.9)
		BF16FLOPS:                 989.4 * tf, // same Hopper die as H100 SXM; measured 769-798
		FP8FLOPS:                  1978.9 * tf,
		Int8OPS:                   1978.9 * tf,
		Interconnect:              "NVLink 4 (NVSwitch)",
		InterconnectBandwidth:     450 * gb, // 900 GB/s bidirectional
		InterconnectLatency:       nvlinkAllReduceLatency,
		GPUsPerNode:               8, // HGX H200 8-GPU baseboard
		KVBytesPerElement:         2,
		ActivationBytesPerElement: 2,
		RuntimeOverheadBytes:      gpuRuntimeOverhead,
		MemoryHeadroom:            gpuHeadroom,
		ResourceName:              "nvidia.com/gpu",
		ProductLabel:              "NVIDIA-H200",
		Source: "NVIDIA H200 Tensor Core GPU datasheet (SXM column); bandwidth and bf16 GEMM also " +
			"measured on this project's H200 (4.3 TB/s copy, 769-798 TFLOP/s)",
	},
	{
		Name:                      "a100-80gb",
		Description:               "NVIDIA A100 80GB SXM4 (HGX, NVLink 3)",
		MemoryBytes:               80 * gb,
		MemoryBandwidth:           2.039 * tb, // HBM2e, SXM4 column
		BF16FLOPS:                 312 * tf,   // 624 with sparsity
		Int8OPS:                   624 * tf,   // 1,248 TOPS with sparsity
		Interconnect:              "NVLink 3 (NVSwitch)",
		InterconnectBandwidth:     300 * gb, // 600 GB/s bidirectional
		InterconnectLatency:       nvlinkAllReduceLatency,
		GPUsPerNode:               8,
		KVBytesPerElement:         2,
		ActivationBytesPerElement: 2,
		RuntimeOverheadBytes:      gpuRuntimeOverhead,
		MemoryHeadroom:            gpuHeadroom,
		ResourceName:              "nvidia.com/gpu",
		ProductLabel:              "NVIDIA-A100-SXM4-80GB",
		Source:                    "NVIDIA A100 Tensor Core GPU datasheet (80GB SXM column); no FP8 on Ampere",
	},
	{
		Name:                      "a100-40gb",
		Description:               "NVIDIA A100 40GB SXM4 (HGX, NVLink 3)",
		MemoryBytes:               40 * gb,
		MemoryBandwidth:           1.555 * tb, // HBM2, 40GB SXM4 column
		BF16FLOPS:                 312 * tf,
		Int8OPS:                   624 * tf,
		Interconnect:              "NVLink 3 (NVSwitch)",
		InterconnectBandwidth:     300 * gb,
		InterconnectLatency:       nvlinkAllReduceLatency,
		GPUsPerNode:               8,
		KVBytesPerElement:         2,
		ActivationBytesPerElement: 2,
		RuntimeOverheadBytes:      gpuRuntimeOverhead,
		MemoryHeadroom:            gpuHeadroom,
		ResourceName:              "nvidia.com/gpu",
		ProductLabel:              "NVIDIA-A100-SXM4-40GB",
		Source:                    "NVIDIA A100 Tensor Core GPU datasheet (40GB SXM column); no FP8 on Ampere",
	},
	{
		Name:                      "l40s",
		Description:               "NVIDIA L40S 48GB (PCIe Gen4, no NVLink)",
		MemoryBytes:               48 * gb,     // GDDR6 with ECC
		MemoryBandwidth:           864 * gb,    // datasheet
		BF16FLOPS:                 362.05 * tf, // 733 with sparsity
		FP8FLOPS:                  733 * tf,    // 1,466 with sparsity
		Int8OPS:                   733 * tf,    // 1,466 TOPS with sparsity
		Interconnect:              "PCIe Gen4 x16",
		InterconnectBandwidth:     32 * gb, // 64 GB/s bidirectional
		InterconnectLatency:       pcieAllReduceLatency,
		GPUsPerNode:               8, // common 8-GPU OVX / 4U servers
		KVBytesPerElement:         2,
		ActivationBytesPerElement: 2,
		RuntimeOverheadBytes:      gpuRuntimeOverhead,
		MemoryHeadroom:            gpuHeadroom,
		ResourceName:              "nvidia.com/gpu",
		ProductLabel:              "NVIDIA-L40S",
		Source:                    "NVIDIA L40S datasheet; interconnect is the PCIe Gen4 x16 host link",
	},
	{
		Name:                      "l4",
		Description:               "NVIDIA L4 24GB (PCIe Gen4, no NVLink)",
		MemoryBytes:               24 * gb,
		MemoryBandwidth:           300 * gb,
		BF16FLOPS:                 121 * tf,   // 242 with sparsity
		FP8FLOPS:                  242.5 * tf, // 485 with sparsity
		Int8OPS:                   242.5 * tf, // 485 TOPS with sparsity
		Interconnect:              "PCIe Gen4 x16",
		InterconnectBandwidth:     32 * gb,
		InterconnectLatency:       pcieAllReduceLatency,
		GPUsPerNode:               8, // e.g. Google Cloud g2-standard-96
		KVBytesPerElement:         2,
		ActivationBytesPerElement: 2,
		RuntimeOverheadBytes:      gpuRuntimeOverhead,
		MemoryHeadroom:            gpuHeadroom,
		ResourceName:              "nvidia.com/gpu",
		ProductLabel:              "NVIDIA-L4",
		Source:                    "NVIDIA L4 Tensor Core GPU datasheet; interconnect is the PCIe Gen4 x16 host link",
	},
	{
		Name:        "cpu",
		Description: "x86-64 host, 2 cores AVX2+FMA, 24 GiB, running the pure-Go engine",
		MemoryBytes: 24 * gib,
		// Measured read bandwidth of this project's build machines.
		MemoryBandwidth: 10 * gb,
		// 2 cores × 2 FMA ports × 8 f32 lanes × 2 FLOP × 3.0 GHz = 192
		// GFLOP/s; bf16 weights are widened to f32 (no AVX-512 BF16).
		BF16FLOPS: 192e9,
		// Int8 dot products (vpmaddubsw + vpmaddwd, 32 products per 256-bit
		// instruction pair) run at about twice the f32 FMA rate.
		Int8OPS:      384e9,
		Interconnect: "none (one host is one device)",
		GPUsPerNode:  1,
		// The CPU engine keeps its KV cache and activations in f32.
		KVBytesPerElement:         4,
		ActivationBytesPerElement: 4,
		RuntimeOverheadBytes:      512 << 20, // Go runtime, scratch buffers
		MemoryHeadroom:            0.15,      // the OS and kubelet share the host
		Efficiency: map[Quantization]Efficiency{
			// Until `moe bench` calibrates them: the pure-Go kernels reach a
			// small fraction of the SIMD peak, and decode streams weights at
			// roughly two thirds of the measured bandwidth.
			BF16: {Bandwidth: 0.6, Compute: 0.1},
			Int8: {Bandwidth: 0.6, Compute: 0.1},
			Int4: {Bandwidth: 0.6, Compute: 0.1},
		},
		Source: "this project's build machines (AMD EPYC, AVX2+FMA+F16C, no AVX-512): ~10 GB/s measured " +
			"read bandwidth; compute is the AVX2 FMA peak at 3.0 GHz; efficiency from `moe bench` calibration",
	},
}
