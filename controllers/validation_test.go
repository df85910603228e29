package controllers

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/planner"
)

// celCase is one spec that a CEL rule must reject at admission, with the rule's message.
type celCase struct {
	name    string
	mutate  func(o *servingv1alpha1.MixtralDeployment)
	message string
	// expression marks a rule whose message is a messageExpression (matched as a prefix).
	expression bool
}

func tinyShape() *servingv1alpha1.ModelShape {
	return &servingv1alpha1.ModelShape{
		Layers: 2, HiddenSize: 64, IntermediateSize: 128, AttentionHeads: 4, KVHeads: 2,
		Experts: 4, ExpertsPerToken: 2, VocabSize: 32000,
	}
}

func withURI(uri string) func(o *servingv1alpha1.MixtralDeployment) {
	return func(o *servingv1alpha1.MixtralDeployment) {
		o.Spec.Model = servingv1alpha1.ModelSpec{URI: uri, Shape: tinyShape()}
	}
}

func withAutoscaling(a servingv1alpha1.AutoscalingSpec) func(o *servingv1alpha1.MixtralDeployment) {
	return func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Autoscaling = &a }
}

const podLabelsMessage = "engine.podLabels must not set the operator's labels (serving.moe-operator.io/*, app.kubernetes.io/name, instance, component, managed-by): they select the engine pods"

