package controllers

import (
	"strconv"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// The model cache (spec.model.cache): a PersistentVolumeClaim that one loader Job fills with
// `moe pull`, and that every engine replica then mounts read-only at modelCacheMountPath.
//
// A Job rather than an init container in each replica: it pulls once per model instead of
// once per replica (replicas never race for the same files or hit the Hub N times), it is
// one place to read progress and the outcome from, its backoffLimit and podFailurePolicy
// give bounded retries that stop at once on failures a retry cannot fix, and the replicas'
// pods stay free of the token and of write access to the cache.
const (
	loaderContainerName = "pull"
	// loaderBackoffLimit is how many failed loader pods the Job replaces before it fails.
	// `moe pull` already retries network failures inside each pod.
	loaderBackoffLimit = int32(3)
	// loaderProgressInterval is the pull's --progress-interval.
	loaderProgressInterval = "5s"
	// loaderTerminationLog is where the pull writes its final event for the pod's status.
	loaderTerminationLog = corev1.TerminationMessagePathDefault
	// annotationCacheSize, on the loader's pod template, records the claim size the pull
	// ran against: growing model.cache.size makes a new Job, so a pull that failed on a
	// full cache is retried on the bigger claim.
	annotationCacheSize = "serving.moe-operator.io/cache-size"
	hostnameTopologyKey = "kubernetes.io/hostname"
)

// Exit codes of `moe pull` (engine/source Exit*, restated because the manager does not link
// the engine; TestPullContract holds them equal).
const (
	pullExitUsage       = 2
	pullExitAuth        = 3
	pullExitNotFound    = 4
	pullExitChecksum    = 5
	pullExitUnavailable = 6
	pullExitStorage     = 7
)

// pullExitNotRetried are the exit codes no retry can fix without a change (of the URI, the
// token, the claim's size or the source): the Job fails on the first one.
var pullExitNotRetried = []int32{pullExitUsage, pullExitAuth, pullExitNotFound, pullExitChecksum, pullExitStorage}

// Resources of the loader container: downloading and hashing need little memory and about
// a core at full speed.
var (
	loaderCPURequest    = resource.MustParse("250m")
	loaderCPULimit      = resource.MustParse("2")
	loaderMemoryRequest = resource.MustParse("256Mi")
	loaderMemoryLimit   = resource.MustParse("1Gi")
)

// cacheSpec is spec.model.cache, nil without a cache.
func (w workload) cacheSpec() *servingv1alpha1.ModelCacheSpec {
	return w.obj.Spec.Model.Cache
}

// cacheAccessMode is the claim's access mode (ReadWriteOnce when the API default was not
// applied, as in objects built by hand).
func cacheAccessMode(c *servingv1alpha1.ModelCacheSpec) corev1.PersistentVolumeAccessMode {
	if c.AccessMode == "" {
		return corev1.ReadWriteOnce
	}
	return c.AccessMode
}

// cacheRetained reports whether the claim outlives its MixtralDeployment.
func cacheRetained(c *servingv1alpha1.ModelCacheSpec) bool {
	return c.WhenDeleted == servingv1alpha1.CacheRetain
}

// modelCacheClaimName is the default cache claim's name: one claim per MixtralDeployment.
func modelCacheClaimName(mxd string) string {
	return mxd + "-model-cache"
}

// cacheClaimName is the claim the cache lives on: model.cache.claimName, else the default.
func (w workload) cacheClaimName() string {
	if c := w.cacheSpec(); c != nil && c.ClaimName != "" {
		return c.ClaimName
	}
	return modelCacheClaimName(w.obj.Name)
}

// retainedBy is the AnnotationRetainedBy value that marks a claim kept for obj.
func retainedBy(obj *servingv1alpha1.MixtralDeployment) string {
	return obj.Namespace + "/" + obj.Name
}

// loaderJobName is the name of the loader Job for a pod template hash. Jobs are immutable,
// so a changed pull (URI, token, image, placement, size) is a new Job under a new name. The
// name stays within 63 characters, which the Job controller's job-name label needs.
func loaderJobName(mxd, hash string) string {
	const infix = "-pull-"
	prefix := mxd
	if n := 63 - len(infix) - len(hash); len(prefix) > n {
		prefix = strings.TrimRight(prefix[:n], "-")
	}
	return prefix + infix + hash
}

// modelCacheLabels go on the cache claim and the loader Job. They leave out the engine
// selector label, so neither the Service, the PDB nor the scale subresource counts loader
// pods.
func modelCacheLabels(mxd string) map[string]string {
	return map[string]string{
		servingv1alpha1.LabelModelCache: mxd,
		"app.kubernetes.io/name":        "moe-model-loader",
		"app.kubernetes.io/instance":    mxd,
		"app.kubernetes.io/component":   "model-cache",
		"app.kubernetes.io/managed-by":  "moe-operator",
	}
}

// desiredCacheClaim is the cache claim. Whether it carries an owner reference depends on
// whenDeleted; applyCacheClaim sets it. A retained claim records who retained it, which is
// what lets a later MixtralDeployment of that namespace and name take it over.
func desiredCacheClaim(w workload) *corev1.PersistentVolumeClaim {
	c := w.cacheSpec()
	var annotations map[string]string
	if cacheRetained(c) {
		annotations = map[string]string{servingv1alpha1.AnnotationRetainedBy: retainedBy(w.obj)}
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name: w.cacheClaimName(), Namespace: w.obj.Namespace, Labels: modelCacheLabels(w.obj.Name), Annotations: annotations,
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{cacheAccessMode(c)},
			StorageClassName: c.StorageClassName,
			VolumeMode:       ptr.To(corev1.PersistentVolumeFilesystem),
			Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: c.Size.DeepCopy()},
			},
		},
	}
}

