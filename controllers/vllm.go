package controllers

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/engine/source"
)

// The vLLM runtime (spec.engine.runtime: vllm). Every flag below is checked against
// vLLM's argument parser, vllm/engine/arg_utils.py and vllm/entrypoints/openai/cli_args.py,
// in both its v0.7-era and its v0.11-era form; docs/runtimes.md cites the commits read.
const (
	// DefaultVLLMImage is the vllm runtime's image when neither spec.engine.image nor the
	// manager's --vllm-image names one: the release whose arguments the operator renders.
	DefaultVLLMImage = "vllm/vllm-openai:v0.11.0"
	// vllmModule is the OpenAI server module, which every vllm/vllm-openai image has
	// and which takes --model as a flag (the image's own entrypoint differs by version).
	vllmModule = "vllm.entrypoints.openai.api_server"
	// vllmAPIKeyEnv is the environment variable vLLM reads the API key from when
	// --api-key is not given.
	vllmAPIKeyEnv = "VLLM_API_KEY"
	// rayPort is the Ray head's port on the leader of a multi-node replica.
	rayPort = 6379
)

// vLLM needs a larger /dev/shm than the moe engine (NCCL's intra-node buffers) and a
// larger scratch /tmp (Triton, torch.compile and vLLM's caches live under $HOME=/tmp).
var (
	vllmShmPerGPU = resource.MustParse("2Gi")
	vllmShmMax    = resource.MustParse("16Gi")
	vllmTmpSize   = resource.MustParse("10Gi")
)

// isVLLM reports whether the pods run vLLM.
func (w workload) isVLLM() bool {
	return engineRuntime(w.obj.Spec) == servingv1alpha1.RuntimeVLLM
}

// nodes is the nodes one replica spans: the plan's, at least 1.
func (w workload) nodes() int32 { return max(1, w.plan.NodesPerReplica) }

// pipelineStages is the plan's pipeline parallelism, at least 1.
func (w workload) pipelineStages() int32 { return max(1, w.plan.PipelineParallelism) }

// vllmModel is vLLM's --model and --revision: a Hugging Face repository id (vLLM
// downloads it into HF_HOME on the model volume), or a local path (a pvc:// or file://
// model, or a remote model the loader Job put in the cache).
func (w workload) vllmModel() (model, revision string) {
	uri, _ := modelSource(w.obj.Spec.Model)
	u, err := source.Parse(uri)
	if err != nil {
		// Admission validation admits only URIs the engine parses; pass it through so
		// that vLLM names the problem.
		return uri, ""
	}
	switch {
	case w.cacheSpec() != nil:
		return u.ModelPath(modelCacheMountPath), ""
	case u.Scheme == "hf":
		if u.Revision != "" && u.Revision != "main" {
			revision = u.Revision
		}
		return u.Repo, revision
	}
	return u.LocalPath(pvcMountRoot), ""
}

// vllmQuantization is vLLM's --quantization: fp8 when the plan quantizes full-precision
// weights to FP8, else nothing (BF16, or a checkpoint quantized ahead of time, whose own
// config tells vLLM its method).
func (w workload) vllmQuantization() string {
	stored := storedPrecision(w.obj.Spec.Model)
	if w.plan.Quantization == string(servingv1alpha1.QuantizationFP8) && string(stored) != string(servingv1alpha1.QuantizationFP8) {
		return "fp8"
	}
	return ""
}

// gpuMemoryUtilization is vLLM's --gpu-memory-utilization: the share of each GPU the
// plan lets the engine take (all but the accelerator's headroom).
func (w workload) gpuMemoryUtilization() string {
	return strconv.FormatFloat(1-w.accelerator.MemoryHeadroom, 'f', 2, 64)
}

