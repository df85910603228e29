package controllers

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/gateway/kube"
	"github.com/moe-operator/moe-operator/planner"
)

const testImage = "example.com/moe-engine:test"

func h100Preset() *servingv1alpha1.MixtralDeployment {
	return &servingv1alpha1.MixtralDeployment{
		ObjectMeta: metav1.ObjectMeta{Name: "chat", Namespace: "team-a", UID: "uid-1"},
		Spec: servingv1alpha1.MixtralDeploymentSpec{
			Model:       servingv1alpha1.ModelSpec{Preset: servingv1alpha1.PresetMixtral8x7BInstruct},
			Accelerator: servingv1alpha1.AcceleratorSpec{Type: servingv1alpha1.AcceleratorH100_80GB, ResourceName: "nvidia.com/gpu"},
			Targets: servingv1alpha1.TargetsSpec{
				OutputTokensPerSecond: ptr.To[int64](5000),
				TimeToFirstToken:      &metav1.Duration{Duration: 500 * time.Millisecond},
				InterTokenLatency:     &metav1.Duration{Duration: 50 * time.Millisecond},
				PromptTokens:          1000,
				OutputTokens:          250,
			},
			Quantization: servingv1alpha1.QuantizationAuto,
			Engine:       servingv1alpha1.EngineSpec{Port: 8000},
		},
	}
}

func tinyCPU() *servingv1alpha1.MixtralDeployment {
	return &servingv1alpha1.MixtralDeployment{
		ObjectMeta: metav1.ObjectMeta{Name: "tiny", Namespace: "team-a", UID: "uid-2"},
		Spec: servingv1alpha1.MixtralDeploymentSpec{
			Model: servingv1alpha1.ModelSpec{
				URI: "pvc://moe-models/tiny/model.gguf",
				Shape: &servingv1alpha1.ModelShape{
					Layers: 2, HiddenSize: 64, IntermediateSize: 128, AttentionHeads: 4, KVHeads: 2,
					Experts: 4, ExpertsPerToken: 2, VocabSize: 32000, ContextLength: 2048,
				},
			},
			Accelerator: servingv1alpha1.AcceleratorSpec{Type: servingv1alpha1.AcceleratorCPU, ResourceName: "nvidia.com/gpu"},
			Targets:     servingv1alpha1.TargetsSpec{PromptTokens: 128, OutputTokens: 64, MaxContextLength: 2048},
			Engine:      servingv1alpha1.EngineSpec{Port: 8000},
		},
	}
}

// plannedWorkload plans obj with the real planner, as the reconciler does.
func plannedWorkload(t *testing.T, obj *servingv1alpha1.MixtralDeployment) workload {
	t.Helper()
	req, err := planRequest(obj.Spec)
	if err != nil {
		t.Fatalf("planRequest: %v", err)
	}
	res, err := planner.Solve(req)
	if err != nil {
		t.Fatalf("planner.Solve: %v", err)
	}
	return workload{obj: obj, plan: *statusPlan(res.Plan), model: req.Model, accelerator: req.Accelerator, image: testImage}
}

// flagValue returns the value after flag in args.
func flagValue(args []string, flag string) string {
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	return args[i+1]
}