var celCases = []celCase{
	{
		name: "a volume with an operator's name",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.Volumes = []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		},
		message: "engine.volumes must not use the operator's volume names: model-cache, model, dshm, tmp, api-key",
	},
	{
		name: "a mount over an operator's path",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.Volumes = []corev1.Volume{{Name: "extra", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			o.Spec.Engine.VolumeMounts = []corev1.VolumeMount{{Name: "extra", MountPath: "/models/cache/x"}}
		},
		message: "engine.volumeMounts must not mount over the operator's paths: /models/cache, /models/pvc, /dev/shm, /tmp, /var/run/secrets/moe",
	},
	{
		name: "vllm on cpu",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.Runtime = servingv1alpha1.RuntimeVLLM
			o.Spec.Accelerator.Type = servingv1alpha1.AcceleratorCPU
		},
		message: "engine.runtime vllm runs on GPUs: choose a GPU accelerator.type, or the moe runtime for cpu",
	},
	{
		name: "vllm with an https model and no cache",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.Runtime = servingv1alpha1.RuntimeVLLM
			o.Spec.Model = servingv1alpha1.ModelSpec{URI: "https://example.com/m/mixtral.gguf", Shape: &servingv1alpha1.ModelShape{Preset: servingv1alpha1.PresetMixtral8x7B}}
		},
		message: "engine.runtime vllm downloads only from Hugging Face: an https:// model needs model.cache (the loader Job downloads it) or the moe runtime",
	},
	{
		name: "vllm with one file of a repository and no cache",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.Runtime = servingv1alpha1.RuntimeVLLM
			o.Spec.Model = servingv1alpha1.ModelSpec{URI: "hf://org/repo@v1/mixtral.Q4_K_M.gguf", Shape: &servingv1alpha1.ModelShape{Preset: servingv1alpha1.PresetMixtral8x7B}}
		},
		message: "engine.runtime vllm downloads whole Hugging Face repositories, not one file of one: set model.cache (the loader Job fetches the file), name the repository alone, or use the moe runtime",
	},
	{
		name: "vllm extraArgs setting what the plan sets",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.Runtime = servingv1alpha1.RuntimeVLLM
			o.Spec.Engine.ExtraArgs = []string{"-pp", "2"}
		},
		message: "engine.extraArgs must not set --tensor-parallel-size, --pipeline-parallel-size, --max-model-len, --gpu-memory-utilization or --distributed-executor-backend: with runtime vllm the operator sets them from the plan",
	},
	{
		name:    "both preset and uri",
		mutate:  func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Model.URI = "hf://mistralai/Mixtral-8x7B-v0.1" },
		message: "set exactly one of model.preset and model.uri",
	},
	{
		name:    "neither preset nor uri",
		mutate:  func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Model = servingv1alpha1.ModelSpec{ServedName: "x"} },
		message: "set exactly one of model.preset and model.uri",
	},
	{
		name: "a preset with a shape",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Model.Shape = &servingv1alpha1.ModelShape{Preset: servingv1alpha1.PresetMixtral8x7B}
		},
		message: "model.shape is only for model.uri: a preset already has its shape, so remove model.shape",
	},
	{
		name:    "a uri without a shape",
		mutate:  func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Model = servingv1alpha1.ModelSpec{URI: "hf://a/b"} },
		message: "model.uri needs model.shape so the planner can size it: set model.shape.preset to the preset with the same architecture (for example mixtral-8x7b) or give the explicit dimensions",
	},
	{name: "an unknown uri scheme", mutate: withURI("s3://bucket/model.gguf"), message: "model.uri must start with hf://, https://, pvc:// or file://"},
	{name: "an hf uri without a repository", mutate: withURI("hf://mistralai"), message: "an hf:// URI is hf://ORG/REPO[@REVISION][/FILE], for example hf://mistralai/Mixtral-8x7B-Instruct-v0.1"},
	{name: "an https uri without a path", mutate: withURI("https://example.com"), message: "an https:// URI needs a host and a path, for example https://example.com/models/mixtral.gguf"},
	{name: "a pvc uri without a path", mutate: withURI("pvc://models"), message: "a pvc:// URI is pvc://CLAIM/PATH: CLAIM is a PersistentVolumeClaim in this namespace and PATH the model file or folder on it"},
	{name: "a relative file uri", mutate: withURI("file://models/m.gguf"), message: "a file:// URI names an absolute path inside the engine container, for example file:///models/mixtral.gguf"},
	{
		name: "a shape with missing dimensions",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Model = servingv1alpha1.ModelSpec{URI: "hf://a/b", Shape: &servingv1alpha1.ModelShape{Layers: 2}}
		},
		message: "model.shape needs either preset or all of layers, hiddenSize, intermediateSize, attentionHeads, kvHeads, experts, expertsPerToken and vocabSize",
	},
	{
		name: "a shape preset with dimensions",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			s := tinyShape()
			s.Preset = servingv1alpha1.PresetMixtral8x7B
			o.Spec.Model = servingv1alpha1.ModelSpec{URI: "hf://a/b", Shape: s}
		},
		message: "model.shape.preset cannot be combined with explicit dimensions: use one or the other",
	},
	{
		name: "attention heads not a multiple of kv heads",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			s := tinyShape()
			s.KVHeads = 3
			o.Spec.Model = servingv1alpha1.ModelSpec{URI: "hf://a/b", Shape: s}
		},
		message: "model.shape.attentionHeads must be a multiple of kvHeads (grouped-query attention shares each KV head among attentionHeads/kvHeads query heads)",
	},
	{
		name: "more experts per token than experts",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			s := tinyShape()
			s.ExpertsPerToken = 8
			o.Spec.Model = servingv1alpha1.ModelSpec{URI: "hf://a/b", Shape: s}
		},
		message: "model.shape.expertsPerToken must not exceed experts",
	},
	{
		name: "a hidden size that does not split into heads",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			s := tinyShape()
			s.HiddenSize = 66
			o.Spec.Model = servingv1alpha1.ModelSpec{URI: "hf://a/b", Shape: s}
		},
		message: "model.shape.hiddenSize must be a multiple of attentionHeads, or set headDim explicitly",
	},
	{
		name: "a typical request longer than the context",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Targets.MaxContextLength = 1000
		},
		message: "targets.promptTokens + targets.outputTokens must not exceed targets.maxContextLength: a typical request must fit in the context",
	},
	{
		name:    "a zero time to first token",
		mutate:  func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Targets.TimeToFirstToken = &metav1.Duration{} },
		message: "targets.timeToFirstToken must be a positive duration such as 500ms",
	},
	{
		name:    "a zero inter-token latency",
		mutate:  func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Targets.InterTokenLatency = &metav1.Duration{} },
		message: "targets.interTokenLatency must be a positive duration such as 50ms",
	},
	{
		name: "FP8 on an accelerator without it",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Accelerator.Type = servingv1alpha1.AcceleratorA100_80GB
			o.Spec.Quantization = servingv1alpha1.QuantizationFP8
		},
		message: "quantization FP8 needs an accelerator with FP8 support (h100-80gb, h200, l40s, l4); on a100-80gb, a100-40gb and cpu choose Auto, BF16, Int8 or Int4",
	},
	{
		name:    "FP8 on the moe runtime",
		mutate:  func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Quantization = servingv1alpha1.QuantizationFP8 },
		message: "quantization FP8 needs engine.runtime vllm: the moe engine has no FP8 kernels; choose Int8, which takes the same memory",
	},
	{
		name:    "a tensor parallelism that is not a power of two up to 8",
		mutate:  func(o *servingv1alpha1.MixtralDeployment) { o.Spec.TensorParallelism = 3 },
		message: "tensorParallelism must be 0 (let the planner choose), 1, 2, 4 or 8",
	},
	{
		name: "a tensor parallelism beyond one node",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.TensorParallelism = 8
			o.Spec.Accelerator.MaxPerNode = ptr.To[int32](4)
		},
		message: "tensorParallelism must not exceed accelerator.maxPerNode: a replica's tensor-parallel group runs on one node",
	},
	{
		name: "GPUs requested through engine.resources",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.Resources.Limits = corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("2")}
		},
		message:    "engine.resources must not set nvidia.com/gpu: the operator requests the plan's GPUs per replica",
		expression: true,
	},
	{
		name: "an extra arg that the operator manages",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.ExtraArgs = []string{"--threads", "4", "--port=9000"}
		},
		message: "engine.extraArgs must not set --model, --quantization, --tensor-parallel, --port, --served-model-name, --ctx-size, --max-num-seqs or --kv-cache-tokens: the operator sets them from the spec and the plan",
	},
	{
		name: "an API key in extraArgs",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.ExtraArgs = []string{"--api-key", "sk-secret"}
		},
		message: apiKeyArgMessage,
	},
	{
		name:    "an API key in extraArgs after an equals sign",
		mutate:  func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Engine.ExtraArgs = []string{"--api-key=sk-secret"} },
		message: apiKeyArgMessage,
	},
	{
		name: "an API key file in extraArgs",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.ExtraArgs = []string{"--api-key-file=/tmp/key"}
		},
		message: apiKeyArgMessage,
	},
	{
		name: "an API key in the environment",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.Env = []corev1.EnvVar{{Name: "MOE_API_KEY", Value: "sk-secret"}}
		},
		message: "engine.env must not set MOE_API_KEY: put the key in a Secret and set engine.apiKeySecretRef (the operator mounts it as a file, so the key is in no environment variable)",
	},
	{
		name: "a pod label the operator selects by",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.PodLabels = map[string]string{"team": "a", "serving.moe-operator.io/mixtraldeployment": "other"}
		},
		message: podLabelsMessage,
	},
	{
		name: "an app.kubernetes.io label the operator sets",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.PodLabels = map[string]string{"app.kubernetes.io/name": "mine"}
		},
		message: podLabelsMessage,
	},
	{
		name: "a prometheus annotation the operator sets",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.PodAnnotations = map[string]string{"prometheus.io/port": "9090"}
		},
		message: "engine.podAnnotations must not set prometheus.io/scrape, port or path: the operator points them at the engine's /metrics",
	},
	{
		name:    "a listen address in extraArgs",
		mutate:  func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Engine.ExtraArgs = []string{"--host", "127.0.0.1"} },
		message: hostArgMessage,
	},
	{
		name:    "a listen address in extraArgs after an equals sign",
		mutate:  func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Engine.ExtraArgs = []string{"--host=::1"} },
		message: hostArgMessage,
	},
	{
		name:    "a shutdown grace longer than the pod's termination grace",
		mutate:  func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Engine.ExtraArgs = []string{"--shutdown-grace=2m"} },
		message: shutdownGraceArgMessage,
	},
	{
		name: "a shutdown grace as two arguments, longer than the pod's termination grace",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.ExtraArgs = []string{"--shutdown-grace", "41s"}
		},
		message: shutdownGraceArgMessage,
	},
	{
		name: "a shutdown grace that is not a duration",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.ExtraArgs = []string{"--shutdown-grace=soon"}
		},
		message: shutdownGraceArgMessage,
	},
	{
		name: "a shutdown grace without its value",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.ExtraArgs = []string{"--max-queue", "64", "--shutdown-grace"}
		},
		message: shutdownGraceArgMessage,
	},
	{
		name: "a startup timeout too short to load anything",
		mutate: func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.StartupTimeout = &metav1.Duration{Duration: 5 * time.Second}
		},
		message: "engine.startupTimeout must be at least 10s",
	},
	{
		name:    "autoscaling without a maximum",
		mutate:  withAutoscaling(servingv1alpha1.AutoscalingSpec{Enabled: true}),
		message: "autoscaling.maxReplicas is required when autoscaling.enabled is true",
	},
	{
		name:    "autoscaling with min above max",
		mutate:  withAutoscaling(servingv1alpha1.AutoscalingSpec{Enabled: true, MinReplicas: ptr.To[int32](5), MaxReplicas: ptr.To[int32](2)}),
		message: "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
	},
	{
		name: "a KV-cache target above 1",
		mutate: withAutoscaling(servingv1alpha1.AutoscalingSpec{
			Metric: servingv1alpha1.MetricKVCacheUsage, Target: ptr.To(resource.MustParse("2")),
		}),
		message: "autoscaling.target for KVCacheUsage is a fraction between 0 and 1, for example 800m or 0.8",
	},
	{
		name:    "a zero autoscaling target",
		mutate:  withAutoscaling(servingv1alpha1.AutoscalingSpec{Target: ptr.To(resource.MustParse("0"))}),
		message: "autoscaling.target must be positive",
	},
	{
		name:    "a name that cannot name a Service",
		mutate:  func(o *servingv1alpha1.MixtralDeployment) { o.Name = "8x7b.chat" },
		message: "metadata.name must be a DNS-1035 label (at most 63 lowercase letters, digits and '-', starting with a letter): it names the engine's Service",
	},
}

