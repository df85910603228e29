package controllers

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/planner"
)

// Names and paths shared by the engine pods.
const (
	engineContainerName = "engine"
	// PortName is the name of the engine's HTTP port on the pods and the Service.
	PortName = "http"

	// The engine's mount contract (engine/source: PVCMountRoot, CacheMountPath): a claim
	// named in a pvc:// URI is mounted read-only at pvcMountRoot/<claim>, and remote models
	// are downloaded into modelCacheMountPath.
	modelVolumeName      = "model"
	pvcMountRoot         = "/models/pvc"
	modelCacheVolumeName = "model-cache"
	modelCacheMountPath  = "/models/cache"
	modelCacheEnv        = "MOE_MODEL_CACHE"
	shmVolumeName        = "dshm"
	shmMountPath         = "/dev/shm"
	tmpVolumeName        = "tmp"
	tmpMountPath         = "/tmp"

	// The API key (spec.engine.apiKeySecretRef): the one Secret key is mounted as the file
	// apiKeyMountDir/apiKeyFileName and named with --api-key-file, so the key is in no
	// argument and no environment variable. The file is readable by the engine's group
	// (the pod's fsGroup owns it) and nobody else.
	apiKeyVolumeName = "api-key"
	apiKeyMountDir   = "/var/run/secrets/moe"
	apiKeyFileName   = "api-key"
	apiKeyFileMode   = int32(0o440)
	// defaultAPIKeySecretKey is the Secret key read when apiKeySecretRef names none (the
	// API's default, for objects built by hand).
	defaultAPIKeySecretKey = "api-key"

	// engineUID is the unprivileged user the engine runs as (the distroless "nonroot" user).
	engineUID = 65532

	// gpuProductLabel is the node label NVIDIA GPU feature discovery sets to the GPU model.
	gpuProductLabel = "nvidia.com/gpu.product"

	templateHashKey = servingv1alpha1.LabelTemplateHash
)

// Startup budget: a pod must load the model within startupBase plus the time to read the
// model's BF16-sized weights at startupLoadBytesPerSecond (a download or a cold volume
// read). Mixtral-8x7B gets about 17.5 minutes, Mixtral-8x22B about 49.
const (
	startupBase               = 2 * time.Minute
	startupLoadBytesPerSecond = 100e6
	startupProbePeriodSeconds = 10
	// rolloutSlack is added to the startup budget for the Deployment's progress deadline.
	rolloutSlack = 10 * time.Minute
)

// Default resources per replica when spec.engine.resources leaves them out.
var (
	cpuPerGPU       = resource.MustParse("4")
	memoryPerGPU    = resource.MustParse("16Gi")
	cpuEngineCPU    = resource.MustParse("2")
	gpuShmSize      = resource.MustParse("1Gi")
	cpuShmSize      = resource.MustParse("256Mi")
	tmpSize         = resource.MustParse("1Gi")
	engineStopGrace = int64(45)
	// endpointDrainSeconds is how long a stopping engine pod keeps serving before it is sent
	// SIGTERM (a preStop sleep): long enough for the endpoint controller and every
	// kube-proxy to stop routing new connections to it, so that no request meets its drain
	// (503) during a rollout or scale-down. The engine then gets the rest of
	// engineStopGrace (its --shutdown-grace is 30 s) to finish the requests in flight.
	endpointDrainSeconds = int64(5)
	deploymentHistory    = int32(3)
	engineManagedFlags   = []string{"--model", "--quantization", "--tensor-parallel", "--port", "--served-model-name", "--ctx-size", "--max-num-seqs", "--kv-cache-tokens", "--device"}
	defaultEnginePort    = int32(8000)
	defaultResourceName  = corev1.ResourceName("nvidia.com/gpu")
)

