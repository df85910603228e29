package controllers

import (
	"errors"
	"fmt"
	"path"
	"strings"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/planner"
)

// presetSources are the upstream repositories a preset is served from. They are gated on
// Hugging Face: spec.model.tokenSecretRef supplies a token that has accepted the terms.
var presetSources = map[servingv1alpha1.ModelPreset]string{
	servingv1alpha1.PresetMixtral8x7B:          "hf://mistralai/Mixtral-8x7B-v0.1",
	servingv1alpha1.PresetMixtral8x7BInstruct:  "hf://mistralai/Mixtral-8x7B-Instruct-v0.1",
	servingv1alpha1.PresetMixtral8x22B:         "hf://mistralai/Mixtral-8x22B-v0.1",
	servingv1alpha1.PresetMixtral8x22BInstruct: "hf://mistralai/Mixtral-8x22B-Instruct-v0.1",
}

// defaultContextLength is the trained context assumed for an explicit shape without one
// (the Mixtral-8x7B value).
const defaultContextLength = 32768

// errInvalidSpec marks planning failures caused by the spec itself rather than by targets
// that no configuration meets.
var errInvalidSpec = errors.New("invalid spec")

// modelShape resolves the shape the planner sizes: a preset's, a uri's preset shape, or the
// explicit dimensions. Admission validation guarantees one of them is present; the error
// covers objects stored before a validation rule existed.
func modelShape(m servingv1alpha1.ModelSpec) (planner.Model, error) {
	preset := m.Preset
	if preset == "" && m.Shape != nil {
		preset = m.Shape.Preset
	}
	if preset != "" {
		shape, err := planner.ModelPreset(string(preset))
		if err != nil {
			return planner.Model{}, fmt.Errorf("%w: %w", errInvalidSpec, err)
		}
		return shape, nil
	}
	s := m.Shape
	if s == nil {
		return planner.Model{}, fmt.Errorf("%w: spec.model.uri needs spec.model.shape", errInvalidSpec)
	}
	shape := planner.Model{
		HiddenSize:       int(s.HiddenSize),
		Layers:           int(s.Layers),
		Heads:            int(s.AttentionHeads),
		KVHeads:          int(s.KVHeads),
		HeadDim:          int(s.HeadDim),
		IntermediateSize: int(s.IntermediateSize),
		Experts:          int(s.Experts),
		ExpertsUsed:      int(s.ExpertsPerToken),
		VocabSize:        int(s.VocabSize),
		ContextLength:    int(s.ContextLength),
	}
	if shape.HeadDim == 0 && shape.Heads > 0 {
		shape.HeadDim = shape.HiddenSize / shape.Heads
	}
	if shape.ContextLength == 0 {
		shape.ContextLength = defaultContextLength
	}
	if err := shape.Validate(); err != nil {
		return planner.Model{}, fmt.Errorf("%w: %w", errInvalidSpec, err)
	}
	return shape, nil
}

// accelerator is the catalog entry for spec.accelerator, with maxPerNode bounding the
// tensor-parallel search.
func accelerator(a servingv1alpha1.AcceleratorSpec) (planner.Accelerator, error) {
	acc, err := planner.AcceleratorByName(string(a.Type))
	if err != nil {
		return planner.Accelerator{}, fmt.Errorf("%w: %w", errInvalidSpec, err)
	}
	if a.MaxPerNode != nil {
		acc.GPUsPerNode = int(*a.MaxPerNode)
	}
	return acc, nil
}

