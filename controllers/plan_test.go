package controllers

import (
	"errors"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/planner"
)

var errTest = errors.New("test: something failed")

func TestPlanRequest(t *testing.T) {
	g := NewWithT(t)
	obj := h100Preset()
	obj.Spec.Quantization = servingv1alpha1.QuantizationInt8
	obj.Spec.TensorParallelism = 2
	obj.Spec.Accelerator.MaxPerNode = ptr.To[int32](4)
	obj.Spec.Targets.MaxContextLength = 16384

	req, err := planRequest(obj.Spec)
	g.Expect(err).NotTo(HaveOccurred())
	preset, _ := planner.ModelPreset("mixtral-8x7b-instruct")
	g.Expect(req.Model).To(Equal(preset))
	g.Expect(req.Accelerator.Name).To(Equal("h100-80gb"))
	g.Expect(req.Accelerator.GPUsPerNode).To(Equal(4), "maxPerNode bounds the tensor-parallel search")
	g.Expect(req.Targets).To(Equal(planner.Targets{
		OutputTokensPerSecond: 5000, TTFT: 500 * time.Millisecond, ITL: 50 * time.Millisecond,
		PromptTokens: 1000, OutputTokens: 250, Context: 16384,
	}))
	g.Expect(req.Overrides).To(Equal(planner.Overrides{Quantization: planner.Int8, TensorParallelism: 2}))
}

func TestModelShape(t *testing.T) {
	tests := []struct {
		name    string
		model   servingv1alpha1.ModelSpec
		want    func(g Gomega, m planner.Model)
		wantErr bool
	}{
		{
			name:  "a uri planned with a preset's shape gets that shape",
			model: servingv1alpha1.ModelSpec{URI: "hf://a/b", Shape: &servingv1alpha1.ModelShape{Preset: servingv1alpha1.PresetMixtral8x22B}},
			want: func(g Gomega, m planner.Model) {
				p, _ := planner.ModelPreset("mixtral-8x22b")
				g.Expect(m).To(Equal(p))
			},
		},
		{
			name: "explicit dimensions default headDim and the context length",
			model: servingv1alpha1.ModelSpec{URI: "file:///m.gguf", Shape: &servingv1alpha1.ModelShape{
				Layers: 2, HiddenSize: 64, IntermediateSize: 128, AttentionHeads: 4, KVHeads: 2, Experts: 4, ExpertsPerToken: 2, VocabSize: 32000,
			}},
			want: func(g Gomega, m planner.Model) {
				g.Expect(m).To(Equal(planner.Model{
					HiddenSize: 64, Layers: 2, Heads: 4, KVHeads: 2, HeadDim: 16, IntermediateSize: 128,
					Experts: 4, ExpertsUsed: 2, VocabSize: 32000, ContextLength: 32768,
				}))
			},
		},
		{name: "a uri without a shape cannot be planned", model: servingv1alpha1.ModelSpec{URI: "hf://a/b"}, wantErr: true},
		{
			name: "a shape the planner rejects is an invalid spec",
			model: servingv1alpha1.ModelSpec{URI: "hf://a/b", Shape: &servingv1alpha1.ModelShape{
				Layers: 2, HiddenSize: 64, IntermediateSize: 128, AttentionHeads: 4, KVHeads: 3, Experts: 4, ExpertsPerToken: 2, VocabSize: 10,
			}},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			m, err := modelShape(tt.model)
			if tt.wantErr {
				g.Expect(err).To(MatchError(errInvalidSpec))
				return
			}
			g.Expect(err).NotTo(HaveOccurred())
			tt.want(g, m)
		})
	}
}

func TestPlannerMessage(t *testing.T) {
	g := NewWithT(t)
	_, err := planner.Solve(planner.Request{
		Model:       mustPreset("mixtral-8x22b"),
		Accelerator: mustAccelerator("l4"),
		Overrides:   planner.Overrides{Quantization: planner.BF16, TensorParallelism: 1},
	})
	g.Expect(err).To(MatchError(planner.ErrInfeasible))
	msg := plannerMessage(err)
	g.Expect(msg).NotTo(ContainSubstring("planner:"))
	g.Expect(msg).To(MatchRegexp(`^[A-Z].*\.$`), "a sentence")
}

func TestStatusPlanKeepsThePlannerShape(t *testing.T) {
	g := NewWithT(t)
	res, err := planner.Solve(planner.Request{Model: mustPreset("mixtral-8x7b"), Accelerator: mustAccelerator("h100-80gb")})
	g.Expect(err).NotTo(HaveOccurred())
	// status.plan and `moe plan --json` share one JSON shape.
	g.Expect(toJSONMap(t, statusPlan(res.Plan))).To(Equal(toJSONMap(t, res.Plan)))
	_ = metav1.Duration{}
}

func mustPreset(name string) planner.Model {
	m, err := planner.ModelPreset(name)
	if err != nil {
		panic(err)
	}
	return m
}