// workload is everything the desired-object builders read: the object, the plan in effect
// and the catalog entries it was made from. Building one is the only place the spec and
// the plan meet; the builders below are pure functions of it.
type workload struct {
	obj         *servingv1alpha1.MixtralDeployment
	plan        servingv1alpha1.Plan
	model       planner.Model
	accelerator planner.Accelerator
	// image is the engine image to run when spec.engine.image is empty: the moe engine's or
	// vLLM's, by the runtime.
	image string
	// moeImage is the operator's moe engine image, which the model loader Job runs
	// (`moe pull`) whatever the runtime.
	moeImage string
}

// replicas is spec.replicas when set (by a user, an HPA or the autoscaler), else the plan's.
func (w workload) replicas() int32 {
	if r := w.obj.Spec.Replicas; r != nil {
		return *r
	}
	return w.plan.Replicas
}

// gpus is the number of accelerator devices each engine pod requests: the replica's share
// of one node (all of them on one node), none on cpu.
func (w workload) gpus() int32 {
	if w.obj.Spec.Accelerator.Type == servingv1alpha1.AcceleratorCPU {
		return 0
	}
	return w.plan.GPUsPerReplica / w.nodes()
}

func (w workload) resourceName() corev1.ResourceName {
	if n := w.obj.Spec.Accelerator.ResourceName; n != "" {
		return n
	}
	return defaultResourceName
}

func (w workload) port() int32 {
	if p := w.obj.Spec.Engine.Port; p != 0 {
		return p
	}
	return defaultEnginePort
}

// selectorLabels select the engine pods of one MixtralDeployment.
func selectorLabels(name string) map[string]string {
	return map[string]string{servingv1alpha1.LabelMixtralDeployment: name}
}

// commonLabels go on every object the operator creates.
func commonLabels(name string) map[string]string {
	l := selectorLabels(name)
	l["app.kubernetes.io/name"] = "moe-engine"
	l["app.kubernetes.io/instance"] = name
	l["app.kubernetes.io/component"] = "engine"
	l["app.kubernetes.io/managed-by"] = "moe-operator"
	return l
}

// servedModelName is the model name clients send: spec.model.servedName, else the preset,
// else the object's name.
func servedModelName(obj *servingv1alpha1.MixtralDeployment) string {
	switch {
	case obj.Spec.Model.ServedName != "":
		return obj.Spec.Model.ServedName
	case obj.Spec.Model.Preset != "":
		return string(obj.Spec.Model.Preset)
	}
	return obj.Name
}

// modelDisplayName is status.model: the preset or the URI.
func modelDisplayName(m servingv1alpha1.ModelSpec) string {
	if m.Preset != "" {
		return string(m.Preset)
	}
	return m.URI
}

// modelSource returns the engine's --model argument and, for pvc:// URIs, the claim to
// mount. The engine resolves every URI form itself (a pvc:// URI under pvcMountRoot), so the
// argument is spec.model.uri, or the preset's source.
func modelSource(m servingv1alpha1.ModelSpec) (arg, claim string) {
	uri := m.URI
	if m.Preset != "" {
		uri = presetSources[m.Preset]
	}
	if rest, ok := strings.CutPrefix(uri, "pvc://"); ok {
		claim, _, _ = strings.Cut(rest, "/")
	}
	return uri, claim
}

// contextSize is the engine's --ctx-size: spec.targets.maxContextLength or the model's.
func (w workload) contextSize() int32 {
	if c := w.obj.Spec.Targets.MaxContextLength; c > 0 {
		return c
	}
	return int32(w.model.ContextLength)
}

// kvCacheTokens is the KV cache the plan sized memory for: the batch's typical
// sequences (prompt + output each), and never less than one full context. The
// engine gets exactly that, so it stays inside the memory the pod requests.
func (w workload) kvCacheTokens() int32 {
	t := w.obj.Spec.Targets
	perSeq := t.PromptTokens + t.OutputTokens
	return max(w.plan.BatchSize*perSeq, w.contextSize())
}

