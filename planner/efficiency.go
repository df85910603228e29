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
//
//   - BF16 (and FP16): fitted to TensorRT-LLM's FP16 rows on H100 and A100
//     and gpt-fast's bf16 batch-1 rows.
//   - FP8: fitted to TensorRT-LLM's FP8 rows on H100 and H200.
//   - Int8: bandwidth fitted to gpt-fast's int8 batch-1 row; no published
//     large-batch figure exists, so compute takes FP8's factor (the same
//     8-bit tensor-core rate).
//   - Int4: no published figure; it takes Int8's factors.
var defaultEfficiency = map[Quantization]Efficiency{
	BF16: {Bandwidth: 0.58, Compute: 0.58},
	FP8:  {Bandwidth: 0.52, Compute: 0.34},
	Int8: {Bandwidth: 0.38, Compute: 0.34},
	Int4: {Bandwidth: 0.38, Compute: 0.34},
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