// vllmArgs are the arguments of `python3 -m vllm.entrypoints.openai.api_server`.
func (w workload) vllmArgs() []string {
	model, revision := w.vllmModel()
	args := []string{"--model", model}
	if revision != "" {
		args = append(args, "--revision", revision)
	}
	args = append(args,
		"--served-model-name", servedModelName(w.obj),
		"--tensor-parallel-size", strconv.Itoa(int(w.plan.TensorParallelism)),
		"--pipeline-parallel-size", strconv.Itoa(int(w.pipelineStages())),
	)
	if q := w.vllmQuantization(); q != "" {
		args = append(args, "--quantization", q)
	}
	args = append(args,
		"--max-model-len", strconv.Itoa(int(w.contextSize())),
		"--max-num-seqs", strconv.Itoa(int(w.plan.BatchSize)),
		"--gpu-memory-utilization", w.gpuMemoryUtilization(),
		"--port", strconv.Itoa(int(w.port())),
	)
	if w.nodes() > 1 {
		// The workers of the other nodes join the leader's Ray cluster.
		args = append(args, "--distributed-executor-backend", "ray")
	}
	return append(args, w.obj.Spec.Engine.ExtraArgs...)
}

// vllmEnv is the vLLM container's environment after the common one.
func (w workload) vllmEnv() []corev1.EnvVar {
	env := []corev1.EnvVar{
		// huggingface_hub downloads into the model volume, not the read-only image.
		{Name: "HF_HOME", Value: modelCacheMountPath},
		{Name: "VLLM_NO_USAGE_STATS", Value: "1"},
	}
	if w.cacheSpec() != nil {
		env = append(env, corev1.EnvVar{Name: "HF_HUB_OFFLINE", Value: "1"})
	}
	if ref := w.apiKeyRef(); ref != nil {
		// vLLM takes the key from an argument or this variable only; the variable keeps it
		// out of the pod's command line. Not optional: without the key vLLM would serve
		// with no authentication, so the pod waits for the Secret instead.
		env = append(env, corev1.EnvVar{Name: vllmAPIKeyEnv, ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: ref.Name}, Key: ref.Key},
		}})
	}
	return env
}

// vllmShmSize is /dev/shm for vLLM: 2 GiB per GPU of the pod, at most 16 GiB.
func (w workload) vllmShmSize() resource.Quantity {
	shm := *resource.NewQuantity(vllmShmPerGPU.Value()*int64(max(1, w.gpus())), resource.BinarySI)
	if shm.Cmp(vllmShmMax) > 0 {
		return vllmShmMax.DeepCopy()
	}
	return shm
}

// Multi-node replicas (a LeaderWorkerSet): the leader starts the Ray head, waits until
// every node of its group has joined, then runs the OpenAI server, whose Ray executor
// places the pipeline stages on the workers. The scripts take the server's arguments as
// "$@", so no argument is ever re-quoted by a shell.
var (
	vllmLeaderScript = `set -e
ray start --head --port=` + strconv.Itoa(rayPort) + ` --disable-usage-stats
until [ "$(python3 -c 'import ray; ray.init(address="auto", logging_level="ERROR"); print(sum(1 for n in ray.nodes() if n["Alive"]))' 2>/dev/null)" -ge "$LWS_GROUP_SIZE" ]; do
  echo "waiting for $LWS_GROUP_SIZE Ray nodes"; sleep 5
done
exec python3 -m ` + vllmModule + ` "$@"`
	// The worker retries until the leader's Ray head answers, so that a worker started
	// first does not fail (which would recreate the whole group).
	vllmWorkerScript = `until ray start --address="$LWS_LEADER_ADDRESS:` + strconv.Itoa(rayPort) + `" --block --disable-usage-stats; do
  echo "waiting for the Ray head at $LWS_LEADER_ADDRESS"; sleep 5
done`
)

// vllmCommand is the container's command and args for a role: a single-node replica
// runs the server directly; a multi-node one runs the leader or worker script.
func (w workload) vllmCommand(role podRole) (command, args []string) {
	switch role {
	case roleLeader:
		return []string{"/bin/sh", "-c", vllmLeaderScript, "vllm-leader"}, w.vllmArgs()
	case roleWorker:
		return []string{"/bin/sh", "-c", vllmWorkerScript}, nil
	}
	return []string{"python3", "-m", vllmModule}, w.vllmArgs()
}

// podRole is what an engine pod does in its replica.
type podRole int

const (
	// roleSingle is the one pod of a single-node replica.
	roleSingle podRole = iota
	// roleLeader serves the API of a multi-node replica and coordinates it.
	roleLeader
	// roleWorker runs pipeline stages for its leader.
	roleWorker
)