// engineArgs is the engine's command line after the image's `moe` entrypoint.
func (w workload) engineArgs() []string {
	model, _ := modelSource(w.obj.Spec.Model)
	args := []string{
		"serve",
		"--model", model,
		"--quantization", strings.ToLower(w.plan.Quantization),
		"--tensor-parallel", strconv.Itoa(int(w.plan.TensorParallelism)),
		"--port", strconv.Itoa(int(w.port())),
		"--served-model-name", servedModelName(w.obj),
		"--ctx-size", strconv.Itoa(int(w.contextSize())),
		"--max-num-seqs", strconv.Itoa(int(w.plan.BatchSize)),
		"--kv-cache-tokens", strconv.Itoa(int(w.kvCacheTokens())),
		"--device", w.engineDevice(),
	}
	if w.cacheSpec() != nil {
		// The loader Job filled the cache claim; the engine opens the pull from it offline.
		args = append(args, "--model-cache", modelCacheMountPath)
	}
	if w.apiKeyRef() != nil {
		args = append(args, "--api-key-file", apiKeyPath())
	}
	return append(args, w.obj.Spec.Engine.ExtraArgs...)
}

// engineDevice is the moe engine's --device: its Vulkan backend on GPU accelerators, so
// that a pod granted GPUs computes on them or fails at load saying why (rather than
// falling back to the CPU that it was not sized for), and the CPU otherwise.
func (w workload) engineDevice() string {
	if w.gpus() > 0 {
		return "vulkan"
	}
	return "cpu"
}

// apiKeyRef is spec.engine.apiKeySecretRef with its key defaulted; nil without one.
func (w workload) apiKeyRef() *servingv1alpha1.APIKeySecretReference {
	ref := w.obj.Spec.Engine.APIKeySecretRef
	if ref == nil {
		return nil
	}
	out := *ref
	if out.Key == "" {
		out.Key = defaultAPIKeySecretKey
	}
	return &out
}

// apiKeyPath is the API key file inside the engine container.
func apiKeyPath() string { return apiKeyMountDir + "/" + apiKeyFileName }

// startupTimeout is how long a pod may take to become ready the first time.
func (w workload) startupTimeout() time.Duration {
	if t := w.obj.Spec.Engine.StartupTimeout; t != nil {
		return t.Duration
	}
	load := float64(w.model.WeightBytes(planner.BF16)) / startupLoadBytesPerSecond
	return startupBase + time.Duration(load*float64(time.Second)).Round(time.Second)
}

// startupFailureThreshold spreads the startup timeout over probes every
// startupProbePeriodSeconds.
func (w workload) startupFailureThreshold() int32 {
	return int32(math.Ceil(w.startupTimeout().Seconds() / startupProbePeriodSeconds))
}

func (w workload) shmSize() resource.Quantity {
	if w.isVLLM() {
		return w.vllmShmSize()
	}
	if w.gpus() == 0 {
		return cpuShmSize
	}
	return gpuShmSize
}

// defaultResources are the CPU and memory a replica requests when the user does not say:
// per GPU on accelerators; on cpu, the plan's memory (weights, KV cache, runtime).
func (w workload) defaultResources() (cpu, memory resource.Quantity) {
	shm := w.shmSize()
	if g := int64(w.gpus()); g > 0 {
		cpu = *resource.NewQuantity(cpuPerGPU.Value()*g, resource.DecimalSI)
		memory = *resource.NewQuantity(memoryPerGPU.Value()*g+shm.Value(), resource.BinarySI)
		return cpu, memory
	}
	const mib = 1 << 20
	planned := (w.plan.MemoryPerGPUBytes + mib - 1) / mib * mib
	return cpuEngineCPU.DeepCopy(), *resource.NewQuantity(planned+shm.Value(), resource.BinarySI)
}

