package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ModelPreset names a model whose shape (and default source) the operator knows.
// +kubebuilder:validation:Enum=mixtral-8x7b;mixtral-8x7b-instruct;mixtral-8x22b;mixtral-8x22b-instruct
type ModelPreset string

// Known model presets.
const (
	PresetMixtral8x7B          ModelPreset = "mixtral-8x7b"
	PresetMixtral8x7BInstruct  ModelPreset = "mixtral-8x7b-instruct"
	PresetMixtral8x22B         ModelPreset = "mixtral-8x22b"
	PresetMixtral8x22BInstruct ModelPreset = "mixtral-8x22b-instruct"
)

// AcceleratorType is a key of the planner's accelerator catalog.
// +kubebuilder:validation:Enum=h100-80gb;h200;a100-80gb;a100-40gb;l40s;l4;cpu
type AcceleratorType string

// Accelerator catalog keys.
const (
	AcceleratorH100_80GB AcceleratorType = "h100-80gb"
	AcceleratorH200      AcceleratorType = "h200"
	AcceleratorA100_80GB AcceleratorType = "a100-80gb"
	AcceleratorA100_40GB AcceleratorType = "a100-40gb"
	AcceleratorL40S      AcceleratorType = "l40s"
	AcceleratorL4        AcceleratorType = "l4"
	// AcceleratorCPU runs the engine on CPU cores; pods request no GPU resource.
	AcceleratorCPU AcceleratorType = "cpu"
)

// Quantization is the weight precision the engine serves with.
// +kubebuilder:validation:Enum=Auto;BF16;FP8;Int8;Int4
type Quantization string

// Quantization choices. Auto lets the planner choose.
const (
	QuantizationAuto Quantization = "Auto"
	QuantizationBF16 Quantization = "BF16"
	QuantizationFP8  Quantization = "FP8"
	QuantizationInt8 Quantization = "Int8"
	QuantizationInt4 Quantization = "Int4"
)

// EngineRuntime is the inference engine the pods run.
// +kubebuilder:validation:Enum=moe;vllm
type EngineRuntime string

// Engine runtimes.
const (
	// RuntimeMoE is this project's engine (`moe serve`): GGUF and safetensors, every
	// accelerator including cpu, one node per replica.
	RuntimeMoE EngineRuntime = "moe"
	// RuntimeVLLM is the vLLM OpenAI-compatible server: GPUs only, BF16 or FP8 from
	// full-precision weights, and replicas that span nodes through a LeaderWorkerSet.
	RuntimeVLLM EngineRuntime = "vllm"
)

// AutoscalingMetric is the load signal the built-in autoscaler follows.
// +kubebuilder:validation:Enum=Concurrency;QueueDepth;KVCacheUsage;OutputTokensPerSecond
type AutoscalingMetric string

// Autoscaling metrics, read from the engines' vLLM-named Prometheus metrics.
const (
	// MetricConcurrency is running plus waiting requests per replica.
	MetricConcurrency AutoscalingMetric = "Concurrency"
	// MetricQueueDepth is waiting requests per replica.
	MetricQueueDepth AutoscalingMetric = "QueueDepth"
	// MetricKVCacheUsage is the KV-cache fill, 0 to 1.
	MetricKVCacheUsage AutoscalingMetric = "KVCacheUsage"
	// MetricOutputTokensPerSecond is generated tokens per second per replica.
	MetricOutputTokensPerSecond AutoscalingMetric = "OutputTokensPerSecond"
)