func TestEngineArgs(t *testing.T) {
	tests := []struct {
		name      string
		obj       func() *servingv1alpha1.MixtralDeployment
		wantModel string
		wantName  string
		wantCtx   string
		wantExtra []string
	}{
		{
			name:      "a preset is served from its Hugging Face repository under the preset's name",
			obj:       h100Preset,
			wantModel: "hf://mistralai/Mixtral-8x7B-Instruct-v0.1",
			wantName:  "mixtral-8x7b-instruct",
			wantCtx:   "32768",
		},
		{
			name:      "a pvc:// model passes through (the engine reads it from the claim's mount) and is named after the object",
			obj:       tinyCPU,
			wantModel: "pvc://moe-models/tiny/model.gguf",
			wantName:  "tiny",
			wantCtx:   "2048",
		},
		{
			name: "a file:// model passes through; servedName and extra args are honoured",
			obj: func() *servingv1alpha1.MixtralDeployment {
				o := tinyCPU()
				o.Spec.Model.URI = "file:///opt/models/tiny.gguf"
				o.Spec.Model.ServedName = "tiny-chat"
				o.Spec.Engine.ExtraArgs = []string{"--threads", "2"}
				return o
			},
			wantModel: "file:///opt/models/tiny.gguf",
			wantName:  "tiny-chat",
			wantCtx:   "2048",
			wantExtra: []string{"--threads", "2"},
		},
		{
			name: "hf:// and https:// URIs pass through unchanged",
			obj: func() *servingv1alpha1.MixtralDeployment {
				o := h100Preset()
				o.Spec.Model = servingv1alpha1.ModelSpec{
					URI:   "hf://TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF/mixtral-8x7b-instruct-v0.1.Q4_0.gguf",
					Shape: &servingv1alpha1.ModelShape{Preset: servingv1alpha1.PresetMixtral8x7BInstruct},
				}
				o.Spec.Targets.MaxContextLength = 8192
				return o
			},
			wantModel: "hf://TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF/mixtral-8x7b-instruct-v0.1.Q4_0.gguf",
			wantName:  "chat",
			wantCtx:   "8192",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			w := plannedWorkload(t, tt.obj())
			args := w.engineArgs()
			g.Expect(args[0]).To(Equal("serve"))
			g.Expect(flagValue(args, "--model")).To(Equal(tt.wantModel))
			g.Expect(flagValue(args, "--served-model-name")).To(Equal(tt.wantName))
			g.Expect(flagValue(args, "--ctx-size")).To(Equal(tt.wantCtx))
			g.Expect(flagValue(args, "--quantization")).To(Equal(strings.ToLower(w.plan.Quantization)))
			g.Expect(flagValue(args, "--tensor-parallel")).To(Equal(strconv.Itoa(int(w.plan.TensorParallelism))))
			g.Expect(flagValue(args, "--max-num-seqs")).To(Equal(strconv.Itoa(int(w.plan.BatchSize))))
			kv, _ := strconv.Atoi(flagValue(args, "--kv-cache-tokens"))
			ctx, _ := strconv.Atoi(tt.wantCtx)
			g.Expect(kv).To(BeNumerically(">=", ctx), "the KV cache holds at least one full context")
			g.Expect(kv).To(BeNumerically(">=", int(w.plan.BatchSize)), "and a token per planned sequence")
			g.Expect(flagValue(args, "--port")).To(Equal("8000"))
			for _, f := range engineManagedFlags {
				g.Expect(args).To(ContainElement(f), "the operator sets %s", f)
			}
			if tt.wantExtra != nil {
				g.Expect(args[len(args)-len(tt.wantExtra):]).To(Equal(tt.wantExtra))
			}
		})
	}
}

func TestDeviceArgsAndEnv(t *testing.T) {
	tests := []struct {
		name       string
		obj        func() *servingv1alpha1.MixtralDeployment
		wantDevice string
		wantEnv    []corev1.EnvVar
		noEnv      []string
	}{
		{
			name:       "an NVIDIA GPU replica computes on its Vulkan device with the graphics capability (the ICD) mounted",
			obj:        h100Preset,
			wantDevice: "vulkan",
			wantEnv:    []corev1.EnvVar{{Name: "NVIDIA_DRIVER_CAPABILITIES", Value: "compute,utility,graphics"}},
			noEnv:      []string{"NVIDIA_VISIBLE_DEVICES"},
		},
		{
			name: "another vendor's GPUs run Vulkan too, without NVIDIA's settings",
			obj: func() *servingv1alpha1.MixtralDeployment {
				o := h100Preset()
				o.Spec.Accelerator.ResourceName = "amd.com/gpu"
				return o
			},
			wantDevice: "vulkan",
			noEnv:      []string{"NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES"},
		},
		{
			name:       "a cpu replica computes on the CPU and is shown no GPU by NVIDIA's runtime",
			obj:        tinyCPU,
			wantDevice: "cpu",
			wantEnv:    []corev1.EnvVar{{Name: "NVIDIA_VISIBLE_DEVICES", Value: "void"}},
			noEnv:      []string{"NVIDIA_DRIVER_CAPABILITIES"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			w := plannedWorkload(t, tt.obj())
			c := desiredDeployment(w).Spec.Template.Spec.Containers[0]
			g.Expect(flagValue(c.Args, "--device")).To(Equal(tt.wantDevice))
			for _, e := range tt.wantEnv {
				g.Expect(c.Env).To(ContainElement(e))
			}
			for _, n := range tt.noEnv {
				g.Expect(c.Env).NotTo(ContainElement(HaveField("Name", n)))
			}
		})
	}
}