// loaderArgs is the loader's command line after the image's `moe` entrypoint: the pull
// contract of cmd/moe/pull.go.
func (w workload) loaderArgs() []string {
	uri, _ := modelSource(w.obj.Spec.Model)
	return []string{
		"pull", uri,
		"--dest", modelCacheMountPath,
		"--progress", "json",
		"--progress-interval", loaderProgressInterval,
		"--termination-log", loaderTerminationLog,
	}
}

// loaderEnv gives the loader the token (the engine does not need it once the model is
// cached) and the user's environment, which is where HF_ENDPOINT (a mirror) and proxy
// settings live.
func (w workload) loaderEnv() []corev1.EnvVar {
	env := []corev1.EnvVar{
		{Name: "HOME", Value: tmpMountPath},
		{Name: modelCacheEnv, Value: modelCacheMountPath},
	}
	if ref := w.obj.Spec.Model.TokenSecretRef; ref != nil {
		env = append(env, corev1.EnvVar{Name: "HF_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: ref.DeepCopy()}})
	}
	for _, e := range w.obj.Spec.Engine.Env {
		env = append(env, *e.DeepCopy())
	}
	return env
}

// cacheAffinity keeps pods that share a ReadWriteOnce claim on one node: the engine pods
// require each other's node (the first one goes anywhere the claim can be used; local
// volumes pin it to theirs); the loader prefers their node, so that a new pull does not
// wait for the volume to detach from running replicas. Other access modes need none.
func (w workload) cacheAffinity(required bool) *corev1.Affinity {
	c := w.cacheSpec()
	if c == nil || cacheAccessMode(c) != corev1.ReadWriteOnce {
		return nil
	}
	term := corev1.PodAffinityTerm{
		LabelSelector: &metav1.LabelSelector{MatchLabels: selectorLabels(w.obj.Name)},
		TopologyKey:   hostnameTopologyKey,
	}
	if required {
		return &corev1.Affinity{PodAffinity: &corev1.PodAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{term},
		}}
	}
	return &corev1.Affinity{PodAffinity: &corev1.PodAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 100, PodAffinityTerm: term}},
	}}
}

// engineAffinity is the engine pods' affinity: spec.engine.affinity, with the required
// pod affinity term of a ReadWriteOnce cache added (required terms must all hold).
func (w workload) engineAffinity() *corev1.Affinity {
	cache := w.cacheAffinity(true)
	user := w.obj.Spec.Engine.Affinity
	switch {
	case user == nil:
		return cache
	case cache == nil:
		return user.DeepCopy()
	}
	a := user.DeepCopy()
	if a.PodAffinity == nil {
		a.PodAffinity = &corev1.PodAffinity{}
	}
	a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution = append(a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution,
		cache.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution...)
	return a
}

// fsGroupChangePolicy skips the kubelet's recursive ownership change of a cache volume
// that already has the right owner: walking a model's files on every mount takes minutes.
func (w workload) fsGroupChangePolicy() *corev1.PodFSGroupChangePolicy {
	if w.cacheSpec() == nil {
		return nil
	}
	return ptr.To(corev1.FSGroupChangeOnRootMismatch)
}