// ModelSpec says which model to serve: a preset, or a URI with the shape the planner sizes it by.
//
// +kubebuilder:validation:XValidation:rule="has(self.preset) != has(self.uri)",message="set exactly one of model.preset and model.uri"
// +kubebuilder:validation:XValidation:rule="!has(self.preset) || !has(self.shape)",message="model.shape is only for model.uri: a preset already has its shape, so remove model.shape"
// +kubebuilder:validation:XValidation:rule="!has(self.cache) || !has(self.uri) || self.uri.startsWith('hf://') || self.uri.startsWith('https://')",message="model.cache holds downloaded models (a preset, an hf:// or an https:// URI): a pvc:// or file:// model is read where it is, so remove model.cache"
// +kubebuilder:validation:XValidation:rule="!has(self.uri) || has(self.shape)",message="model.uri needs model.shape so the planner can size it: set model.shape.preset to the preset with the same architecture (for example mixtral-8x7b) or give the explicit dimensions"
type ModelSpec struct {
	// Preset serves a known model from its default source (the upstream Hugging Face
	// repository) with its known shape.
	// +optional
	Preset ModelPreset `json:"preset,omitempty"`

	// URI is where the model lives:
	//   hf://ORG/REPO[@REVISION][/FILE]  a Hugging Face repository (or one file in it);
	//   https://HOST/PATH                 any file served over HTTPS;
	//   pvc://CLAIM/PATH                  a file or folder on a PersistentVolumeClaim in the same
	//                                     namespace, mounted read-only into the pods;
	//   file:///PATH                      a path inside the engine container (an image-baked model).
	// A URI needs a shape.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^(hf|https|pvc|file)://')",message="model.uri must start with hf://, https://, pvc:// or file://"
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('hf://') || self.matches('^hf://[A-Za-z0-9][-A-Za-z0-9_.]*/[A-Za-z0-9][-A-Za-z0-9_.]*(@[^/@]+)?(/[^@]+)?$')",message="an hf:// URI is hf://ORG/REPO[@REVISION][/FILE], for example hf://mistralai/Mixtral-8x7B-Instruct-v0.1"
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('https://') || self.matches('^https://[^/]+/.+$')",message="an https:// URI needs a host and a path, for example https://example.com/models/mixtral.gguf"
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+$')",message="a pvc:// URI is pvc://CLAIM/PATH: CLAIM is a PersistentVolumeClaim in this namespace and PATH the model file or folder on it"
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('file://') || self.matches('^file:///[^/].*$')",message="a file:// URI names an absolute path inside the engine container, for example file:///models/mixtral.gguf"
	URI string `json:"uri,omitempty"`

	// Shape is the model's architecture, which the planner sizes memory and speed from.
	// Required with uri, forbidden with preset.
	// +optional
	Shape *ModelShape `json:"shape,omitempty"`

	// ServedName is the model name clients pass in OpenAI requests.
	// Defaults to the preset name, or to the MixtralDeployment's name for a uri.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][-A-Za-z0-9_.:/]*$`
	ServedName string `json:"servedName,omitempty"`

	// StoredPrecision is the precision the model's weights are stored in when they come
	// already quantized: a Q4_K_M or Q4_0 GGUF file is Int4, a Q8_0 one Int8. The engine only
	// converts weights downwards, so the planner never chooses a higher precision than this.
	// Empty (or Auto) infers it from a GGUF file name (…Q4_K_M.gguf, …Q8_0.gguf) and
	// otherwise assumes full-precision weights.
	// +optional
	StoredPrecision Quantization `json:"storedPrecision,omitempty"`

	// TokenSecretRef names a Secret key holding an access token for the model source
	// (a Hugging Face token for gated hf:// repositories). It reaches the engine as HF_TOKEN.
	// +optional
	TokenSecretRef *corev1.SecretKeySelector `json:"tokenSecretRef,omitempty"`

	// Cache asks for a PersistentVolumeClaim that holds the downloaded model (presets, hf://
	// and https:// URIs): a loader Job fills it once, and every replica mounts it read-only.
	// Without it, each replica downloads the model into an emptyDir of its own.
	// +optional
	Cache *ModelCacheSpec `json:"cache,omitempty"`
}

// ModelShape is a model's architecture: either a preset's shape, or explicit dimensions.
//
// +kubebuilder:validation:XValidation:rule="has(self.preset) || (has(self.layers) && has(self.hiddenSize) && has(self.intermediateSize) && has(self.attentionHeads) && has(self.kvHeads) && has(self.experts) && has(self.expertsPerToken) && has(self.vocabSize))",message="model.shape needs either preset or all of layers, hiddenSize, intermediateSize, attentionHeads, kvHeads, experts, expertsPerToken and vocabSize"
// +kubebuilder:validation:XValidation:rule="!has(self.preset) || !(has(self.layers) || has(self.hiddenSize) || has(self.intermediateSize) || has(self.attentionHeads) || has(self.kvHeads) || has(self.headDim) || has(self.experts) || has(self.expertsPerToken) || has(self.vocabSize) || has(self.contextLength))",message="model.shape.preset cannot be combined with explicit dimensions: use one or the other"
// +kubebuilder:validation:XValidation:rule="!has(self.attentionHeads) || !has(self.kvHeads) || self.attentionHeads % self.kvHeads == 0",message="model.shape.attentionHeads must be a multiple of kvHeads (grouped-query attention shares each KV head among attentionHeads/kvHeads query heads)"
// +kubebuilder:validation:XValidation:rule="!has(self.experts) || !has(self.expertsPerToken) || self.expertsPerToken <= self.experts",message="model.shape.expertsPerToken must not exceed experts"
// +kubebuilder:validation:XValidation:rule="has(self.headDim) || !has(self.hiddenSize) || !has(self.attentionHeads) || self.hiddenSize % self.attentionHeads == 0",message="model.shape.hiddenSize must be a multiple of attentionHeads, or set headDim explicitly"
type ModelShape struct {
	// Preset plans a uri model with a preset's shape (for example a GGUF conversion of
	// Mixtral-8x7B-Instruct).
	// +optional
	Preset ModelPreset `json:"preset,omitempty"`

	// Layers is the number of transformer blocks.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	Layers int32 `json:"layers,omitempty"`

	// HiddenSize is the embedding width.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65536
	HiddenSize int32 `json:"hiddenSize,omitempty"`

	// IntermediateSize is each expert's feed-forward width.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1048576
	IntermediateSize int32 `json:"intermediateSize,omitempty"`

	// AttentionHeads is the number of query heads.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	AttentionHeads int32 `json:"attentionHeads,omitempty"`

	// KVHeads is the number of key/value heads (grouped-query attention).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	KVHeads int32 `json:"kvHeads,omitempty"`

	// HeadDim is the width of one attention head. Defaults to hiddenSize/attentionHeads.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4096
	HeadDim int32 `json:"headDim,omitempty"`

	// Experts is the number of experts in each MoE layer.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	Experts int32 `json:"experts,omitempty"`

	// ExpertsPerToken is how many experts the router selects for each token (top-k).
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	ExpertsPerToken int32 `json:"expertsPerToken,omitempty"`

	// VocabSize is the number of tokens in the vocabulary.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=4194304
	VocabSize int32 `json:"vocabSize,omitempty"`

	// ContextLength is the longest context the model was trained for. Defaults to 32768.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16777216
	ContextLength int32 `json:"contextLength,omitempty"`
}

