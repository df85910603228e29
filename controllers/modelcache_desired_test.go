package controllers

import (
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// cachedH100 is the H100 preset with a 200Gi cache and a token.
func cachedH100() *servingv1alpha1.MixtralDeployment {
	o := h100Preset()
	o.Spec.Model.TokenSecretRef = &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "hf-token"}, Key: "token"}
	o.Spec.Model.Cache = &servingv1alpha1.ModelCacheSpec{Size: resource.MustParse("200Gi"), AccessMode: corev1.ReadWriteOnce, WhenDeleted: servingv1alpha1.CacheDelete}
	return o
}

func TestDesiredCacheClaim(t *testing.T) {
	tests := []struct {
		name      string
		cache     servingv1alpha1.ModelCacheSpec
		wantMode  corev1.PersistentVolumeAccessMode
		wantClass *string
	}{
		{
			name:     "defaults: the cluster's default class, ReadWriteOnce",
			cache:    servingv1alpha1.ModelCacheSpec{Size: resource.MustParse("200Gi")},
			wantMode: corev1.ReadWriteOnce,
		},
		{
			name:      "a named class and ReadWriteMany are passed through",
			cache:     servingv1alpha1.ModelCacheSpec{Size: resource.MustParse("100G"), StorageClassName: ptr.To("nfs"), AccessMode: corev1.ReadWriteMany},
			wantMode:  corev1.ReadWriteMany,
			wantClass: ptr.To("nfs"),
		},
		{
			name:      "an empty class asks for no class (a pre-provisioned volume)",
			cache:     servingv1alpha1.ModelCacheSpec{Size: resource.MustParse("1Ti"), StorageClassName: ptr.To("")},
			wantMode:  corev1.ReadWriteOnce,
			wantClass: ptr.To(""),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			obj := cachedH100()
			obj.Spec.Model.Cache = &tt.cache
			claim := desiredCacheClaim(plannedWorkload(t, obj))
			g.Expect(claim.Name).To(Equal("chat-model-cache"))
			g.Expect(claim.Namespace).To(Equal("team-a"))
			g.Expect(claim.Labels).To(HaveKeyWithValue(servingv1alpha1.LabelModelCache, "chat"))
			g.Expect(claim.Labels).NotTo(HaveKey(servingv1alpha1.LabelMixtralDeployment))
			g.Expect(claim.Spec.AccessModes).To(Equal([]corev1.PersistentVolumeAccessMode{tt.wantMode}))
			g.Expect(claim.Spec.StorageClassName).To(Equal(tt.wantClass))
			g.Expect(*claim.Spec.VolumeMode).To(Equal(corev1.PersistentVolumeFilesystem))
			size := claim.Spec.Resources.Requests[corev1.ResourceStorage]
			g.Expect(size.Cmp(tt.cache.Size)).To(BeZero())
			g.Expect(claim.OwnerReferences).To(BeEmpty(), "applyCacheClaim sets the owner, by whenDeleted")
		})
	}
}

