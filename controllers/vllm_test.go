package controllers

import (
	"strconv"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
	lwsv1 "sigs.k8s.io/lws/api/leaderworkerset/v1"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

func vllmH100() *servingv1alpha1.MixtralDeployment {
	obj := h100Preset()
	obj.Spec.Engine.Runtime = servingv1alpha1.RuntimeVLLM
	obj.Spec.Model.TokenSecretRef = &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "hf"}, Key: "token"}
	return obj
}

// vllmL4MultiNode is Mixtral-8x22B in BF16 on L4s: more than one node's GPUs hold.
func vllmL4MultiNode() *servingv1alpha1.MixtralDeployment {
	obj := vllmH100()
	obj.Name = "big"
	obj.Spec.Model.Preset = servingv1alpha1.PresetMixtral8x22BInstruct
	obj.Spec.Accelerator.Type = servingv1alpha1.AcceleratorL4
	obj.Spec.Quantization = servingv1alpha1.QuantizationBF16
	obj.Spec.Targets = servingv1alpha1.TargetsSpec{PromptTokens: 1000, OutputTokens: 250, MaxContextLength: 16384}
	return obj
}

// wantMixtral8x7BVLLMArgs is the vLLM command line for the Mixtral-8x7B-Instruct preset on
// one node under plan p (the samples' 32k context, port 8000, 10% GPU headroom), written
// out by hand from the vLLM flags docs/runtimes.md cites.
func wantMixtral8x7BVLLMArgs(p servingv1alpha1.Plan) []string {
	want := []string{
		"--model", "mistralai/Mixtral-8x7B-Instruct-v0.1",
		"--served-model-name", "mixtral-8x7b-instruct",
		"--tensor-parallel-size", strconv.Itoa(int(p.TensorParallelism)),
		"--pipeline-parallel-size", "1",
	}
	if p.Quantization == "FP8" {
		want = append(want, "--quantization", "fp8")
	}
	return append(want,
		"--max-model-len", "32768",
		"--max-num-seqs", strconv.Itoa(int(p.BatchSize)),
		"--gpu-memory-utilization", "0.90",
		"--port", "8000",
	)
}

func TestVLLMArgumentsComeFromThePlan(t *testing.T) {
	g := NewWithT(t)
	w := plannedWorkload(t, vllmH100())
	w.obj.Status.Plan = &w.plan
	p := w.plan
	g.Expect(p.NodesPerReplica).To(Equal(int32(1)))
	c := desiredDeployment(w).Spec.Template.Spec.Containers[0]
	g.Expect(c.Command).To(Equal([]string{"python3", "-m", "vllm.entrypoints.openai.api_server"}))
	g.Expect(c.Args).To(Equal(wantMixtral8x7BVLLMArgs(p)))
	g.Expect(c.ReadinessProbe.HTTPGet.Path).To(Equal("/health"))
	g.Expect(c.StartupProbe.HTTPGet.Path).To(Equal("/health"))
	g.Expect(c.Env).To(ContainElements(
		HaveField("Name", "HF_TOKEN"),
		corev1.EnvVar{Name: "HF_HOME", Value: modelCacheMountPath},
	))
	shm := desiredDeployment(w).Spec.Template.Spec.Volumes[1]
	g.Expect(shm.Name).To(Equal(shmVolumeName))
	g.Expect(shm.EmptyDir.SizeLimit.Value()).To(Equal(int64(p.GPUsPerReplica) * 2 << 30))
}

func TestVLLMQuantizationFlag(t *testing.T) {
	for _, tt := range []struct {
		plan, stored servingv1alpha1.Quantization
		want         string
	}{
		{servingv1alpha1.QuantizationFP8, "", "fp8"},
		{servingv1alpha1.QuantizationBF16, "", ""},
		// A checkpoint quantized ahead of time carries its method in its config.
		{servingv1alpha1.QuantizationInt4, servingv1alpha1.QuantizationInt4, ""},
		{servingv1alpha1.QuantizationFP8, servingv1alpha1.QuantizationFP8, ""},
	} {
		obj := vllmH100()
		obj.Spec.Model.StoredPrecision = tt.stored
		w := workload{obj: obj, plan: servingv1alpha1.Plan{Quantization: string(tt.plan)}}
		if got := w.vllmQuantization(); got != tt.want {
			t.Errorf("plan %s, stored %q: --quantization %q, want %q", tt.plan, tt.stored, got, tt.want)
		}
	}
}