func TestResources(t *testing.T) {
	gpu := corev1.ResourceName("nvidia.com/gpu")
	tests := []struct {
		name  string
		obj   func() *servingv1alpha1.MixtralDeployment
		check func(g Gomega, w workload, r corev1.ResourceRequirements)
	}{
		{
			name: "a GPU replica requests and limits its plan's GPUs, with CPU and memory per GPU",
			obj:  h100Preset,
			check: func(g Gomega, w workload, r corev1.ResourceRequirements) {
				n := int64(w.plan.GPUsPerReplica)
				g.Expect(n).To(BeNumerically(">", 0))
				g.Expect(ptr.To(r.Limits[gpu]).Value()).To(Equal(n))
				g.Expect(ptr.To(r.Requests[gpu]).Value()).To(Equal(n))
				g.Expect(r.Requests.Cpu().Value()).To(Equal(4 * n))
				g.Expect(r.Limits.Memory().Value()).To(Equal(n*16<<30 + 1<<30))
				g.Expect(r.Requests.Memory().Cmp(*r.Limits.Memory())).To(Equal(0))
			},
		},
		{
			name: "the cpu accelerator requests no GPU resource and sizes memory from the plan",
			obj:  tinyCPU,
			check: func(g Gomega, w workload, r corev1.ResourceRequirements) {
				g.Expect(r.Limits).NotTo(HaveKey(gpu))
				g.Expect(r.Requests).NotTo(HaveKey(gpu))
				g.Expect(r.Requests.Memory().Value()).To(BeNumerically(">=", w.plan.MemoryPerGPUBytes+256<<20))
				g.Expect(r.Requests.Memory().Value()).To(BeNumerically("<", w.plan.MemoryPerGPUBytes+257<<20))
				g.Expect(r.Requests.Cpu().String()).To(Equal("2"))
			},
		},
		{
			name: "a custom resource name carries the GPUs",
			obj: func() *servingv1alpha1.MixtralDeployment {
				o := h100Preset()
				o.Spec.Accelerator.ResourceName = "example.com/gpu"
				return o
			},
			check: func(g Gomega, w workload, r corev1.ResourceRequirements) {
				g.Expect(r.Limits).NotTo(HaveKey(gpu))
				g.Expect(ptr.To(r.Limits[corev1.ResourceName("example.com/gpu")]).Value()).To(Equal(int64(w.plan.GPUsPerReplica)))
			},
		},
		{
			name: "user requests override the defaults and become limits; other resources pass through",
			obj: func() *servingv1alpha1.MixtralDeployment {
				o := h100Preset()
				o.Spec.Engine.Resources = corev1.ResourceRequirements{
					Requests: corev1.ResourceList{
						corev1.ResourceMemory:           resource.MustParse("200Gi"),
						corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
					},
				}
				return o
			},
			check: func(g Gomega, w workload, r corev1.ResourceRequirements) {
				g.Expect(r.Requests.Memory().String()).To(Equal("200Gi"))
				g.Expect(r.Limits.Memory().String()).To(Equal("200Gi"))
				g.Expect(r.Requests.StorageEphemeral().String()).To(Equal("100Gi"))
				g.Expect(ptr.To(r.Limits[gpu]).Value()).To(Equal(int64(w.plan.GPUsPerReplica)))
			},
		},
		{
			name: "a user limit below the default lowers the request to it",
			obj: func() *servingv1alpha1.MixtralDeployment {
				o := h100Preset()
				o.Spec.Engine.Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1")}}
				return o
			},
			check: func(g Gomega, w workload, r corev1.ResourceRequirements) {
				g.Expect(r.Limits.Cpu().String()).To(Equal("1"))
				g.Expect(r.Requests.Cpu().String()).To(Equal("1"))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := plannedWorkload(t, tt.obj())
			tt.check(NewWithT(t), w, w.resources())
		})
	}
}