// resources merges spec.engine.resources over the defaults and sets the accelerator
// resource to the plan's GPUs per replica. Requests and limits are equal unless the user
// says otherwise, which gives the engine Guaranteed QoS.
func (w workload) resources() corev1.ResourceRequirements {
	user := w.obj.Spec.Engine.Resources
	cpu, memory := w.defaultResources()
	defaults := corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: memory}
	out := corev1.ResourceRequirements{Requests: corev1.ResourceList{}, Limits: corev1.ResourceList{}}
	for name, q := range user.Requests {
		out.Requests[name] = q.DeepCopy()
	}
	for name, q := range user.Limits {
		out.Limits[name] = q.DeepCopy()
	}
	for name, def := range defaults {
		req, hasReq := user.Requests[name]
		limit, hasLimit := user.Limits[name]
		switch {
		case hasReq && !hasLimit:
			out.Limits[name] = req.DeepCopy()
		case !hasReq && hasLimit:
			if limit.Cmp(def) < 0 {
				def = limit
			}
			out.Requests[name] = def.DeepCopy()
		case !hasReq && !hasLimit:
			out.Requests[name] = def.DeepCopy()
			out.Limits[name] = def.DeepCopy()
		}
	}
	if g := int64(w.gpus()); g > 0 {
		n := *resource.NewQuantity(g, resource.DecimalSI)
		out.Requests[w.resourceName()] = n
		out.Limits[w.resourceName()] = n.DeepCopy()
	}
	return out
}

// placement is the pods' node selector and tolerations: the GPU product label and the GPU
// taint for accelerators, replaced or extended by spec.accelerator.
func (w workload) placement() (map[string]string, []corev1.Toleration) {
	spec := w.obj.Spec.Accelerator
	var selector map[string]string
	switch {
	case len(spec.NodeSelector) > 0:
		selector = make(map[string]string, len(spec.NodeSelector))
		for k, v := range spec.NodeSelector {
			selector[k] = v
		}
	case w.gpus() > 0 && w.accelerator.ProductLabel != "":
		selector = map[string]string{gpuProductLabel: w.accelerator.ProductLabel}
	}
	var tolerations []corev1.Toleration
	if w.gpus() > 0 {
		tolerations = append(tolerations, corev1.Toleration{
			Key: string(w.resourceName()), Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule,
		})
	}
	for _, t := range spec.Tolerations {
		tolerations = append(tolerations, *t.DeepCopy())
	}
	return selector, tolerations
}