// crdRules collects every x-kubernetes-validations rule in the CRD's schema.
func crdRules(props apiextensionsv1.JSONSchemaProps, out *[]apiextensionsv1.ValidationRule) {
	*out = append(*out, props.XValidations...)
	for _, p := range props.Properties {
		crdRules(p, out)
	}
	if props.Items != nil && props.Items.Schema != nil {
		crdRules(*props.Items.Schema, out)
	}
	if props.AdditionalProperties != nil && props.AdditionalProperties.Schema != nil {
		crdRules(*props.AdditionalProperties.Schema, out)
	}
}

// TestCELCasesCoverEveryRule fails when a CEL rule is added without a case below.
func TestCELCasesCoverEveryRule(t *testing.T) {
	var rules []apiextensionsv1.ValidationRule
	crdRules(*loadCRD(t).Spec.Versions[0].Schema.OpenAPIV3Schema, &rules)
	covered := map[string]bool{}
	expressions := 0
	for _, c := range celCases {
		covered[c.message] = true
		if c.expression {
			expressions++
		}
	}
	for _, c := range celTransitionCases {
		covered[c.message] = true
	}
	ruleExpressions := 0
	for _, r := range rules {
		if r.MessageExpression != "" {
			ruleExpressions++
			continue
		}
		if !covered[r.Message] {
			t.Errorf("no test case for the CEL rule %q (message %q)", r.Rule, r.Message)
		}
	}
	if expressions < ruleExpressions {
		t.Errorf("%d rules use messageExpression but only %d cases cover one", ruleExpressions, expressions)
	}
	if len(rules) < 25 {
		t.Errorf("found only %d CEL rules; did the CRD path change?", len(rules))
	}
}

