package planner

// Efficiency scales an accelerator's peak rates to what an engine achieves:
// effective bandwidth = MemoryBandwidth·Bandwidth and effective compute =
// ComputeRate·Compute. Both are in (0, 1].
type Efficiency struct {
	Bandwidth float64 `json:"bandwidth"`
	Compute   float64 `json:"compute"`
}

// valid reports whether both factors are in (0, 1].
func (e Efficiency) valid() bool {
	return e.Bandwidth > 0 && e.Bandwidth <= 1 && e.Compute > 0 && e.Compute <= 1
}

// defaultEfficiency holds the GPU defaults per precision family, fitted to
// the published TensorRT-LLM v0.14 and gpt-fast Mixtral-8x7B figures (see
// docs/planner.md and TestPublishedThroughput).
var defaultEfficiency = map[Quantization]Efficiency{
	BF16: {Bandwidth: 0.60, Compute: 0.50},
	FP8:  {Bandwidth: 0.60, Compute: 0.40},
	Int8: {Bandwidth: 0.40, Compute: 0.40},
	Int4: {Bandwidth: 0.40, Compute: 0.40},
}

// DefaultEfficiency returns the documented default factors for q on a: the
// accelerator's own entry when it has one, otherwise the GPU default for the
// precision family.
func DefaultEfficiency(a Accelerator, q Quantization) Efficiency {
	if e, ok := a.Efficiency[q]; ok && e.valid() {
		return e
	}
	return defaultEfficiency[q]
}