func TestPlacement(t *testing.T) {
	tests := []struct {
		name         string
		obj          func() *servingv1alpha1.MixtralDeployment
		wantSelector map[string]string
		wantKeys     []string
	}{
		{
			name:         "a GPU type selects nodes by the GPU product label and tolerates the GPU taint",
			obj:          h100Preset,
			wantSelector: map[string]string{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
			wantKeys:     []string{"nvidia.com/gpu"},
		},
		{
			name: "a user node selector replaces the product label; user tolerations follow the GPU one",
			obj: func() *servingv1alpha1.MixtralDeployment {
				o := h100Preset()
				o.Spec.Accelerator.NodeSelector = map[string]string{"pool": "h100"}
				o.Spec.Accelerator.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "llm", Effect: corev1.TaintEffectNoSchedule}}
				return o
			},
			wantSelector: map[string]string{"pool": "h100"},
			wantKeys:     []string{"nvidia.com/gpu", "dedicated"},
		},
		{
			name:     "the cpu accelerator neither selects GPU nodes nor tolerates the GPU taint",
			obj:      tinyCPU,
			wantKeys: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			selector, tolerations := plannedWorkload(t, tt.obj()).placement()
			if tt.wantSelector == nil {
				g.Expect(selector).To(BeEmpty())
			} else {
				g.Expect(selector).To(Equal(tt.wantSelector))
			}
			var keys []string
			for _, tol := range tolerations {
				keys = append(keys, tol.Key)
			}
			g.Expect(keys).To(Equal(tt.wantKeys))
		})
	}
}

func TestStartupBudget(t *testing.T) {
	g := NewWithT(t)
	w := plannedWorkload(t, h100Preset())
	bf16 := float64(w.model.WeightBytes(planner.BF16))
	want := 2*time.Minute + time.Duration(bf16/100e6*float64(time.Second)).Round(time.Second)
	g.Expect(w.startupTimeout()).To(Equal(want), "2 minutes plus reading the BF16 weights at 100 MB/s")
	g.Expect(w.startupTimeout()).To(BeNumerically(">", 15*time.Minute), "Mixtral-8x7B is ~93 GB")
	g.Expect(w.startupFailureThreshold()).To(Equal(int32((want.Seconds() + 9) / 10)))

	tiny := plannedWorkload(t, tinyCPU())
	g.Expect(tiny.startupTimeout()).To(BeNumerically("<", 2*time.Minute+time.Second), "a tiny model gets about the base budget")

	tiny.obj.Spec.Engine.StartupTimeout = &metav1.Duration{Duration: 45 * time.Second}
	g.Expect(tiny.startupTimeout()).To(Equal(45 * time.Second))
	g.Expect(tiny.startupFailureThreshold()).To(Equal(int32(5)))
}