// TestEnvtestCELRulesRejectAtAdmission creates each invalid spec against the real API
// server (dry run) and expects the rule's own message.
func TestEnvtestCELRulesRejectAtAdmission(t *testing.T) {
	requireEnvtest(t)
	ns := newNamespace(t)
	base := loadSample(t, h100Sample, ns)
	g := NewWithT(t)
	g.Expect(k8sClient.Create(context.Background(), base.DeepCopy(), client.DryRunAll)).To(Succeed(), "the base object is valid")
	for _, tc := range celCases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			obj := base.DeepCopy()
			tc.mutate(obj)
			err := k8sClient.Create(context.Background(), obj, client.DryRunAll)
			g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
			g.Expect(err.Error()).To(ContainSubstring(tc.message))
		})
	}
}

// TestEnvtestFP8RuleMatchesThePlanner admits FP8 exactly where the planner plans it: on the
// accelerators whose catalog entry has FP8 support, with a runtime that has FP8 kernels.
func TestEnvtestFP8RuleMatchesThePlanner(t *testing.T) {
	requireEnvtest(t)
	ns := newNamespace(t)
	for _, name := range planner.AcceleratorNames() {
		for _, runtime := range []servingv1alpha1.EngineRuntime{servingv1alpha1.RuntimeMoE, servingv1alpha1.RuntimeVLLM} {
			if runtime == servingv1alpha1.RuntimeVLLM && name == string(servingv1alpha1.AcceleratorCPU) {
				continue // vllm runs on GPUs, a rule of its own
			}
			t.Run(name+"/"+string(runtime), func(t *testing.T) {
				g := NewWithT(t)
				acc, err := planner.AcceleratorByName(name)
				g.Expect(err).NotTo(HaveOccurred())
				rt, err := planner.RuntimeByName(string(runtime))
				g.Expect(err).NotTo(HaveOccurred())
				obj := loadSample(t, h100Sample, ns)
				obj.Spec.Accelerator.Type = servingv1alpha1.AcceleratorType(name)
				obj.Spec.Engine.Runtime = runtime
				obj.Spec.Quantization = servingv1alpha1.QuantizationFP8
				err = k8sClient.Create(context.Background(), obj, client.DryRunAll)
				if acc.SupportsQuantization(planner.FP8) && slices.Contains(rt.Quantizations, planner.FP8) {
					g.Expect(err).NotTo(HaveOccurred())
				} else {
					g.Expect(err).To(HaveOccurred())
					g.Expect(strings.Contains(err.Error(), "quantization FP8 needs")).To(BeTrue(), err.Error())
				}
			})
		}
	}
}
