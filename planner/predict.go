package planner

import "fmt"

// Prediction is the performance model's output for one deployment shape at
// one batch size, before any search.
type Prediction struct {
	// DecodeStepSeconds is one decode step for the whole batch, with the KV
	// cache at prompt + output/2 tokens; DecodeTokensPerSecond is
	// BatchSize/DecodeStepSeconds, the figure `moe bench` reports.
	DecodeStepSeconds     float64
	DecodeTokensPerSecond float64
	// PrefillSeconds is one prompt prefilled alone.
	PrefillSeconds float64
	// ITLSeconds, TTFTSeconds and OutputTokensPerSecond are the steady
	// state of a replica that keeps BatchSize sequences in flight, prefills
	// included, as Solve computes them.
	ITLSeconds            float64
	TTFTSeconds           float64
	OutputTokensPerSecond float64
	MemoryPerGPUBytes     int64
	Efficiency            Efficiency
}

// Predict evaluates the performance model for req's model and accelerator at
// quantization q, tensor parallelism tp, pp pipeline stages (1 on one node)
// and batch size batch, with the efficiency factors Solve would use (the
// runtime's profile, or req.Calibration). It
// ignores the targets' bounds and req.Overrides, and does not check memory.
// Errors wrap ErrInvalidRequest (also for a precision the runtime has no
// kernels for, such as FP8 on moe), ErrUnknownQuantization or
// ErrInvalidCalibration.
func Predict(req Request, q Quantization, tp, pp, batch int) (Prediction, error) {
	req = req.withDefaults()
	rt, err := req.validate()
	if err != nil {
		return Prediction{}, err
	}
	switch {
	case q == Auto || q.rank() >= len(Quantizations()):
		return Prediction{}, fmt.Errorf("%w: %q", ErrUnknownQuantization, string(q))
	case tp < 1 || pp < 1 || batch < 1:
		return Prediction{}, fmt.Errorf("%w: tensor parallelism, pipeline stages and batch must be positive", ErrInvalidRequest)
	}
	if !rt.computes(q) {
		return Prediction{}, rt.kernelError(q)
	}
	effs, err := efficiencies(req, rt)
	if err != nil {
		return Prediction{}, err
	}
	c := newCandidate(req, rt, q, tp, pp, effs[q])
	step := c.decodeStep(batch, float64(c.prompt)+float64(c.output)/2)
	p := c.at(batch)
	return Prediction{
		DecodeStepSeconds:     step,
		DecodeTokensPerSecond: float64(batch) / step,
		PrefillSeconds:        c.prefill(1),
		ITLSeconds:            p.itl,
		TTFTSeconds:           p.ttft,
		OutputTokensPerSecond: p.throughput,
		MemoryPerGPUBytes:     int64(p.memory),
		Efficiency:            c.eff,
	}, nil
}