// AcceleratorSpec says what hardware each replica runs on.
type AcceleratorSpec struct {
	// Type is the accelerator catalog key the planner sizes for. It also selects nodes:
	// pods require a node whose nvidia.com/gpu.product label (set by NVIDIA GPU feature
	// discovery) names that GPU, unless nodeSelector is given.
	Type AcceleratorType `json:"type"`

	// ResourceName is the extended resource that GPUs are requested through.
	// Pods also tolerate the NoSchedule taint with this key.
	// +optional
	// +kubebuilder:default="nvidia.com/gpu"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`
	ResourceName corev1.ResourceName `json:"resourceName,omitempty"`

	// MaxPerNode is the number of accelerators a node offers. A replica's tensor-parallel
	// group must fit on one node, so it bounds the tensor-parallel degree. Defaults to the
	// catalog's GPUs per node.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=64
	MaxPerNode *int32 `json:"maxPerNode,omitempty"`

	// NodeSelector, when set, replaces the default node selector on the GPU product label.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations are added to the pods, after the toleration for the GPU taint.
	// +optional
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
}

// TargetsSpec is what the user needs from the deployment as a whole.
//
// +kubebuilder:validation:XValidation:rule="!has(self.maxContextLength) || self.promptTokens + self.outputTokens <= self.maxContextLength",message="targets.promptTokens + targets.outputTokens must not exceed targets.maxContextLength: a typical request must fit in the context"
type TargetsSpec struct {
	// OutputTokensPerSecond is the aggregate generation rate across all replicas.
	// Unset: one replica of the cheapest feasible configuration.
	// +optional
	// +kubebuilder:validation:Minimum=1
	OutputTokensPerSecond *int64 `json:"outputTokensPerSecond,omitempty"`

	// TimeToFirstToken bounds the predicted latency to the first token of a typical request
	// (a Go duration such as 500ms). Unset: no bound.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="targets.timeToFirstToken must be a positive duration such as 500ms"
	TimeToFirstToken *metav1.Duration `json:"timeToFirstToken,omitempty"`

	// InterTokenLatency bounds the predicted time between output tokens of one stream
	// (a Go duration such as 50ms). Unset: no bound.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="targets.interTokenLatency must be a positive duration such as 50ms"
	InterTokenLatency *metav1.Duration `json:"interTokenLatency,omitempty"`

	// PromptTokens is the typical request's prompt length.
	// +optional
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16777216
	PromptTokens int32 `json:"promptTokens,omitempty"`

	// OutputTokens is the typical request's output length.
	// +optional
	// +kubebuilder:default=250
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16777216
	OutputTokens int32 `json:"outputTokens,omitempty"`

	// MaxContextLength is the longest context (prompt + output) one request may use; the
	// engine's --ctx-size. Defaults to the model's context length.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16777216
	MaxContextLength int32 `json:"maxContextLength,omitempty"`
}