// planRequest translates a spec into the planner's question. It is pure.
func planRequest(spec servingv1alpha1.MixtralDeploymentSpec) (planner.Request, error) {
	model, err := modelShape(spec.Model)
	if err != nil {
		return planner.Request{}, err
	}
	acc, err := accelerator(spec.Accelerator)
	if err != nil {
		return planner.Request{}, err
	}
	q, err := planner.ParseQuantization(string(spec.Quantization))
	if err != nil {
		return planner.Request{}, fmt.Errorf("%w: %w", errInvalidSpec, err)
	}
	t := spec.Targets
	req := planner.Request{
		Model:       model,
		Accelerator: acc,
		Targets: planner.Targets{
			PromptTokens: int(t.PromptTokens),
			OutputTokens: int(t.OutputTokens),
			Context:      int(t.MaxContextLength),
		},
		Overrides: planner.Overrides{Quantization: q, TensorParallelism: int(spec.TensorParallelism),
			MaxPrecision: storedPrecision(spec.Model)},
		Runtime: string(engineRuntime(spec)),
	}
	if a := spec.Autoscaling; a != nil && a.Enabled && a.MaxReplicas != nil {
		// A plan the autoscaler could never reach is no plan.
		req.MaxReplicas = int(*a.MaxReplicas)
	}
	if t.OutputTokensPerSecond != nil {
		req.Targets.OutputTokensPerSecond = float64(*t.OutputTokensPerSecond)
	}
	if t.TimeToFirstToken != nil {
		req.Targets.TTFT = t.TimeToFirstToken.Duration
	}
	if t.InterTokenLatency != nil {
		req.Targets.ITL = t.InterTokenLatency.Duration
	}
	return req, nil
}

// engineRuntime is spec.engine.runtime, moe when unset.
func engineRuntime(spec servingv1alpha1.MixtralDeploymentSpec) servingv1alpha1.EngineRuntime {
	if r := spec.Engine.Runtime; r != "" {
		return r
	}
	return servingv1alpha1.RuntimeMoE
}

// statusPlan converts the planner's plan to its status form (the same JSON shape).
func statusPlan(p planner.Plan) *servingv1alpha1.Plan {
	return &servingv1alpha1.Plan{
		Quantization:                    string(p.Quantization),
		TensorParallelism:               int32(p.TensorParallelism),
		PipelineParallelism:             int32(p.PipelineParallelism),
		NodesPerReplica:                 int32(p.NodesPerReplica),
		GPUsPerReplica:                  int32(p.GPUsPerReplica),
		Replicas:                        int32(p.Replicas),
		BatchSize:                       int32(p.BatchSize),
		OutputTokensPerSecondPerReplica: p.OutputTokensPerSecondPerReplica,
		TTFTSeconds:                     p.TTFTSeconds,
		ITLSeconds:                      p.ITLSeconds,
		MemoryPerGPUBytes:               p.MemoryPerGPUBytes,
		Reason:                          p.Reason,
	}
}

// planSummary is the one-line description used in events and condition messages.
func planSummary(p *servingv1alpha1.Plan, replicas int32) string {
	return fmt.Sprintf("%s TP%d, %d replica(s) × %d GPU(s), batch %d: predicted %.0f tok/s per replica, TTFT %.0f ms, ITL %.1f ms",
		p.Quantization, p.TensorParallelism, replicas, p.GPUsPerReplica, p.BatchSize,
		p.OutputTokensPerSecondPerReplica, p.TTFTSeconds*1000, p.ITLSeconds*1000)
}

// plannerMessage turns a planner error into a sentence for a condition message.
func plannerMessage(err error) string {
	msg := err.Error()
	msg = strings.ReplaceAll(msg, "planner: ", "")
	msg = strings.ReplaceAll(msg, errInvalidSpec.Error()+": ", "")
	return sentence(msg)
}

// storedPrecision is the precision the model's weights come in, when that caps
// the plan: the spec's storedPrecision, or what a GGUF file name says
// (llama.cpp's naming: …Q4_K_M.gguf, …q8_0.gguf). "" means no cap.
func storedPrecision(m servingv1alpha1.ModelSpec) planner.Quantization {
	if p := m.StoredPrecision; p != "" && p != servingv1alpha1.QuantizationAuto {
		return planner.Quantization(p)
	}
	name := strings.ToLower(path.Base(m.URI))
	if !strings.HasSuffix(name, ".gguf") {
		return ""
	}
	for _, f := range strings.FieldsFunc(strings.TrimSuffix(name, ".gguf"), func(r rune) bool { return r == '-' || r == '.' }) {
		switch {
		case f == "q8_0" || f == "q8":
			return planner.Int8
		case strings.HasPrefix(f, "q2") || strings.HasPrefix(f, "q3") || strings.HasPrefix(f, "q4") ||
			strings.HasPrefix(f, "q5") || strings.HasPrefix(f, "q6") || strings.HasPrefix(f, "iq"):
			// Below 8 bits: the planner's nearest precision at or under them is Int4.
			return planner.Int4
		}
	}
	return ""
}