func TestDesiredDeployment(t *testing.T) {
	g := NewWithT(t)
	w := plannedWorkload(t, h100Preset())
	d := desiredDeployment(w)

	g.Expect(d.Name).To(Equal("chat"))
	g.Expect(d.Namespace).To(Equal("team-a"))
	g.Expect(*d.Spec.Replicas).To(Equal(w.plan.Replicas))
	g.Expect(d.Spec.Selector.MatchLabels).To(Equal(map[string]string{servingv1alpha1.LabelMixtralDeployment: "chat"}))
	g.Expect(d.Spec.Template.Labels).To(HaveKeyWithValue(servingv1alpha1.LabelMixtralDeployment, "chat"))
	g.Expect(d.Spec.Template.Labels).To(HaveKey(servingv1alpha1.LabelTemplateHash))
	g.Expect(*d.Spec.ProgressDeadlineSeconds).To(BeNumerically(">", int32(w.startupTimeout().Seconds())))

	pod := d.Spec.Template.Spec
	g.Expect(pod.Containers).To(HaveLen(1))
	c := pod.Containers[0]
	g.Expect(c.Image).To(Equal(testImage))
	g.Expect(c.Ports).To(Equal([]corev1.ContainerPort{{Name: "http", ContainerPort: 8000, Protocol: corev1.ProtocolTCP}}))

	// Probes: startup and readiness on /ready, liveness on /health, all on the named port.
	g.Expect(c.StartupProbe.HTTPGet.Path).To(Equal("/ready"))
	g.Expect(c.StartupProbe.FailureThreshold).To(Equal(w.startupFailureThreshold()))
	g.Expect(c.ReadinessProbe.HTTPGet.Path).To(Equal("/ready"))
	g.Expect(c.LivenessProbe.HTTPGet.Path).To(Equal("/health"))
	g.Expect(c.LivenessProbe.HTTPGet.Port.StrVal).To(Equal("http"))

	// Stopping: keep serving while the endpoints drop the pod, then the engine's own drain,
	// all within the grace period.
	g.Expect(c.Lifecycle.PreStop.Sleep.Seconds).To(Equal(endpointDrainSeconds))
	g.Expect(*pod.TerminationGracePeriodSeconds).To(BeNumerically(">=", endpointDrainSeconds+30+5))

	// Restricted pod security.
	g.Expect(*pod.SecurityContext.RunAsNonRoot).To(BeTrue())
	g.Expect(pod.SecurityContext.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeRuntimeDefault))
	g.Expect(*c.SecurityContext.AllowPrivilegeEscalation).To(BeFalse())
	g.Expect(*c.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
	g.Expect(c.SecurityContext.Capabilities.Drop).To(Equal([]corev1.Capability{"ALL"}))
	g.Expect(*pod.AutomountServiceAccountToken).To(BeFalse())

	// Volumes: the model cache (an emptyDir for downloads), /dev/shm in memory, /tmp.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	g.Expect(volumes).NotTo(HaveKey("model"), "no claim to mount")
	g.Expect(volumes["model-cache"].EmptyDir).NotTo(BeNil())
	g.Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "model-cache", MountPath: "/models/cache"}))
	g.Expect(c.Env).To(ContainElement(corev1.EnvVar{Name: "MOE_MODEL_CACHE", Value: "/models/cache"}))
	g.Expect(volumes["dshm"].EmptyDir.Medium).To(Equal(corev1.StorageMediumMemory))
	g.Expect(volumes["tmp"].EmptyDir).NotTo(BeNil())
	g.Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "dshm", MountPath: "/dev/shm"}))

	// The token Secret reaches the engine as HF_TOKEN.
	w.obj.Spec.Model.TokenSecretRef = &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "hf"}, Key: "token"}
	env := desiredDeployment(w).Spec.Template.Spec.Containers[0].Env
	g.Expect(env).To(ContainElement(corev1.EnvVar{Name: "HF_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: w.obj.Spec.Model.TokenSecretRef}}))
}

func TestPVCModelVolume(t *testing.T) {
	g := NewWithT(t)
	d := desiredDeployment(plannedWorkload(t, tinyCPU()))
	pod := d.Spec.Template.Spec
	g.Expect(pod.Volumes).To(ContainElement(corev1.Volume{Name: "model", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "moe-models", ReadOnly: true},
	}}))
	g.Expect(pod.Containers[0].VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "model", MountPath: "/models/pvc/moe-models", ReadOnly: true}))
	g.Expect(pod.Volumes).To(ContainElement(HaveField("Name", "dshm")))
	for _, v := range pod.Volumes {
		if v.Name == "dshm" {
			g.Expect(v.EmptyDir.SizeLimit.String()).To(Equal("256Mi"))
		}
	}
}

func TestTemplateHash(t *testing.T) {
	g := NewWithT(t)
	base := plannedWorkload(t, h100Preset())
	hash := func(mutate func(w *workload)) string {
		w := base
		obj := base.obj.DeepCopy()
		w.obj = obj
		mutate(&w)
		return desiredDeployment(w).Spec.Template.Labels[servingv1alpha1.LabelTemplateHash]
	}
	same := hash(func(*workload) {})
	g.Expect(same).To(Equal(hash(func(*workload) {})), "the hash is stable")
	g.Expect(hash(func(w *workload) { w.obj.Spec.Replicas = ptr.To[int32](7) })).To(Equal(same), "replicas do not touch the template")
	g.Expect(hash(func(w *workload) { w.plan.BatchSize++ })).NotTo(Equal(same), "a new batch size rolls the pods")
	g.Expect(hash(func(w *workload) { w.plan.Quantization = "Int4" })).NotTo(Equal(same), "a new quantization rolls the pods")
	g.Expect(hash(func(w *workload) { w.obj.Spec.Engine.ExtraArgs = []string{"--threads", "8"} })).NotTo(Equal(same))
	g.Expect(hash(func(w *workload) { w.image = "example.com/other:1" })).NotTo(Equal(same))
}