// AutoscalingSpec configures the operator's built-in autoscaler. With enabled false, the
// operator never writes spec.replicas, so an external HPA or KEDA ScaledObject may own it
// through the scale subresource.
//
// +kubebuilder:validation:XValidation:rule="!self.enabled || has(self.maxReplicas)",message="autoscaling.maxReplicas is required when autoscaling.enabled is true"
// +kubebuilder:validation:XValidation:rule="!has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",message="autoscaling.minReplicas must not exceed autoscaling.maxReplicas"
// +kubebuilder:validation:XValidation:rule="self.metric != 'KVCacheUsage' || !has(self.target) || quantity(string(self.target)).compareTo(quantity('1')) <= 0",message="autoscaling.target for KVCacheUsage is a fraction between 0 and 1, for example 800m or 0.8"
type AutoscalingSpec struct {
	// Enabled turns the built-in autoscaler on.
	// +optional
	// +kubebuilder:default=false
	Enabled bool `json:"enabled,omitempty"`

	// MinReplicas is the fewest replicas the autoscaler keeps. 0 lets an idle model scale
	// to zero after scaleToZeroAfter; `moe gateway` holds the requests that arrive for it
	// and wakes it (see docs/gateway.md). Without the gateway, a model at zero replicas
	// comes back only when someone scales it.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=0
	MinReplicas *int32 `json:"minReplicas,omitempty"`

	// MaxReplicas is the most replicas the autoscaler creates.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxReplicas *int32 `json:"maxReplicas,omitempty"`

	// Metric is the per-replica load signal to hold at target.
	// +optional
	// +kubebuilder:default=Concurrency
	Metric AutoscalingMetric `json:"metric,omitempty"`

	// Target is the per-replica value of metric to hold. Defaults: the plan's batch size for
	// Concurrency, 1 for QueueDepth, 0.8 for KVCacheUsage, and the plan's predicted
	// per-replica throughput for OutputTokensPerSecond.
	// +optional
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="autoscaling.target must be positive"
	Target *resource.Quantity `json:"target,omitempty"`

	// ScaleUpWindow is how long every reading of the load must have asked for more replicas
	// before spec.replicas goes up (at most doubling in one step).
	// +optional
	// +kubebuilder:default="30s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$`
	ScaleUpWindow *metav1.Duration `json:"scaleUpWindow,omitempty"`

	// ScaleDownWindow is how long every reading of the load must have asked for fewer
	// replicas before spec.replicas goes down.
	// +optional
	// +kubebuilder:default="300s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$`
	ScaleDownWindow *metav1.Duration `json:"scaleDownWindow,omitempty"`

	// ScaleToZeroAfter, with minReplicas 0, is how long the replicas must have had no
	// request (none running, none waiting, no token counted, none held by the gateway)
	// before spec.replicas goes to 0.
	// +optional
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$`
	ScaleToZeroAfter *metav1.Duration `json:"scaleToZeroAfter,omitempty"`
}

// EngineSpec tunes the engine container (`moe serve`).
//
// The rules on extraArgs keep what the operator owns out of the user's hands: the flags it
// sets from the spec and the plan, the API key (which on a command line anyone who can read
// the pod would see), the listen address, and a --shutdown-grace the pod's termination
// grace period (45 s, of which the preStop sleep takes 5) could not honour.
//
// +kubebuilder:validation:XValidation:rule="!has(self.extraArgs) || self.extraArgs.all(a, !['--model', '--quantization', '--tensor-parallel', '--port', '--served-model-name', '--ctx-size', '--max-num-seqs', '--kv-cache-tokens'].exists(f, a == f || a.startsWith(f + '=')))",message="engine.extraArgs must not set --model, --quantization, --tensor-parallel, --port, --served-model-name, --ctx-size, --max-num-seqs or --kv-cache-tokens: the operator sets them from the spec and the plan"
// +kubebuilder:validation:XValidation:rule="!has(self.extraArgs) || self.extraArgs.all(a, !['--api-key', '--api-key-file'].exists(f, a == f || a.startsWith(f + '=')))",message="engine.extraArgs must not set --api-key or --api-key-file: a key on the command line is visible to everyone who can read the pod. Put the key in a Secret and set engine.apiKeySecretRef (the operator mounts it as a file)"
// +kubebuilder:validation:XValidation:rule="!has(self.env) || self.env.all(e, e.name != 'MOE_API_KEY')",message="engine.env must not set MOE_API_KEY: put the key in a Secret and set engine.apiKeySecretRef (the operator mounts it as a file, so the key is in no environment variable)"
// +kubebuilder:validation:XValidation:rule="!has(self.extraArgs) || self.extraArgs.all(a, a != '--host' && !a.startsWith('--host='))",message="engine.extraArgs must not set --host: the operator owns the listen address (all interfaces, so that the probes, the Service and the autoscaler reach the engine)"
// +kubebuilder:validation:XValidation:rule="!has(self.extraArgs) || (self.extraArgs.all(a, !a.startsWith('--shutdown-grace=') || a == '--shutdown-grace=0' || (a.substring(17).matches('^([0-9]+([.][0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$') && duration(a.substring(17)) <= duration('40s'))) && self.extraArgs.all(i, a, a != '--shutdown-grace' || (i + 1 < size(self.extraArgs) && (self.extraArgs[i + 1] == '0' || (self.extraArgs[i + 1].matches('^([0-9]+([.][0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$') && duration(self.extraArgs[i + 1]) <= duration('40s'))))))",message="engine.extraArgs --shutdown-grace must be a duration of at most 40s, for example 30s: the pod's termination grace period is 45s and the preStop sleep before SIGTERM takes 5s, so a longer grace would be cut off by SIGKILL"
// +kubebuilder:validation:XValidation:rule="!has(self.extraArgs) || !has(self.runtime) || self.runtime != 'vllm' || self.extraArgs.all(a, !['--tensor-parallel-size', '-tp', '--pipeline-parallel-size', '-pp', '--max-model-len', '--gpu-memory-utilization', '--distributed-executor-backend'].exists(f, a == f || a.startsWith(f + '=')))",message="engine.extraArgs must not set --tensor-parallel-size, --pipeline-parallel-size, --max-model-len, --gpu-memory-utilization or --distributed-executor-backend: with runtime vllm the operator sets them from the plan"
type EngineSpec struct {
	// Runtime is the inference engine: moe (this project's engine, the default) or vllm
	// (the vLLM OpenAI server). The planner sizes the plan with the runtime's own profile.
	// With vllm, a plan that needs more GPUs than one node has runs each replica across
	// nodes as a LeaderWorkerSet (the LWS controller must be installed); see
	// docs/runtimes.md.
	// +optional
	// +kubebuilder:default=moe
	Runtime EngineRuntime `json:"runtime,omitempty"`

	// Image is the engine image. Defaults to the operator's --engine-image for the moe
	// runtime and to its --vllm-image for vllm.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image,omitempty"`

	// ImagePullPolicy is the engine container's pull policy.
	// +optional
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// ImagePullSecrets are used to pull the engine image.
	// +optional
	// +listType=atomic
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// Resources adds to or overrides the CPU and memory the operator derives from the plan.
	// The accelerator resource itself always comes from the plan.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`

	// ExtraArgs are appended to the engine's command line.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=1024
	ExtraArgs []string `json:"extraArgs,omitempty"`

	// APIKeySecretRef names a Secret in the MixtralDeployment's namespace whose key holds
	// the API key clients must send ("Authorization: Bearer KEY") on the OpenAI API (/v1/
	// paths). The operator mounts that one key read-only into the engine pods and passes its
	// path with --api-key-file, so the key appears in no argument and no environment
	// variable. /health, /ready and /metrics stay open for the probes and the autoscaler.
	// Changing the reference rolls the pods; changing the Secret's content takes effect
	// when the pods restart (kubectl rollout restart deployment NAME).
	// +optional
	APIKeySecretRef *APIKeySecretReference `json:"apiKeySecretRef,omitempty"`

	// Env adds environment variables to the engine container.
	// +optional
	// +listType=atomic
	Env []corev1.EnvVar `json:"env,omitempty"`

	// Port is the engine's HTTP port (OpenAI API, /health, /ready, /metrics).
	// +optional
	// +kubebuilder:default=8000
	// +kubebuilder:validation:Minimum=1024
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`

	// StartupTimeout is how long a pod may take to load the model before it is restarted.
	// Defaults to a budget derived from the model's size.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|μs|ms|s|m|h))+$`
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('10s')",message="engine.startupTimeout must be at least 10s"
	StartupTimeout *metav1.Duration `json:"startupTimeout,omitempty"`

	// PodLabels are added to the engine pods' labels. The operator's own keys
	// (serving.moe-operator.io/* and the app.kubernetes.io/ keys it sets) are refused.
	// Changing them rolls the pods.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('serving.moe-operator.io/') && !(k in ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/component', 'app.kubernetes.io/managed-by']))",message="engine.podLabels must not set the operator's labels (serving.moe-operator.io/*, app.kubernetes.io/name, instance, component, managed-by): they select the engine pods"
	PodLabels map[string]string `json:"podLabels,omitempty"`

	// PodAnnotations are added to the engine pods' annotations; the operator's
	// prometheus.io/scrape, port and path are refused. Changing them rolls the pods.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self.all(k, !(k in ['prometheus.io/scrape', 'prometheus.io/port', 'prometheus.io/path']))",message="engine.podAnnotations must not set prometheus.io/scrape, port or path: the operator points them at the engine's /metrics"
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`

	// Affinity is the engine pods' affinity. With a ReadWriteOnce model cache the
	// operator adds its own required pod affinity term (the replicas share the claim's
	// node) to these.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// TopologySpreadConstraints spread the engine pods, for example across zones. A
	// constraint without a labelSelector selects this MixtralDeployment's pods.
	// +optional
	// +listType=atomic
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`

	// PriorityClassName is the engine pods' PriorityClass.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// ServiceAccountName runs the engine pods as this ServiceAccount (for workload
	// identity, say). Its API token is still not mounted: the engine never calls the
	// Kubernetes API.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// Volumes are added to the engine pods, for example a ConfigMap of chat templates or
	// a claim of LoRA adapters. The operator's own names (model-cache, model, dshm, tmp,
	// api-key) are refused.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="self.all(v, !(v.name in ['model-cache', 'model', 'dshm', 'tmp', 'api-key']))",message="engine.volumes must not use the operator's volume names: model-cache, model, dshm, tmp, api-key"
	Volumes []corev1.Volume `json:"volumes,omitempty"`

	// VolumeMounts mount engine.volumes into the engine container. The operator's mount
	// points (/models/cache, /models/pvc, /dev/shm, /tmp, /var/run/secrets/moe) are refused.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="self.all(m, !(m.mountPath in ['/models/cache', '/models/pvc', '/dev/shm', '/tmp', '/var/run/secrets/moe']) && !m.mountPath.startsWith('/models/cache/') && !m.mountPath.startsWith('/models/pvc/') && !m.mountPath.startsWith('/var/run/secrets/moe/'))",message="engine.volumeMounts must not mount over the operator's paths: /models/cache, /models/pvc, /dev/shm, /tmp, /var/run/secrets/moe"
	VolumeMounts []corev1.VolumeMount `json:"volumeMounts,omitempty"`

	// RuntimeClassName is the engine pods' RuntimeClass (for example "nvidia" where the
	// NVIDIA container runtime is not the default).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	RuntimeClassName *string `json:"runtimeClassName,omitempty"`
}

