package planner

import (
	"fmt"
	"time"
)

// Defaults applied to zero fields of Targets and Request.
const (
	DefaultPromptTokens = 1000
	DefaultOutputTokens = 250
	// DefaultMaxBatchSize caps the concurrent sequences per replica, as the
	// engine's --max-num-seqs does.
	DefaultMaxBatchSize = 256
)

// Request is one planning question.
type Request struct {
	Model       Model
	Accelerator Accelerator
	Targets     Targets
	Overrides   Overrides
	// MaxBatchSize caps the batch per replica; 0 means DefaultMaxBatchSize.
	MaxBatchSize int
	// MaxReplicas caps the replicas a plan may use (the autoscaler's
	// maximum, say); 0 means no cap. A target that needs more is infeasible.
	MaxReplicas int
	// Calibration, when set, overrides the efficiency factors it holds (or
	// fits from its measurements); other precisions keep their defaults.
	Calibration *Calibration
	// Runtime is the engine's profile key (RuntimeMoE, RuntimeVLLM); ""
	// means RuntimeMoE. It sets the precisions searched, the efficiency
	// factors and whether a replica may span nodes.
	Runtime string
}

// Targets are the service levels a deployment must meet. Zero latency bounds
// mean "unbounded": with neither bound the planner maximises throughput per
// replica (offline mode).
type Targets struct {
	// OutputTokensPerSecond is the aggregate generated-token rate over all
	// replicas; 0 asks for one replica.
	OutputTokensPerSecond float64
	// TTFT bounds the mean time to first token; 0 means unbounded.
	TTFT time.Duration
	// ITL bounds the mean inter-token latency; 0 means unbounded.
	ITL time.Duration
	// PromptTokens and OutputTokens are the typical request; 0 means
	// DefaultPromptTokens and DefaultOutputTokens.
	PromptTokens int
	OutputTokens int
	// Context is the longest sequence (prompt + output) one request may
	// reach; the KV cache always holds at least one such sequence. 0 means
	// the model's context length.
	Context int
}

// Overrides pin choices the search would otherwise make, as the CRD's
// spec.overrides do.
type Overrides struct {
	// Quantization pins the weight format; "" or Auto searches.
	Quantization Quantization
	// TensorParallelism pins the shards per replica; 0 searches 1, 2, 4, 8
	// up to the accelerator's GPUs per node.
	TensorParallelism int
	// MaxPrecision is the precision the model's weights are stored in, when
	// known (a Q4 GGUF file is Int4): the engine converts only downwards, so
	// no plan may use a higher precision. "" or Auto means no cap.
	MaxPrecision Quantization
}

// Offline reports whether no latency bound applies.
func (t Targets) Offline() bool { return t.TTFT == 0 && t.ITL == 0 }

// withDefaults returns r with zero fields replaced by their defaults.
func (r Request) withDefaults() Request {
	if r.Targets.PromptTokens == 0 {
		r.Targets.PromptTokens = DefaultPromptTokens
	}
	if r.Targets.OutputTokens == 0 {
		r.Targets.OutputTokens = DefaultOutputTokens
	}
	if r.Targets.Context == 0 {
		r.Targets.Context = r.Model.ContextLength
	}
	if r.MaxBatchSize == 0 {
		r.MaxBatchSize = DefaultMaxBatchSize
	}
	if r.Overrides.Quantization == "" {
		r.Overrides.Quantization = Auto
	}
	return r
}

// validate checks a request after withDefaults, under its runtime, and
// returns that runtime.
func (r Request) validate() (Runtime, error) {
	if err := r.validateShape(); err != nil {
		return Runtime{}, err
	}
	rt, err := RuntimeByName(r.Runtime)
	if err != nil {
		return Runtime{}, err
	}
	return rt, r.validateRuntime(rt)
}

// validateShape checks what does not depend on the runtime: the model, the
// accelerator, the targets, the overrides' values and the calibration's
// accelerator.
func (r Request) validateShape() error {
	if err := r.Model.Validate(); err != nil {
		return err
	}
	if err := r.Accelerator.Validate(); err != nil {
		return err
	}
	t := r.Targets
	switch {
	case t.OutputTokensPerSecond < 0:
		return fmt.Errorf("%w: output tokens per second must not be negative", ErrInvalidRequest)
	case t.TTFT < 0 || t.ITL < 0:
		return fmt.Errorf("%w: latency bounds must not be negative", ErrInvalidRequest)
	case t.PromptTokens < 0 || t.OutputTokens < 0:
		return fmt.Errorf("%w: prompt and output tokens must be positive", ErrInvalidRequest)
	case t.Context < 0:
		return fmt.Errorf("%w: context must be positive", ErrInvalidRequest)
	case t.Context > r.Model.ContextLength:
		return fmt.Errorf("%w: context %d exceeds the model's %d tokens", ErrInvalidRequest, t.Context, r.Model.ContextLength)
	case t.PromptTokens+t.OutputTokens > t.Context:
		return fmt.Errorf("%w: prompt (%d) + output (%d) tokens exceed the context (%d)",
			ErrInvalidRequest, t.PromptTokens, t.OutputTokens, t.Context)
	case r.MaxBatchSize < 0:
		return fmt.Errorf("%w: max batch size must be positive", ErrInvalidRequest)
	case r.MaxReplicas < 0:
		return fmt.Errorf("%w: max replicas must not be negative", ErrInvalidRequest)
	}
	if p := r.Overrides.MaxPrecision; p != "" && p != Auto && p.rank() >= len(Quantizations()) {
		return fmt.Errorf("%w: max precision %q", ErrUnknownQuantization, string(p))
	}
	q := r.Overrides.Quantization
	if q != Auto && q.rank() >= len(Quantizations()) {
		return fmt.Errorf("%w: %q", ErrUnknownQuantization, string(q))
	}
	if tp := r.Overrides.TensorParallelism; tp < 0 {
		return fmt.Errorf("%w: tensor parallelism must be positive, got %d", ErrInvalidRequest, tp)
	}
	if c := r.Calibration; c != nil && c.Accelerator != "" && c.Accelerator != r.Accelerator.Name {
		return fmt.Errorf("%w: calibration was measured on %q, not %q", ErrInvalidCalibration, c.Accelerator, r.Accelerator.Name)
	}
	return nil
}

// validateRuntime checks the request against rt: a pinned precision the
// runtime has kernels for, and a GPU for a runtime other than moe.
func (r Request) validateRuntime(rt Runtime) error {
	if q := r.Overrides.Quantization; q != Auto && !rt.computes(q) {
		return rt.kernelError(q)
	}
	if rt.Name != RuntimeMoE && r.Accelerator.ResourceName == "" {
		return fmt.Errorf("%w: the %s runtime runs on GPUs; %s is served by the moe runtime", ErrInvalidRequest, rt.Name, r.Accelerator.Name)
	}
	return nil
}