func TestDesiredLoaderJob(t *testing.T) {
	g := NewWithT(t)
	obj := cachedH100()
	obj.Spec.Engine.Env = []corev1.EnvVar{{Name: "HF_ENDPOINT", Value: "https://mirror.example.com"}}
	obj.Spec.Engine.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
	w := plannedWorkload(t, obj)
	job := desiredLoaderJob(w)

	g.Expect(job.Name).To(HavePrefix("chat-pull-"))
	g.Expect(len(job.Name)).To(BeNumerically("<=", 63))
	g.Expect(job.Labels).To(HaveKeyWithValue(servingv1alpha1.LabelModelCache, "chat"))
	g.Expect(*job.Spec.BackoffLimit).To(Equal(loaderBackoffLimit))
	g.Expect(*job.Spec.Completions).To(Equal(int32(1)))
	g.Expect(*job.Spec.Parallelism).To(Equal(int32(1)))

	rules := job.Spec.PodFailurePolicy.Rules
	g.Expect(rules).To(HaveLen(2))
	g.Expect(rules[0].Action).To(Equal(batchv1.PodFailurePolicyActionFailJob))
	g.Expect(*rules[0].OnExitCodes.ContainerName).To(Equal("pull"))
	g.Expect(rules[0].OnExitCodes.Values).To(ConsistOf(int32(2), int32(3), int32(4), int32(5), int32(7)),
		"bad URI, token, not found, checksum and a full cache fail at once; 1 and 6 are retried")
	g.Expect(rules[1].Action).To(Equal(batchv1.PodFailurePolicyActionIgnore))
	g.Expect(rules[1].OnPodConditions).To(ConsistOf(HaveField("Type", corev1.DisruptionTarget)))

	pod := job.Spec.Template
	g.Expect(pod.Labels).NotTo(HaveKey(servingv1alpha1.LabelMixtralDeployment), "the Service, PDB and scale subresource must not count loader pods")
	g.Expect(pod.Labels).To(HaveKeyWithValue(servingv1alpha1.LabelModelCache, "chat"))
	g.Expect(pod.Annotations).To(HaveKeyWithValue(annotationCacheSize, "200Gi"))
	spec := pod.Spec
	g.Expect(spec.RestartPolicy).To(Equal(corev1.RestartPolicyNever), "podFailurePolicy needs it; the Job makes new pods")
	g.Expect(*spec.AutomountServiceAccountToken).To(BeFalse())
	g.Expect(spec.ImagePullSecrets).To(Equal([]corev1.LocalObjectReference{{Name: "regcred"}}))
	g.Expect(spec.NodeSelector).To(Equal(map[string]string{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}), "placed like the engine, for local volumes")
	g.Expect(spec.Tolerations).To(ContainElement(HaveField("Key", "nvidia.com/gpu")))
	g.Expect(spec.Affinity.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution).To(HaveLen(1), "a ReadWriteOnce loader prefers the replicas' node")
	g.Expect(*spec.SecurityContext.RunAsNonRoot).To(BeTrue())
	g.Expect(*spec.SecurityContext.FSGroup).To(Equal(int64(engineUID)), "the claim is writable by the engine's group")
	g.Expect(*spec.SecurityContext.FSGroupChangePolicy).To(Equal(corev1.FSGroupChangeOnRootMismatch))

	g.Expect(spec.Containers).To(HaveLen(1))
	c := spec.Containers[0]
	g.Expect(c.Name).To(Equal("pull"))
	g.Expect(c.Image).To(Equal(testImage))
	g.Expect(c.Args).To(Equal([]string{
		"pull", "hf://mistralai/Mixtral-8x7B-Instruct-v0.1",
		"--dest", "/models/cache",
		"--progress", "json",
		"--progress-interval", "5s",
		"--termination-log", "/dev/termination-log",
	}))
	g.Expect(c.Env).To(ContainElement(corev1.EnvVar{Name: "HF_TOKEN", ValueFrom: &corev1.EnvVarSource{
		SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "hf-token"}, Key: "token"},
	}}))
	g.Expect(c.Env).To(ContainElement(corev1.EnvVar{Name: "HF_ENDPOINT", Value: "https://mirror.example.com"}), "mirrors and proxies come from engine.env")
	g.Expect(c.Resources.Limits).NotTo(HaveKey(corev1.ResourceName("nvidia.com/gpu")), "the loader needs no GPU")
	g.Expect(c.Resources.Requests).NotTo(HaveKey(corev1.ResourceName("nvidia.com/gpu")))
	g.Expect(c.Resources.Limits.Memory().IsZero()).To(BeFalse())
	g.Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "model-cache", MountPath: "/models/cache"}), "the loader writes the claim")
	g.Expect(c.TerminationMessagePath).To(Equal("/dev/termination-log"))
	g.Expect(c.TerminationMessagePolicy).To(Equal(corev1.TerminationMessageFallbackToLogsOnError))
	g.Expect(*c.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
	g.Expect(*c.SecurityContext.AllowPrivilegeEscalation).To(BeFalse())
	g.Expect(spec.Volumes).To(ContainElement(corev1.Volume{Name: "model-cache", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "chat-model-cache"},
	}}))
}