func TestVLLMModelSources(t *testing.T) {
	for _, tt := range []struct {
		uri        string
		cache      bool
		model, rev string
	}{
		{"hf://org/repo", false, "org/repo", ""},
		{"hf://org/repo@v2", false, "org/repo", "v2"},
		{"pvc://models/mixtral", false, pvcMountRoot + "/models/mixtral", ""},
		{"file:///models/mixtral", false, "/models/mixtral", ""},
		// The loader Job put it in the cache claim: vLLM reads it from there, offline.
		{"hf://org/repo@v2", true, modelCacheMountPath + "/hf/org/repo/v2", ""},
	} {
		obj := vllmH100()
		obj.Spec.Model = servingv1alpha1.ModelSpec{URI: tt.uri}
		if tt.cache {
			obj.Spec.Model.Cache = &servingv1alpha1.ModelCacheSpec{}
		}
		w := workload{obj: obj}
		if m, r := w.vllmModel(); m != tt.model || r != tt.rev {
			t.Errorf("%s (cache %v): --model %q --revision %q, want %q %q", tt.uri, tt.cache, m, r, tt.model, tt.rev)
		}
	}
}

func TestVLLMAPIKeyIsAnEnvironmentVariableFromTheSecret(t *testing.T) {
	g := NewWithT(t)
	obj := vllmH100()
	obj.Spec.Engine.APIKeySecretRef = &servingv1alpha1.APIKeySecretReference{Name: "keys", Key: "k"}
	w := plannedWorkload(t, obj)
	pod := desiredDeployment(w).Spec.Template.Spec
	c := pod.Containers[0]
	g.Expect(c.Args).NotTo(ContainElement(HavePrefix("--api-key")), "the key is in no argument")
	g.Expect(c.Env).To(ContainElement(corev1.EnvVar{Name: "VLLM_API_KEY", ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "keys"}, Key: "k"},
	}}), "required, so vLLM never starts without authentication")
	g.Expect(pod.Volumes).NotTo(ContainElement(HaveField("Name", apiKeyVolumeName)))
}

func TestMultiNodePlansBecomeALeaderWorkerSet(t *testing.T) {
	g := NewWithT(t)
	obj := vllmL4MultiNode()
	w := plannedWorkload(t, obj)
	obj.Status.Plan = &w.plan
	g.Expect(w.plan.NodesPerReplica).To(Equal(int32(2)))
	g.Expect(w.plan.GPUsPerReplica).To(Equal(int32(16)))
	l := desiredLeaderWorkerSet(w)
	g.Expect(l.Spec.LeaderWorkerTemplate.Size).To(Equal(ptr.To(int32(2))))
	g.Expect(l.Spec.Replicas).To(Equal(ptr.To(w.replicas())))
	g.Expect(l.Spec.LeaderWorkerTemplate.RestartPolicy).To(Equal(lwsv1.RecreateGroupOnPodRestart))

	leader := l.Spec.LeaderWorkerTemplate.LeaderTemplate.Spec.Containers[0]
	worker := l.Spec.LeaderWorkerTemplate.WorkerTemplate.Spec.Containers[0]
	for _, c := range []corev1.Container{leader, worker} {
		gpus := c.Resources.Limits["nvidia.com/gpu"]
		g.Expect(gpus.Value()).To(Equal(int64(8)), "each node's pod takes its 8 GPUs")
	}
	g.Expect(leader.Command[:2]).To(Equal([]string{"/bin/sh", "-c"}))
	g.Expect(leader.Command[2]).To(ContainSubstring("ray start --head --port=6379"))
	g.Expect(leader.Command[2]).To(ContainSubstring(`exec python3 -m vllm.entrypoints.openai.api_server "$@"`))
	g.Expect(flagValue(leader.Args, "--tensor-parallel-size")).To(Equal("8"))
	g.Expect(flagValue(leader.Args, "--pipeline-parallel-size")).To(Equal("2"))
	g.Expect(flagValue(leader.Args, "--distributed-executor-backend")).To(Equal("ray"))
	g.Expect(flagValue(leader.Args, "--max-model-len")).To(Equal("16384"))
	g.Expect(leader.ReadinessProbe.HTTPGet.Path).To(Equal("/health"))
	g.Expect(worker.Command[2]).To(ContainSubstring(`ray start --address="$LWS_LEADER_ADDRESS:6379" --block`))
	g.Expect(worker.Args).To(BeEmpty())
	g.Expect(worker.ReadinessProbe).To(BeNil(), "a worker serves nothing")
	g.Expect(l.Spec.LeaderWorkerTemplate.WorkerTemplate.Annotations).NotTo(HaveKey("prometheus.io/scrape"))

	// Only leaders serve: the Service and the scale selector pick them.
	svc := desiredService(w)
	g.Expect(svc.Spec.Selector).To(HaveKeyWithValue(lwsv1.WorkerIndexLabelKey, "0"))
}