func (w workload) env() []corev1.EnvVar {
	env := []corev1.EnvVar{
		// The root file system is read-only; tools that write under $HOME get a scratch folder.
		{Name: "HOME", Value: tmpMountPath},
		// Remote models (hf://, https://) are pulled into the cache volume.
		{Name: modelCacheEnv, Value: modelCacheMountPath},
	}
	if ref := w.obj.Spec.Model.TokenSecretRef; ref != nil && w.cacheSpec() == nil {
		// With a cache, only the loader Job downloads, so only it gets the token.
		env = append(env, corev1.EnvVar{Name: "HF_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: ref.DeepCopy()}})
	}
	if w.isVLLM() {
		env = append(env, w.vllmEnv()...)
	} else {
		env = append(env, w.deviceEnv()...)
	}
	for _, e := range w.obj.Spec.Engine.Env {
		env = append(env, *e.DeepCopy())
	}
	return env
}

// deviceEnv is what the NVIDIA container toolkit reads for the moe engine. A pod with
// NVIDIA GPUs asks for the graphics capability too: the toolkit mounts the Vulkan driver
// and its ICD file only with it. NVIDIA_VISIBLE_DEVICES is the device plugin's to set, to
// the GPUs it granted. A pod without GPUs sets it to void, so that a node whose default
// runtime is NVIDIA's exposes none to it.
func (w workload) deviceEnv() []corev1.EnvVar {
	switch {
	case w.gpus() == 0:
		return []corev1.EnvVar{{Name: "NVIDIA_VISIBLE_DEVICES", Value: "void"}}
	case strings.HasPrefix(string(w.resourceName()), "nvidia.com/"):
		return []corev1.EnvVar{{Name: "NVIDIA_DRIVER_CAPABILITIES", Value: "compute,utility,graphics"}}
	}
	return nil
}

// volumes are the model cache (the spec.model.cache claim, read-only, or an emptyDir that
// lives as long as the pod), the pvc:// claim if any, /dev/shm in memory and a scratch /tmp.
func (w workload) volumes() ([]corev1.Volume, []corev1.VolumeMount) {
	shm, tmp := w.shmSize(), tmpSize
	if w.isVLLM() {
		tmp = vllmTmpSize
	}
	volumes := []corev1.Volume{
		{Name: modelCacheVolumeName, VolumeSource: w.modelCacheVolumeSource()},
		{Name: shmVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: &shm}}},
		{Name: tmpVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(tmp.DeepCopy())}}},
	}
	mounts := []corev1.VolumeMount{
		{Name: modelCacheVolumeName, MountPath: modelCacheMountPath, ReadOnly: w.cacheSpec() != nil},
		{Name: shmVolumeName, MountPath: shmMountPath},
		{Name: tmpVolumeName, MountPath: tmpMountPath},
	}
	if ref := w.apiKeyRef(); ref != nil && !w.isVLLM() {
		// Optional, so that a missing Secret or key does not leave the pod stuck in
		// ContainerCreating behind a mount error only its events show: the engine starts,
		// finds no file and exits with an error naming the path, which the pod's status
		// carries (and the Degraded condition reports, see apiKeyFailure). The engine never
		// serves without the key; once the Secret has it, the restarted container reads it.
		volumes = append(volumes, corev1.Volume{Name: apiKeyVolumeName, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{
				SecretName:  ref.Name,
				Items:       []corev1.KeyToPath{{Key: ref.Key, Path: apiKeyFileName}},
				DefaultMode: ptr.To(apiKeyFileMode),
				Optional:    ptr.To(true),
			},
		}})
		mounts = append(mounts, corev1.VolumeMount{Name: apiKeyVolumeName, MountPath: apiKeyMountDir, ReadOnly: true})
	}
	for _, v := range w.obj.Spec.Engine.Volumes {
		volumes = append(volumes, *v.DeepCopy())
	}
	for _, m := range w.obj.Spec.Engine.VolumeMounts {
		mounts = append(mounts, *m.DeepCopy())
	}
	if _, claim := modelSource(w.obj.Spec.Model); claim != "" {
		volumes = append(volumes, corev1.Volume{Name: modelVolumeName, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: true},
		}})
		mounts = append(mounts, corev1.VolumeMount{Name: modelVolumeName, MountPath: pvcMountRoot + "/" + claim, ReadOnly: true})
	}
	return volumes, mounts
}

func httpProbe(path string, period, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromString(PortName), Scheme: corev1.URISchemeHTTP,
		}},
		PeriodSeconds:    period,
		TimeoutSeconds:   5,
		SuccessThreshold: 1,
		FailureThreshold: failures,
	}
}

// restrictedPodSecurity is the pod security context of the engine and loader pods (Pod
// Security "restricted"): the engine's user and group, which also own mounted volumes.
func restrictedPodSecurity(fsPolicy *corev1.PodFSGroupChangePolicy) *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:        ptr.To(true),
		RunAsUser:           ptr.To(int64(engineUID)),
		RunAsGroup:          ptr.To(int64(engineUID)),
		FSGroup:             ptr.To(int64(engineUID)),
		FSGroupChangePolicy: fsPolicy,
		SeccompProfile:      &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// restrictedContainerSecurity is their containers' security context: non-root, no
// privilege escalation, a read-only root filesystem, no capabilities.
func restrictedContainerSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Privileged:               ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// engineImage is the engine image (the operator's default unless the spec names one),
// its pull policy and pull secrets, for the engine pods and the model loader alike.
func (w workload) engineImage() (string, corev1.PullPolicy, []corev1.LocalObjectReference) {
	image := w.obj.Spec.Engine.Image
	if image == "" {
		image = w.image
	}
	pullPolicy := w.obj.Spec.Engine.ImagePullPolicy
	if pullPolicy == "" {
		pullPolicy = corev1.PullIfNotPresent
	}
	var pullSecrets []corev1.LocalObjectReference
	for _, s := range w.obj.Spec.Engine.ImagePullSecrets {
		pullSecrets = append(pullSecrets, s)
	}
	return image, pullPolicy, pullSecrets
}