func TestSyncDeployment(t *testing.T) {
	g := NewWithT(t)
	w := plannedWorkload(t, h100Preset())
	desired := desiredDeployment(w)

	// What the API server stores: the desired object plus defaults it fills in.
	stored := desired.DeepCopy()
	stored.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyAlways
	stored.Spec.Template.Spec.DNSPolicy = corev1.DNSClusterFirst
	stored.Spec.Template.Spec.Containers[0].TerminationMessagePath = "/dev/termination-log"
	stored.Status.Replicas = 3
	g.Expect(syncDeployment(stored.DeepCopy(), desiredDeployment(w))).To(BeFalse(), "defaults are not drift")

	scaled := w
	scaled.obj = w.obj.DeepCopy()
	scaled.obj.Spec.Replicas = ptr.To[int32](11)
	existing := stored.DeepCopy()
	g.Expect(syncDeployment(existing, desiredDeployment(scaled))).To(BeTrue())
	g.Expect(*existing.Spec.Replicas).To(Equal(int32(11)))
	g.Expect(existing.Spec.Template.Spec.RestartPolicy).To(Equal(corev1.RestartPolicyAlways), "the template is kept when its hash is unchanged")

	replanned := w
	replanned.plan.BatchSize++
	existing = stored.DeepCopy()
	g.Expect(syncDeployment(existing, desiredDeployment(replanned))).To(BeTrue())
	g.Expect(existing.Spec.Template).To(Equal(desiredDeployment(replanned).Spec.Template), "a new hash replaces the template")
}

func TestSyncServiceAndPDB(t *testing.T) {
	g := NewWithT(t)
	w := plannedWorkload(t, h100Preset())
	svc := desiredService(w)
	stored := svc.DeepCopy()
	stored.Spec.ClusterIP = "10.0.0.12"
	stored.Spec.SessionAffinity = corev1.ServiceAffinityNone
	g.Expect(syncService(stored, desiredService(w))).To(BeFalse())
	g.Expect(svc.Spec.Ports[0].Name).To(Equal("http"))
	g.Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeClusterIP))

	w.obj.Spec.Engine.Port = 9000
	g.Expect(syncService(stored, desiredService(w))).To(BeTrue())
	g.Expect(stored.Spec.Ports[0].Port).To(Equal(int32(9000)))
	g.Expect(stored.Spec.ClusterIP).To(Equal("10.0.0.12"))

	// The served model name, which moe gateway routes by, follows spec.model.servedName;
	// others' annotations stay.
	g.Expect(svc.Annotations).To(HaveKeyWithValue(servingv1alpha1.AnnotationServedModelName, "mixtral-8x7b-instruct"))
	g.Expect(kube.AnnotationServedModelName).To(Equal(servingv1alpha1.AnnotationServedModelName), "the gateway reads the operator's annotation")
	g.Expect(kube.AnnotationHeldRequests).To(Equal(servingv1alpha1.AnnotationHeldRequests), "the operator reads the gateway's annotations")
	g.Expect(kube.AnnotationHeldAt).To(Equal(servingv1alpha1.AnnotationHeldAt))
	stored.Annotations["example.com/note"] = "kept"
	w.obj.Spec.Model.ServedName = "chat"
	g.Expect(syncService(stored, desiredService(w))).To(BeTrue())
	g.Expect(stored.Annotations).To(Equal(map[string]string{servingv1alpha1.AnnotationServedModelName: "chat", "example.com/note": "kept"}))

	pdb := desiredPodDisruptionBudget(w)
	g.Expect(pdb.Spec.MaxUnavailable.IntValue()).To(Equal(1))
	g.Expect(syncPodDisruptionBudget(pdb.DeepCopy(), desiredPodDisruptionBudget(w))).To(BeFalse())
}