// modelCacheVolumeSource is where remote models live in the engine pods: the cache claim,
// read-only, or without a cache an emptyDir each pod downloads into.
func (w workload) modelCacheVolumeSource() corev1.VolumeSource {
	if w.cacheSpec() == nil {
		return corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	}
	return corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
		ClaimName: w.cacheClaimName(), ReadOnly: true,
	}}
}

// loaderPodTemplate is the loader Job's pod: the engine image running `moe pull` into the
// claim, placed like the engine pods (so a local volume lands on a node they can use) but
// requesting no accelerator, under the same restricted security context.
func (w workload) loaderPodTemplate() corev1.PodTemplateSpec {
	image, pullPolicy, pullSecrets := w.loaderImage()
	nodeSelector, tolerations := w.placement()
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{
			Labels:      modelCacheLabels(w.obj.Name),
			Annotations: map[string]string{annotationCacheSize: w.cacheSpec().Size.String()},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks:           ptr.To(false),
			NodeSelector:                 nodeSelector,
			Tolerations:                  tolerations,
			Affinity:                     w.cacheAffinity(false),
			ImagePullSecrets:             pullSecrets,
			SecurityContext:              restrictedPodSecurity(ptr.To(corev1.FSGroupChangeOnRootMismatch)),
			Containers: []corev1.Container{{
				Name:            loaderContainerName,
				Image:           image,
				ImagePullPolicy: pullPolicy,
				Args:            w.loaderArgs(),
				Env:             w.loaderEnv(),
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: loaderCPURequest.DeepCopy(), corev1.ResourceMemory: loaderMemoryRequest.DeepCopy()},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: loaderCPULimit.DeepCopy(), corev1.ResourceMemory: loaderMemoryLimit.DeepCopy()},
				},
				VolumeMounts: []corev1.VolumeMount{
					{Name: modelCacheVolumeName, MountPath: modelCacheMountPath},
					{Name: tmpVolumeName, MountPath: tmpMountPath},
				},
				SecurityContext: restrictedContainerSecurity(),
				// `moe pull --termination-log` writes its final event there; a crash before
				// it could shows the log's tail instead.
				TerminationMessagePath:   loaderTerminationLog,
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
			}},
			Volumes: []corev1.Volume{
				{Name: modelCacheVolumeName, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
					ClaimName: w.cacheClaimName(),
				}}},
				{Name: tmpVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(tmpSize.DeepCopy())}}},
			},
		},
	}
}

// desiredLoaderJob is the Job that fills the cache claim once. Its name carries the hash
// of its pod template. Failures no retry can fix fail the Job on the first pod; others are
// retried up to loaderBackoffLimit times with the Job controller's backoff; evictions and
// drains are not counted.
func desiredLoaderJob(w workload) *batchv1.Job {
	template := w.loaderPodTemplate()
	hash := templateHash(template)
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name: loaderJobName(w.obj.Name, hash), Namespace: w.obj.Namespace, Labels: modelCacheLabels(w.obj.Name),
			Annotations: map[string]string{annotationCacheSize: w.cacheSpec().Size.String()},
		},
		Spec: batchv1.JobSpec{
			BackoffLimit: ptr.To(loaderBackoffLimit),
			Completions:  ptr.To(int32(1)),
			Parallelism:  ptr.To(int32(1)),
			PodFailurePolicy: &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
				{
					Action: batchv1.PodFailurePolicyActionFailJob,
					OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
						ContainerName: ptr.To(loaderContainerName),
						Operator:      batchv1.PodFailurePolicyOnExitCodesOpIn,
						Values:        append([]int32(nil), pullExitNotRetried...),
					},
				},
				{
					Action:          batchv1.PodFailurePolicyActionIgnore,
					OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}},
				},
			}},
			Template: template,
		},
	}
}

// humanBytes formats a byte count for messages (decimal units, as `moe pull` prints).
func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return strconv.FormatFloat(float64(n)/1e9, 'f', 1, 64) + " GB"
	case n >= 1e6:
		return strconv.FormatFloat(float64(n)/1e6, 'f', 1, 64) + " MB"
	case n >= 1e3:
		return strconv.FormatFloat(float64(n)/1e3, 'f', 1, 64) + " kB"
	}
	return strconv.FormatInt(n, 10) + " B"
}