// TestLoaderJobName: the Job's name is its pull's identity. What the pull depends on makes
// a new Job; what only the serving replicas depend on does not.
func TestLoaderJobName(t *testing.T) {
	base := desiredLoaderJob(plannedWorkload(t, cachedH100())).Name
	tests := []struct {
		name    string
		mutate  func(o *servingv1alpha1.MixtralDeployment)
		newPull bool
	}{
		{"another revision", func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Model = servingv1alpha1.ModelSpec{URI: "hf://mistralai/Mixtral-8x7B-Instruct-v0.1@refs%2Fpr%2F1", Shape: &servingv1alpha1.ModelShape{Preset: servingv1alpha1.PresetMixtral8x7BInstruct}, Cache: o.Spec.Model.Cache, TokenSecretRef: o.Spec.Model.TokenSecretRef}
		}, true},
		{"another token Secret", func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Model.TokenSecretRef.Name = "hf-token-2" }, true},
		{"a bigger cache (a pull that filled the old one is retried)", func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Model.Cache.Size = resource.MustParse("300Gi") }, true},
		{"another engine image", func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Engine.Image = "example.com/moe-engine:v2" }, true},
		{"a mirror in engine.env", func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Engine.Env = []corev1.EnvVar{{Name: "HF_ENDPOINT", Value: "https://mirror.example.com"}}
		}, true},
		{"more replicas", func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Replicas = ptr.To[int32](7) }, false},
		{"another served name", func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Model.ServedName = "chat" }, false},
		{"an engine flag", func(o *servingv1alpha1.MixtralDeployment) { o.Spec.Engine.ExtraArgs = []string{"--threads", "8"} }, false},
		{"another retention policy", func(o *servingv1alpha1.MixtralDeployment) {
			o.Spec.Model.Cache.WhenDeleted = servingv1alpha1.CacheRetain
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := cachedH100()
			tt.mutate(obj)
			name := desiredLoaderJob(plannedWorkload(t, obj)).Name
			if (name != base) != tt.newPull {
				t.Errorf("job name %q vs %q: want a new pull %v", name, base, tt.newPull)
			}
			if again := desiredLoaderJob(plannedWorkload(t, obj)).Name; again != name {
				t.Errorf("the name is not deterministic: %q then %q", name, again)
			}
		})
	}
}

func TestLoaderJobNameLength(t *testing.T) {
	long := strings.Repeat("a", 62) + "b"
	for _, mxd := range []string{"chat", long, strings.Repeat("a", 43) + "-" + strings.Repeat("c", 19)} {
		name := loaderJobName(mxd, "1q2w3e4r5t6y7")
		if len(name) > 63 || strings.Contains(name, "--") || !strings.HasSuffix(name, "-pull-1q2w3e4r5t6y7") {
			t.Errorf("loaderJobName(%q) = %q", mxd, name)
		}
	}
}

// TestEnginePodWithCache: replicas mount the claim read-only, open the pull from it, get no
// token, and share a node when the claim is ReadWriteOnce.
func TestEnginePodWithCache(t *testing.T) {
	tests := []struct {
		name         string
		mode         corev1.PersistentVolumeAccessMode
		wantAffinity bool
	}{
		{"ReadWriteOnce keeps the replicas on the claim's node", corev1.ReadWriteOnce, true},
		{"ReadWriteMany lets them spread", corev1.ReadWriteMany, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			obj := cachedH100()
			obj.Spec.Model.Cache.AccessMode = tt.mode
			d := desiredDeployment(plannedWorkload(t, obj))
			pod := d.Spec.Template.Spec
			c := pod.Containers[0]
			g.Expect(pod.Volumes).To(ContainElement(corev1.Volume{Name: "model-cache", VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "chat-model-cache", ReadOnly: true},
			}}))
			g.Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "model-cache", MountPath: "/models/cache", ReadOnly: true}))
			g.Expect(flagValue(c.Args, "--model")).To(Equal("hf://mistralai/Mixtral-8x7B-Instruct-v0.1"))
			g.Expect(flagValue(c.Args, "--model-cache")).To(Equal("/models/cache"))
			g.Expect(c.Env).NotTo(ContainElement(HaveField("Name", "HF_TOKEN")), "the cached model opens offline; only the loader holds the token")
			g.Expect(*pod.SecurityContext.FSGroupChangePolicy).To(Equal(corev1.FSGroupChangeOnRootMismatch))
			if tt.wantAffinity {
				terms := pod.Affinity.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution
				g.Expect(terms).To(HaveLen(1))
				g.Expect(terms[0].TopologyKey).To(Equal("kubernetes.io/hostname"))
				g.Expect(terms[0].LabelSelector.MatchLabels).To(Equal(d.Spec.Selector.MatchLabels))
			} else {
				g.Expect(pod.Affinity).To(BeNil())
			}
		})
	}

	t.Run("without a cache nothing changes", func(t *testing.T) {
		g := NewWithT(t)
		obj := cachedH100()
		withCache := desiredDeployment(plannedWorkload(t, obj)).Spec.Template
		obj.Spec.Model.Cache = nil
		without := desiredDeployment(plannedWorkload(t, obj)).Spec.Template
		g.Expect(without.Labels[templateHashKey]).NotTo(Equal(withCache.Labels[templateHashKey]))
		c := without.Spec.Containers[0]
		g.Expect(c.Args).NotTo(ContainElement("--model-cache"))
		g.Expect(c.Env).To(ContainElement(HaveField("Name", "HF_TOKEN")), "each replica downloads, so each needs the token")
		g.Expect(without.Spec.Affinity).To(BeNil())
		g.Expect(without.Spec.SecurityContext.FSGroupChangePolicy).To(BeNil())
		g.Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "model-cache", MountPath: "/models/cache"}))
	})
}