func mustAccelerator(name string) planner.Accelerator {
	a, err := planner.AcceleratorByName(name)
	if err != nil {
		panic(err)
	}
	return a
}

func TestReplicasFromPlan(t *testing.T) {
	plan := servingv1alpha1.Plan{Replicas: 3}
	annotated := func(v string) map[string]string {
		return map[string]string{servingv1alpha1.AnnotationPlannedReplicas: v}
	}
	tests := []struct {
		name        string
		replicas    *int32
		annotations map[string]string
		autoscaling *servingv1alpha1.AutoscalingSpec
		want        int32
		wantWrite   bool
	}{
		{name: "unset takes the plan's count", want: 3, wantWrite: true},
		{name: "a value the operator wrote follows a new plan", replicas: ptr.To[int32](2), annotations: annotated("2"), want: 3, wantWrite: true},
		{name: "a value the operator wrote that matches the plan is left alone", replicas: ptr.To[int32](3), annotations: annotated("3")},
		{name: "a value someone else wrote is never overwritten", replicas: ptr.To[int32](5), annotations: annotated("2")},
		{name: "a value set without the annotation belongs to the user", replicas: ptr.To[int32](1)},
		{name: "scaled to zero by a user stays at zero", replicas: ptr.To[int32](0), annotations: annotated("3")},
		{
			name: "with the autoscaler, unset starts within its bounds", want: 4, wantWrite: true,
			autoscaling: &servingv1alpha1.AutoscalingSpec{Enabled: true, MinReplicas: ptr.To[int32](4), MaxReplicas: ptr.To[int32](6)},
		},
		{
			name: "with the autoscaler, a set value is the autoscaler's", replicas: ptr.To[int32](2), annotations: annotated("2"),
			autoscaling: &servingv1alpha1.AutoscalingSpec{Enabled: true, MinReplicas: ptr.To[int32](1), MaxReplicas: ptr.To[int32](6)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			obj := h100Preset()
			obj.Spec.Replicas, obj.Annotations, obj.Spec.Autoscaling = tt.replicas, tt.annotations, tt.autoscaling
			got, write := replicasFromPlan(obj, plan)
			g.Expect(write).To(Equal(tt.wantWrite))
			if tt.wantWrite {
				g.Expect(got).To(Equal(tt.want))
			}
		})
	}
}

func TestStoredPrecisionCapsThePlan(t *testing.T) {
	tests := []struct {
		name  string
		model servingv1alpha1.ModelSpec
		want  planner.Quantization
	}{
		{"a preset is full precision", servingv1alpha1.ModelSpec{Preset: servingv1alpha1.PresetMixtral8x7B}, ""},
		{"a Q4_K_M GGUF is Int4", servingv1alpha1.ModelSpec{URI: "hf://TheBloke/Mixtral-8x7B-v0.1-GGUF/mixtral-8x7b-v0.1.Q4_K_M.gguf"}, planner.Int4},
		{"a Q6_K GGUF can only go down to Int4", servingv1alpha1.ModelSpec{URI: "https://example.com/m/mixtral.Q6_K.gguf"}, planner.Int4},
		{"a q8_0 GGUF is Int8", servingv1alpha1.ModelSpec{URI: "pvc://models/mixtral-q8_0.gguf"}, planner.Int8},
		{"an F16 GGUF is not capped", servingv1alpha1.ModelSpec{URI: "file:///models/mixtral-f16.gguf"}, ""},
		{"a safetensors repository is not capped", servingv1alpha1.ModelSpec{URI: "hf://mistralai/Mixtral-8x7B-v0.1"}, ""},
		{"the spec's storedPrecision wins", servingv1alpha1.ModelSpec{URI: "hf://org/repo", StoredPrecision: servingv1alpha1.QuantizationInt8}, planner.Int8},
		{"Auto infers", servingv1alpha1.ModelSpec{URI: "https://h/x.Q4_0.gguf", StoredPrecision: servingv1alpha1.QuantizationAuto}, planner.Int4},
	}
	for _, tt := range tests {
		if got := storedPrecision(tt.model); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestPlanRequestCarriesTheAutoscalersMaximum(t *testing.T) {
	spec := servingv1alpha1.MixtralDeploymentSpec{
		Model:       servingv1alpha1.ModelSpec{Preset: servingv1alpha1.PresetMixtral8x7B},
		Accelerator: servingv1alpha1.AcceleratorSpec{Type: "h100-80gb"},
		Autoscaling: &servingv1alpha1.AutoscalingSpec{Enabled: true, MaxReplicas: ptr.To[int32](6)},
	}
	req, err := planRequest(spec)
	if err != nil {
		t.Fatal(err)
	}
	if req.MaxReplicas != 6 {
		t.Fatalf("MaxReplicas %d, want 6", req.MaxReplicas)
	}
	spec.Autoscaling.Enabled = false
	if req, _ = planRequest(spec); req.MaxReplicas != 0 {
		t.Fatalf("with autoscaling off MaxReplicas %d, want none", req.MaxReplicas)
	}
}