// APIKeySecretReference is a key of a Secret in the MixtralDeployment's namespace.
type APIKeySecretReference struct {
	// Name is the Secret's name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// Key is the key in the Secret whose value is the API key (surrounding whitespace, such
	// as a trailing newline, is ignored).
	// +optional
	// +kubebuilder:default=api-key
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// MixtralDeploymentSpec is the desired state of a MixtralDeployment.
//
// +kubebuilder:validation:XValidation:rule="!has(self.engine) || !has(self.engine.runtime) || self.engine.runtime != 'vllm' || self.accelerator.type != 'cpu'",message="engine.runtime vllm runs on GPUs: choose a GPU accelerator.type, or the moe runtime for cpu"
// +kubebuilder:validation:XValidation:rule="!has(self.engine) || !has(self.engine.runtime) || self.engine.runtime != 'vllm' || !has(self.model.uri) || !self.model.uri.startsWith('https://') || has(self.model.cache)",message="engine.runtime vllm downloads only from Hugging Face: an https:// model needs model.cache (the loader Job downloads it) or the moe runtime"
// +kubebuilder:validation:XValidation:rule="!has(self.engine) || !has(self.engine.runtime) || self.engine.runtime != 'vllm' || !has(self.model.uri) || !self.model.uri.matches('^hf://[^/]+/[^/@]+(@[^/@]+)?/.+$') || has(self.model.cache)",message="engine.runtime vllm downloads whole Hugging Face repositories, not one file of one: set model.cache (the loader Job fetches the file), name the repository alone, or use the moe runtime"
// +kubebuilder:validation:XValidation:rule="self.quantization != 'FP8' || self.accelerator.type in ['h100-80gb', 'h200', 'l40s', 'l4']",message="quantization FP8 needs an accelerator with FP8 support (h100-80gb, h200, l40s, l4); on a100-80gb, a100-40gb and cpu choose Auto, BF16, Int8 or Int4"
// +kubebuilder:validation:XValidation:rule="self.quantization != 'FP8' || (has(self.engine) && has(self.engine.runtime) && self.engine.runtime == 'vllm')",message="quantization FP8 needs engine.runtime vllm: the moe engine has no FP8 kernels; choose Int8, which takes the same memory"
// +kubebuilder:validation:XValidation:rule="!has(self.accelerator.maxPerNode) || self.tensorParallelism <= self.accelerator.maxPerNode",message="tensorParallelism must not exceed accelerator.maxPerNode: a replica's tensor-parallel group runs on one node"
// +kubebuilder:validation:XValidation:rule="!has(self.engine) || !has(self.engine.resources) || ((!has(self.engine.resources.limits) || !(self.accelerator.resourceName in self.engine.resources.limits)) && (!has(self.engine.resources.requests) || !(self.accelerator.resourceName in self.engine.resources.requests)))",messageExpression="'engine.resources must not set ' + self.accelerator.resourceName + ': the operator requests the plan\\'s GPUs per replica'"
type MixtralDeploymentSpec struct {
	// Model is what to serve.
	Model ModelSpec `json:"model"`

	// Accelerator is what each replica runs on.
	Accelerator AcceleratorSpec `json:"accelerator"`

	// Targets are the throughput and latency the deployment must reach.
	// +optional
	// +kubebuilder:default={}
	Targets TargetsSpec `json:"targets,omitempty"`

	// Quantization pins the weight precision; Auto lets the planner choose.
	// +optional
	// +kubebuilder:default=Auto
	Quantization Quantization `json:"quantization,omitempty"`

	// TensorParallelism pins the number of GPUs that shard one replica: 1, 2, 4 or 8;
	// 0 lets the planner choose.
	// +optional
	// +kubebuilder:default=0
	// +kubebuilder:validation:XValidation:rule="self in [0, 1, 2, 4, 8]",message="tensorParallelism must be 0 (let the planner choose), 1, 2, 4 or 8"
	TensorParallelism int32 `json:"tensorParallelism,omitempty"`

	// Replicas is the number of engine replicas, and the scale subresource's spec.replicas
	// (`kubectl scale`, an HPA, KEDA or the built-in autoscaler write it). Left unset, the
	// operator fills in the plan's count and keeps it following the plan while it still
	// holds the value the operator wrote (recorded in the annotation
	// serving.moe-operator.io/planned-replicas). Once anyone else changes it, it is theirs:
	// the operator never overwrites it. Remove the field to hand it back to the plan.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000
	Replicas *int32 `json:"replicas,omitempty"`

	// Autoscaling configures the built-in autoscaler.
	// +optional
	Autoscaling *AutoscalingSpec `json:"autoscaling,omitempty"`

	// Engine tunes the engine container.
	// +optional
	// +kubebuilder:default={}
	Engine EngineSpec `json:"engine,omitempty"`
}

// Plan is the planner's chosen configuration, in the same shape `moe plan --json` prints.
type Plan struct {
	// Quantization is the chosen weight precision (BF16, FP8, Int8 or Int4).
	Quantization string `json:"quantization"`
	// TensorParallelism is the number of shards per replica (per node when a replica spans
	// nodes).
	TensorParallelism int32 `json:"tensorParallelism"`
	// PipelineParallelism is the pipeline stages per replica: 1, or one per node when a
	// replica spans nodes.
	// +optional
	PipelineParallelism int32 `json:"pipelineParallelism,omitempty"`
	// NodesPerReplica is the nodes one replica spans: more than 1 only for the vllm runtime,
	// which then runs as a LeaderWorkerSet.
	// +optional
	NodesPerReplica int32 `json:"nodesPerReplica,omitempty"`
	// GPUsPerReplica is the number of accelerators each replica requests in total, over all
	// its nodes (0 on cpu).
	GPUsPerReplica int32 `json:"gpusPerReplica"`
	// Replicas is the number of replicas that meets the throughput target.
	Replicas int32 `json:"replicas"`
	// BatchSize is the concurrent sequences per replica (the engine's --max-num-seqs).
	BatchSize int32 `json:"batchSize"`
	// OutputTokensPerSecondPerReplica is the predicted generation rate of one replica.
	OutputTokensPerSecondPerReplica float64 `json:"outputTokensPerSecondPerReplica"`
	// TTFTSeconds is the predicted time to first token of a typical request.
	TTFTSeconds float64 `json:"ttftSeconds"`
	// ITLSeconds is the predicted inter-token latency at the chosen batch size.
	ITLSeconds float64 `json:"itlSeconds"`
	// MemoryPerGPUBytes is the predicted memory use of each accelerator.
	MemoryPerGPUBytes int64 `json:"memoryPerGPUBytes"`
	// Reason says in one line why this plan was chosen.
	// +optional
	Reason string `json:"reason,omitempty"`
}

// AutoscalingStatus is what the built-in autoscaler observed and decided. It is also the
// autoscaler's memory: its windows are kept here, so an operator restart continues them.
type AutoscalingStatus struct {
	// DesiredReplicas is the autoscaler's latest decision: the spec.replicas it holds.
	// +optional
	DesiredReplicas int32 `json:"desiredReplicas,omitempty"`
	// RecommendedReplicas is what the latest reading alone asks for, within minReplicas and
	// maxReplicas and at most twice spec.replicas; spec.replicas follows it once the scale-up
	// or scale-down window has lasted.
	// +optional
	RecommendedReplicas int32 `json:"recommendedReplicas,omitempty"`
	// LastScaleTime is when the autoscaler last changed spec.replicas.
	// +optional
	LastScaleTime *metav1.Time `json:"lastScaleTime,omitempty"`
	// LastScrapeTime is when the autoscaler last read (or tried to read) the engines' metrics.
	// +optional
	LastScrapeTime *metav1.Time `json:"lastScrapeTime,omitempty"`
	// ScrapedReplicas is how many ready replicas' metrics the latest reading got.
	// +optional
	ScrapedReplicas int32 `json:"scrapedReplicas,omitempty"`
	// StartingReplicas is how many engine pods exist but are not ready yet (loading the
	// model). They count toward capacity: load they will take does not scale up again.
	// +optional
	StartingReplicas int32 `json:"startingReplicas,omitempty"`
	// Target is the per-replica target in effect: autoscaling.target, or the metric's default.
	// +optional
	Target *resource.Quantity `json:"target,omitempty"`
	// ObservedValue is the latest per-replica value of the autoscaling metric, averaged over
	// the ready replicas read.
	// +optional
	ObservedValue *resource.Quantity `json:"observedValue,omitempty"`
	// ScaleUp is the open scale-up window: every reading since scaleUp.since asked for more
	// replicas. Unset when the latest reading did not.
	// +optional
	ScaleUp *ScalingWindow `json:"scaleUp,omitempty"`
	// ScaleDown is the open scale-down window: every reading since scaleDown.since asked for
	// fewer replicas. Unset when the latest reading did not.
	// +optional
	ScaleDown *ScalingWindow `json:"scaleDown,omitempty"`
	// PredictedOutputTokensPerSecondPerReplica is the planner's predicted throughput of one
	// replica at the observed batch (the mean running requests per replica); at a full batch
	// it is status.plan.outputTokensPerSecondPerReplica.
	// +optional
	PredictedOutputTokensPerSecondPerReplica float64 `json:"predictedOutputTokensPerSecondPerReplica,omitempty"`
	// ObservedOutputTokensPerSecondPerReplica is the measured per-replica throughput: the
	// rate of vllm:generation_tokens_total between two readings, averaged over the replicas.
	// +optional
	ObservedOutputTokensPerSecondPerReplica float64 `json:"observedOutputTokensPerSecondPerReplica,omitempty"`
	// ThroughputRatio is observed over predicted per-replica throughput, under load.
	// +optional
	ThroughputRatio float64 `json:"throughputRatio,omitempty"`
	// LastRequestTime is the last reading that saw a request: one running or waiting, a
	// token counter that moved, or one held by the gateway. With minReplicas 0, the
	// replicas go to zero scaleToZeroAfter after it.
	// +optional
	LastRequestTime *metav1.Time `json:"lastRequestTime,omitempty"`
	// HeldRequests is how many requests the gateway reported holding for this model at
	// the latest reading (they count as load; at zero replicas they wake it).
	// +optional
	HeldRequests int32 `json:"heldRequests,omitempty"`
	// ThroughputDriftSince is when the ratio last left the operator's drift tolerance; unset
	// while it is inside. ThroughputDrift turns True once it has stayed out for the drift
	// window.
	// +optional
	ThroughputDriftSince *metav1.Time `json:"throughputDriftSince,omitempty"`
}

// DeviceStatus is what one engine pod reports of its device. An engine allocates its
// weights, working memory and KV cache before it is ready, so the figures hold for as long
// as the pod runs.
type DeviceStatus struct {
	// Name is the device, as the engine names it ("vulkan:0 NVIDIA H100 80GB HBM3"; a
	// device group's ranks end in "×N").
	Name string `json:"name"`
	// Pod is the engine pod that reported it.
	Pod string `json:"pod"`
	// MemoryUsedBytes is the device memory the engine holds (of a device group, its
	// fullest rank).
	// +optional
	MemoryUsedBytes int64 `json:"memoryUsedBytes,omitempty"`
	// MemoryBudgetBytes is the device memory the engine may allocate.
	// +optional
	MemoryBudgetBytes int64 `json:"memoryBudgetBytes,omitempty"`
}

// MixtralDeploymentStatus is the observed state of a MixtralDeployment.
type MixtralDeploymentStatus struct {
	// ObservedGeneration is the generation the operator last reconciled successfully.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Model is the model being served: the preset name or the URI.
	// +optional
	Model string `json:"model,omitempty"`

	// Plan is the plan in effect: the planner's choice for the latest spec it could plan.
	// When a later spec cannot be planned (see the Planned condition), the running engine
	// and this plan stay as they were. Unset until a first plan is found.
	// +optional
	Plan *Plan `json:"plan,omitempty"`

	// GPUs is the number of accelerators requested in total (GPUs per replica × replicas).
	// +optional
	GPUs int32 `json:"gpus,omitempty"`

	// Replicas is the number of engine pods (the scale subresource's status.replicas).
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// ReadyReplicas is the number of engine pods ready to serve.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// UpdatedReplicas is the number of engine pods running the current pod template.
	// +optional
	UpdatedReplicas int32 `json:"updatedReplicas,omitempty"`

	// Selector is the label selector of the engine pods, for the scale subresource.
	// +optional
	Selector string `json:"selector,omitempty"`

	// Endpoint is the in-cluster base URL of the OpenAI-compatible API.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// Autoscaling is the built-in autoscaler's state.
	// +optional
	Autoscaling *AutoscalingStatus `json:"autoscaling,omitempty"`

	// ModelCache is the model cache's claim, loader Job and pull progress; set with
	// spec.model.cache.
	// +optional
	ModelCache *ModelCacheStatus `json:"modelCache,omitempty"`

	// Device is the accelerator a ready moe engine pod on GPUs reports that it computes on,
	// read from its /metrics; unset on the cpu accelerator, with the vllm runtime, and
	// while no engine pod is ready or the operator cannot reach one.
	// +optional
	Device *DeviceStatus `json:"device,omitempty"`

	// Conditions are Planned, Available, Progressing and Degraded (and, with autoscaling,
	// ScalingActive, ScalingLimited and ThroughputDrift; with model.cache, ModelCached).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// MixtralDeployment serves a Mixtral-architecture model sized by the planner.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=mxd,categories={moe,all}
// +kubebuilder:printcolumn:name="Model",type=string,JSONPath=`.status.model`
// +kubebuilder:printcolumn:name="Quant",type=string,JSONPath=`.status.plan.quantization`
// +kubebuilder:printcolumn:name="TP",type=integer,JSONPath=`.status.plan.tensorParallelism`
// +kubebuilder:printcolumn:name="GPUs",type=integer,JSONPath=`.status.gpus`
// +kubebuilder:printcolumn:name="Replicas",type=integer,JSONPath=`.status.replicas`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Planned",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Planned")].status`
// +kubebuilder:printcolumn:name="Endpoint",type=string,priority=1,JSONPath=`.status.endpoint`
// +kubebuilder:printcolumn:name="Cached",type=integer,priority=1,JSONPath=`.status.modelCache.percent`
// +kubebuilder:printcolumn:name="Device",type=string,priority=1,JSONPath=`.status.device.name`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name must be a DNS-1035 label (at most 63 lowercase letters, digits and '-', starting with a letter): it names the engine's Service"
type MixtralDeployment struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MixtralDeploymentSpec   `json:"spec"`
	Status MixtralDeploymentStatus `json:"status,omitempty"`
}

// MixtralDeploymentList is a list of MixtralDeployments.
//
// +kubebuilder:object:root=true
type MixtralDeploymentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MixtralDeployment `json:"items"`
}

func init() {
	SchemeBuilder.Register(&MixtralDeployment{}, &MixtralDeploymentList{})
}