func TestComputeStatus(t *testing.T) {
	planned := func(t *testing.T) *scope {
		w := plannedWorkload(t, h100Preset())
		w.obj.Generation = 4
		s := &scope{obj: w.obj, before: w.obj.DeepCopy(), workload: &w}
		s.obj.Status.Plan = &w.plan
		s.service = desiredService(w)
		s.deployment = desiredDeployment(w)
		s.deployment.Generation = 2
		return s
	}
	steady := func(s *scope) {
		n := *s.deployment.Spec.Replicas
		s.deployment.Status = appsv1.DeploymentStatus{
			ObservedGeneration: 2, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
			Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable"}},
		}
	}
	type want struct {
		planned, available, progressing, degraded string // "Status/Reason"
	}
	tests := []struct {
		name    string
		setup   func(t *testing.T) *scope
		err     error
		want    want
		wantGen int64
	}{
		{
			name:    "a new Deployment is rolling out and not yet available",
			setup:   planned,
			want:    want{"True/PlanFound", "False/NoReplicasReady", "True/RollingOut", "False/AsExpected"},
			wantGen: 4,
		},
		{
			name:    "every replica ready on the current template is available and complete",
			setup:   func(t *testing.T) *scope { s := planned(t); steady(s); return s },
			want:    want{"True/PlanFound", "True/ReplicasReady", "False/RolloutComplete", "False/AsExpected"},
			wantGen: 4,
		},
		{
			name: "a replica lost after the rollout is degraded, not progressing",
			setup: func(t *testing.T) *scope {
				s := planned(t)
				s.deployment.Spec.Replicas = ptr.To[int32](3)
				steady(s)
				s.deployment.Status.ReadyReplicas--
				s.deployment.Status.AvailableReplicas--
				return s
			},
			want:    want{"True/PlanFound", "True/ReplicasReady", "False/RolloutComplete", "True/ReplicasUnavailable"},
			wantGen: 4,
		},
		{
			name: "a rollout past its progress deadline is degraded",
			setup: func(t *testing.T) *scope {
				s := planned(t)
				s.deployment.Status.Conditions = []appsv1.DeploymentCondition{{
					Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded", Message: "ReplicaSet has timed out progressing.",
				}}
				return s
			},
			want:    want{"True/PlanFound", "False/NoReplicasReady", "True/RollingOut", "True/RolloutStalled"},
			wantGen: 4,
		},
		{
			name:    "a failed write is degraded and does not advance observedGeneration",
			setup:   planned,
			err:     errTest,
			want:    want{"True/PlanFound", "False/NoReplicasReady", "True/RollingOut", "True/ReconcileError"},
			wantGen: 0,
		},
		{
			name:    "a foreign child object is a conflict",
			setup:   planned,
			err:     &foreignChildError{kind: "Service", name: "chat"},
			want:    want{"True/PlanFound", "False/NoReplicasReady", "True/RollingOut", "True/ChildConflict"},
			wantGen: 0,
		},
		{
			name: "scaled to zero is not available",
			setup: func(t *testing.T) *scope {
				s := planned(t)
				s.deployment.Spec.Replicas = ptr.To[int32](0)
				s.deployment.Status.ObservedGeneration = 2
				return s
			},
			want:    want{"True/PlanFound", "False/ScaledToZero", "False/RolloutComplete", "False/AsExpected"},
			wantGen: 4,
		},
		{
			name: "infeasible targets without a workload report the planner's reason",
			setup: func(t *testing.T) *scope {
				obj := h100Preset()
				obj.Generation = 1
				return &scope{obj: obj, before: obj.DeepCopy(), planErr: errTest, planReason: servingv1alpha1.ReasonTargetsInfeasible}
			},
			want:    want{"False/TargetsInfeasible", "False/NotPlanned", "False/NotPlanned", "False/AsExpected"},
			wantGen: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			s := tt.setup(t)
			computeStatus(s, tt.err)
			got := func(condType string) string {
				c := findCondition(s.obj.Status.Conditions, condType)
				g.Expect(c).NotTo(BeNil(), condType)
				g.Expect(c.Message).NotTo(BeEmpty())
				g.Expect(c.ObservedGeneration).To(Equal(s.obj.Generation))
				return string(c.Status) + "/" + c.Reason
			}
			g.Expect(want{
				got(servingv1alpha1.ConditionPlanned), got(servingv1alpha1.ConditionAvailable),
				got(servingv1alpha1.ConditionProgressing), got(servingv1alpha1.ConditionDegraded),
			}).To(Equal(tt.want))
			g.Expect(s.obj.Status.ObservedGeneration).To(Equal(tt.wantGen))
			g.Expect(s.obj.Status.Selector).To(Equal(servingv1alpha1.LabelMixtralDeployment + "=" + s.obj.Name))
			g.Expect(s.obj.Status.Model).To(Equal("mixtral-8x7b-instruct"))
		})
	}
}

func TestComputeStatusIsStable(t *testing.T) {
	g := NewWithT(t)
	w := plannedWorkload(t, h100Preset())
	s := &scope{obj: w.obj, workload: &w, deployment: desiredDeployment(w), service: desiredService(w)}
	s.obj.Status.Plan = &w.plan
	computeStatus(s, nil)
	first := s.obj.Status.DeepCopy()
	computeStatus(s, nil)
	g.Expect(s.obj.Status).To(Equal(*first), "a second pass over the same inputs changes nothing")
	g.Expect(s.obj.Status.GPUs).To(Equal(w.plan.GPUsPerReplica * w.plan.Replicas))
	g.Expect(s.obj.Status.Endpoint).To(Equal("http://chat.team-a.svc:8000/v1"))
}
