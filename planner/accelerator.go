package planner

import (
	"fmt"
	"strings"
)

// Accelerator describes one device kind as the performance model sees it.
// Rates are peak datasheet figures; the efficiency factors scale them to what
// an engine achieves. A "GPU" in plans is one Accelerator; the cpu profile
// counts a whole host as one.
type Accelerator struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	// MemoryBytes is the device memory.
	MemoryBytes int64 `json:"memoryBytes"`
	// MemoryBandwidth is the peak memory bandwidth in bytes per second.
	MemoryBandwidth float64 `json:"memoryBandwidth"`
	// BF16FLOPS is the dense (not 2:4 sparse) bf16 matrix rate in FLOP/s.
	BF16FLOPS float64 `json:"bf16FLOPS"`
	// FP8FLOPS is the dense FP8 matrix rate in FLOP/s; 0 means the device
	// has no FP8 tensor cores and FP8 is not a candidate.
	FP8FLOPS float64 `json:"fp8FLOPS,omitempty"`
	// Int8OPS is the dense int8 matrix rate in OP/s.
	Int8OPS float64 `json:"int8OPS"`
	// Interconnect names the link tensor parallelism uses.
	Interconnect string `json:"interconnect"`
	// InterconnectBandwidth is the per-device, one-direction bandwidth of
	// that link in bytes per second.
	InterconnectBandwidth float64 `json:"interconnectBandwidth"`
	// InterconnectLatency is the fixed cost of one small all-reduce across
	// the shards, in seconds (launch, synchronisation and one traversal of
	// the switch or host bridge).
	InterconnectLatency float64 `json:"interconnectLatency"`
	// GPUsPerNode bounds tensor parallelism: a replica stays within a node.
	GPUsPerNode int `json:"gpusPerNode"`
	// KVBytesPerElement is the engine's KV-cache element size on this
	// device: 2 (fp16) on GPUs, 4 (f32) for the CPU engine.
	KVBytesPerElement float64 `json:"kvBytesPerElement"`
	// ActivationBytesPerElement is the element size of activations, which
	// sets the all-reduce message size and the activation memory.
	ActivationBytesPerElement float64 `json:"activationBytesPerElement"`
	// RuntimeOverheadBytes is memory the runtime takes before weights:
	// driver context, library workspaces, communicator buffers.
	RuntimeOverheadBytes int64 `json:"runtimeOverheadBytes"`
	// MemoryHeadroom is the fraction of MemoryBytes a plan leaves free
	// (fragmentation, allocator slack, the OS on the cpu profile).
	MemoryHeadroom float64 `json:"memoryHeadroom"`
	// ResourceName is the Kubernetes extended resource a pod requests per
	// device ("nvidia.com/gpu"); empty for the cpu profile.
	ResourceName string `json:"resourceName,omitempty"`
	// ProductLabel is the value of the nvidia.com/gpu.product node label
	// that GPU feature discovery sets for this device; empty for cpu.
	ProductLabel string `json:"productLabel,omitempty"`
	// Efficiency holds this device's default efficiency factors by
	// quantization; missing entries fall back to DefaultEfficiency.
	Efficiency map[Quantization]Efficiency `json:"efficiency,omitempty"`
	// Source says where each figure comes from.
	Source string `json:"source"`
}

// SupportsQuantization reports whether the device can run q: FP8 needs
// FP8FLOPS > 0; BF16, Int8 and Int4 run everywhere.
func (a Accelerator) SupportsQuantization(q Quantization) bool {
	if q == FP8 {
		return a.FP8FLOPS > 0
	}
	return q == BF16 || q == Int8 || q == Int4
}

// ComputeRate is the peak matrix rate the engine uses at quantization q:
// bf16 for BF16, FP8 for FP8, and int8 for Int8 and Int4 (their activations
// are quantized to 8 bits, as in GGML's Q8_0/Q4_0 dot products).
func (a Accelerator) ComputeRate(q Quantization) float64 {
	switch q {
	case FP8:
		return a.FP8FLOPS
	case Int8, Int4:
		return a.Int8OPS
	}
	return a.BF16FLOPS
}

// UsableMemoryBytes is MemoryBytes × (1 − MemoryHeadroom).
func (a Accelerator) UsableMemoryBytes() int64 {
	return int64(float64(a.MemoryBytes) * (1 - a.MemoryHeadroom))
}

// Validate reports an error wrapping ErrInvalidRequest when a figure the
// model divides by is not positive.
func (a Accelerator) Validate() error {
	switch {
	case a.MemoryBytes <= 0:
		return fmt.Errorf("%w: accelerator %q memoryBytes must be positive", ErrInvalidRequest, a.Name)
	case a.MemoryBandwidth <= 0:
		return fmt.Errorf("%w: accelerator %q memoryBandwidth must be positive", ErrInvalidRequest, a.Name)
	case a.BF16FLOPS <= 0 || a.Int8OPS <= 0:
		return fmt.Errorf("%w: accelerator %q bf16FLOPS and int8OPS must be positive", ErrInvalidRequest, a.Name)
	case a.GPUsPerNode <= 0:
		return fmt.Errorf("%w: accelerator %q gpusPerNode must be positive", ErrInvalidRequest, a.Name)
	case a.InterconnectBandwidth < 0 || a.InterconnectLatency < 0:
		return fmt.Errorf("%w: accelerator %q interconnect figures must not be negative", ErrInvalidRequest, a.Name)
	case a.KVBytesPerElement <= 0 || a.ActivationBytesPerElement <= 0:
		return fmt.Errorf("%w: accelerator %q kvBytesPerElement and activationBytesPerElement must be positive", ErrInvalidRequest, a.Name)
	case a.MemoryHeadroom < 0 || a.MemoryHeadroom >= 1:
		return fmt.Errorf("%w: accelerator %q memoryHeadroom must be in [0, 1)", ErrInvalidRequest, a.Name)
	}
	return nil
}

// AcceleratorNames returns the catalog's accelerator names in catalog order.
func AcceleratorNames() []string {
	names := make([]string, len(accelerators))
	for i, a := range accelerators {
		names[i] = a.Name
	}
	return names
}

// AcceleratorByName returns the catalog entry named name (case-insensitive;
// "h100" is accepted for h100-80gb). It returns an error wrapping
// ErrUnknownAccelerator otherwise.
func AcceleratorByName(name string) (Accelerator, error) {
	key := strings.ToLower(name)
	if alias, ok := acceleratorAliases[key]; ok {
		key = alias
	}
	for _, a := range accelerators {
		if a.Name == key {
			return a.clone(), nil
		}
	}
	return Accelerator{}, fmt.Errorf("%w: %q (known: %s)", ErrUnknownAccelerator, name, strings.Join(AcceleratorNames(), ", "))
}

// clone copies a so callers cannot mutate the catalog's maps.
func (a Accelerator) clone() Accelerator {
	if a.Efficiency != nil {
		e := make(map[Quantization]Efficiency, len(a.Efficiency))
		for q, f := range a.Efficiency {
			e[q] = f
		}
		a.Efficiency = e
	}
	return a
}