// loaderImage is the model loader's image: the engine's for the moe runtime (so a custom
// engine image pulls with its own `moe`), the operator's moe image for vLLM.
func (w workload) loaderImage() (string, corev1.PullPolicy, []corev1.LocalObjectReference) {
	image, pullPolicy, pullSecrets := w.engineImage()
	if w.isVLLM() {
		return w.moeImage, corev1.PullIfNotPresent, pullSecrets
	}
	return image, pullPolicy, pullSecrets
}

// podTemplate is the engine pod template of a single-node replica, without the
// template-hash label.
func (w workload) podTemplate() corev1.PodTemplateSpec { return w.podTemplateFor(roleSingle) }

// container is the engine container's command, arguments, ports and probes for a role:
// `moe serve` (the image's entrypoint), or vLLM's server, leader or worker.
func (w workload) container(role podRole) corev1.Container {
	port := []corev1.ContainerPort{{Name: PortName, ContainerPort: w.port(), Protocol: corev1.ProtocolTCP}}
	if !w.isVLLM() {
		// Loading can take many minutes: the startup probe holds off liveness until the
		// model is ready, within a budget sized from the model.
		return corev1.Container{
			Args:           w.engineArgs(),
			Ports:          port,
			StartupProbe:   httpProbe("/ready", startupProbePeriodSeconds, w.startupFailureThreshold()),
			ReadinessProbe: httpProbe("/ready", 5, 3),
			LivenessProbe:  httpProbe("/health", 10, 6),
		}
	}
	command, args := w.vllmCommand(role)
	c := corev1.Container{Command: command, Args: args}
	if role == roleWorker {
		// A worker serves nothing; the leader's probes speak for the group, and LWS
		// recreates the group when a worker fails.
		return c
	}
	if role == roleLeader {
		port = append(port, corev1.ContainerPort{Name: "ray", ContainerPort: rayPort, Protocol: corev1.ProtocolTCP})
	}
	// vLLM answers /health once the model is loaded and the server runs.
	c.Ports = port
	c.StartupProbe = httpProbe("/health", startupProbePeriodSeconds, w.startupFailureThreshold())
	c.ReadinessProbe = httpProbe("/health", 5, 3)
	c.LivenessProbe = httpProbe("/health", 10, 6)
	return c
}

// podTemplateFor is the engine pod template for a role, without the template-hash label.
func (w workload) podTemplateFor(role podRole) corev1.PodTemplateSpec {
	name := w.obj.Name
	image, pullPolicy, pullSecrets := w.engineImage()
	nodeSelector, tolerations := w.placement()
	volumes, mounts := w.volumes()
	spec := w.obj.Spec.Engine
	engine := w.container(role)
	// The user's labels and annotations first: the operator's keys win (and CEL refuses them).
	labels := withUserKeys(commonLabels(name), spec.PodLabels)
	own := map[string]string{}
	if role != roleWorker {
		own = map[string]string{
			"prometheus.io/scrape": "true",
			"prometheus.io/port":   strconv.Itoa(int(w.port())),
			"prometheus.io/path":   "/metrics",
		}
	}
	annotations := withUserKeys(own, spec.PodAnnotations)
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			TerminationGracePeriodSeconds: ptr.To(engineStopGrace),
			NodeSelector:                  nodeSelector,
			Tolerations:                   tolerations,
			Affinity:                      w.engineAffinity(),
			TopologySpreadConstraints:     w.spread(),
			PriorityClassName:             spec.PriorityClassName,
			ServiceAccountName:            spec.ServiceAccountName,
			RuntimeClassName:              spec.RuntimeClassName,
			ImagePullSecrets:              pullSecrets,
			SecurityContext:               restrictedPodSecurity(w.fsGroupChangePolicy()),
			Containers: []corev1.Container{{
				Name:            engineContainerName,
				Image:           image,
				ImagePullPolicy: pullPolicy,
				Command:         engine.Command,
				Args:            engine.Args,
				Ports:           engine.Ports,
				Env:             w.env(),
				Resources:       w.resources(),
				VolumeMounts:    mounts,
				StartupProbe:    engine.StartupProbe,
				ReadinessProbe:  engine.ReadinessProbe,
				LivenessProbe:   engine.LivenessProbe,
				Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
					Sleep: &corev1.SleepAction{Seconds: endpointDrainSeconds},
				}},
				SecurityContext:          restrictedContainerSecurity(),
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
			Volumes: volumes,
		},
	}
}

// withUserKeys adds the user's keys to the operator's map own, whose keys win.
func withUserKeys(own, user map[string]string) map[string]string {
	for k, v := range user {
		if _, taken := own[k]; !taken {
			own[k] = v
		}
	}
	return own
}

// spread is spec.engine.topologySpreadConstraints, a constraint without a selector
// selecting this MixtralDeployment's pods.
func (w workload) spread() []corev1.TopologySpreadConstraint {
	var out []corev1.TopologySpreadConstraint
	for _, c := range w.obj.Spec.Engine.TopologySpreadConstraints {
		c := *c.DeepCopy()
		if c.LabelSelector == nil {
			c.LabelSelector = &metav1.LabelSelector{MatchLabels: selectorLabels(w.obj.Name)}
		}
		out = append(out, c)
	}
	return out
}

// templateHash is a short, stable hash of a pod template.
func templateHash(t corev1.PodTemplateSpec) string {
	data, err := json.Marshal(t)
	if err != nil {
		// A PodTemplateSpec always marshals; a failure is a programmer error.
		panic(fmt.Sprintf("controllers: hashing pod template: %v", err))
	}
	h := fnv.New64a()
	_, _ = h.Write(data)
	return strconv.FormatUint(h.Sum64(), 36)
}

// desiredDeployment is the engine Deployment for w.
func desiredDeployment(w workload) *appsv1.Deployment {
	template := w.podTemplate()
	hash := templateHash(template)
	template.Labels[templateHashKey] = hash
	labels := commonLabels(w.obj.Name)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: w.obj.Name, Namespace: w.obj.Namespace, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(w.replicas()),
			Selector: &metav1.LabelSelector{MatchLabels: selectorLabels(w.obj.Name)},
			Template: template,
			// One new pod at a time and none taken down before it is ready: serving
			// continues through a rollout, which needs room for one extra replica.
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxSurge:       ptr.To(intstr.FromInt32(1)),
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
				},
			},
			RevisionHistoryLimit:    ptr.To(deploymentHistory),
			ProgressDeadlineSeconds: ptr.To(int32((w.startupTimeout() + rolloutSlack).Seconds())),
		},
	}
}

// desiredService is the ClusterIP Service in front of the engine pods, annotated with the
// model name it serves (for `moe gateway`).
func desiredService(w workload) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: w.obj.Name, Namespace: w.obj.Namespace, Labels: commonLabels(w.obj.Name),
			Annotations: map[string]string{servingv1alpha1.AnnotationServedModelName: servedModelName(w.obj)}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: servingLabels(w.obj),
			Ports: []corev1.ServicePort{{
				Name: PortName, Port: w.port(), TargetPort: intstr.FromString(PortName), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
}

// desiredPodDisruptionBudget lets voluntary disruptions (drains, upgrades) take one engine
// pod at a time. Pods that never became ready may always be evicted, so a pod stuck loading
// does not block a drain.
func desiredPodDisruptionBudget(w workload) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: w.obj.Name, Namespace: w.obj.Namespace, Labels: commonLabels(w.obj.Name)},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable:             ptr.To(intstr.FromInt32(1)),
			Selector:                   &metav1.LabelSelector{MatchLabels: selectorLabels(w.obj.Name)},
			UnhealthyPodEvictionPolicy: ptr.To(policyv1.AlwaysAllow),
		},
	}
}

// endpoint is the in-cluster base URL of the OpenAI API.
func endpoint(obj *servingv1alpha1.MixtralDeployment, port int32) string {
	return fmt.Sprintf("http://%s.%s.svc:%d/v1", obj.Name, obj.Namespace, port)
}
