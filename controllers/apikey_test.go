package controllers

import (
	"context"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

func withAPIKey(o *servingv1alpha1.MixtralDeployment, name, key string) *servingv1alpha1.MixtralDeployment {
	o.Spec.Engine.APIKeySecretRef = &servingv1alpha1.APIKeySecretReference{Name: name, Key: key}
	return o
}

// TestAPIKeyVolume: the Secret key is one read-only file, readable by the engine's group
// only, named with --api-key-file, and the key reaches no argument and no environment
// variable.
func TestAPIKeyVolume(t *testing.T) {
	g := NewWithT(t)
	obj := withAPIKey(tinyCPU(), "engine-key", "")
	obj.Spec.Engine.ExtraArgs = []string{"--max-queue", "64"}
	pod := desiredDeployment(plannedWorkload(t, obj)).Spec.Template.Spec
	c := pod.Containers[0]

	g.Expect(flagValue(c.Args, "--api-key-file")).To(Equal("/var/run/secrets/moe/api-key"))
	g.Expect(c.Args[len(c.Args)-2:]).To(Equal([]string{"--max-queue", "64"}), "extra args still come last")
	g.Expect(c.Args).NotTo(ContainElement("--api-key"))
	for _, e := range c.Env {
		g.Expect(e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "engine-key").To(BeTrue(),
			"the key is not in the environment (%s)", e.Name)
	}
	g.Expect(pod.Volumes).To(ContainElement(corev1.Volume{Name: "api-key", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName:  "engine-key",
		Items:       []corev1.KeyToPath{{Key: "api-key", Path: "api-key"}},
		DefaultMode: ptr.To(int32(0o440)),
		Optional:    ptr.To(true),
	}}}), "one item, the key defaulting to api-key, mode 0440")
	g.Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "api-key", MountPath: "/var/run/secrets/moe", ReadOnly: true}))
	// 0440 is readable by the engine because the pod runs in the group that owns the file.
	g.Expect(*pod.SecurityContext.FSGroup).To(Equal(*pod.SecurityContext.RunAsGroup))
	g.Expect(*pod.SecurityContext.RunAsUser).NotTo(BeZero())

	plain := desiredDeployment(plannedWorkload(t, tinyCPU())).Spec.Template.Spec
	g.Expect(plain.Containers[0].Args).NotTo(ContainElement("--api-key-file"))
	g.Expect(plain.Volumes).NotTo(ContainElement(HaveField("Name", "api-key")))
}

// TestAPIKeyReferenceRollsThePods: another Secret or key is another template hash.
func TestAPIKeyReferenceRollsThePods(t *testing.T) {
	g := NewWithT(t)
	hash := func(o *servingv1alpha1.MixtralDeployment) string {
		return desiredDeployment(plannedWorkload(t, o)).Spec.Template.Labels[servingv1alpha1.LabelTemplateHash]
	}
	none := hash(tinyCPU())
	a := hash(withAPIKey(tinyCPU(), "key-a", "api-key"))
	g.Expect(a).NotTo(Equal(none))
	g.Expect(hash(withAPIKey(tinyCPU(), "key-a", ""))).To(Equal(a), "the defaulted key is the same reference")
	g.Expect(hash(withAPIKey(tinyCPU(), "key-b", "api-key"))).NotTo(Equal(a))
	g.Expect(hash(withAPIKey(tinyCPU(), "key-a", "token"))).NotTo(Equal(a))
}

func TestAPIKeyFailure(t *testing.T) {
	obj := withAPIKey(tinyCPU(), "engine-key", "api-key")
	ref := plannedWorkload(t, obj).apiKeyRef()
	template := desiredDeployment(plannedWorkload(t, obj)).Spec.Template
	pod := func(state, last *corev1.ContainerStateTerminated) corev1.Pod {
		return corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "tiny-abc", Labels: template.Labels},
			Spec:       template.Spec,
			Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
				Name:                 "engine",
				State:                corev1.ContainerState{Terminated: state},
				LastTerminationState: corev1.ContainerState{Terminated: last},
			}}},
		}
	}
	missing := &corev1.ContainerStateTerminated{ExitCode: 1, Message: "moe: reading the API key: open /var/run/secrets/moe/api-key: no such file or directory\n"}
	tests := []struct {
		name string
		pods []corev1.Pod
		want string
	}{
		{name: "no pods, nothing to report", pods: nil},
		{name: "a pod that runs", pods: []corev1.Pod{pod(nil, nil)}},
		{name: "a pod whose last exit is another failure", pods: []corev1.Pod{pod(nil, &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"})}},
		{
			name: "a crash-looping pod that found no key file names the Secret and the key",
			pods: []corev1.Pod{pod(nil, missing)},
			want: `Engine pod tiny-abc cannot read its API key (moe: reading the API key: open /var/run/secrets/moe/api-key: no such file or directory). Put the key into key "api-key" of Secret "engine-key" in namespace team-a (kubectl create secret generic engine-key -n team-a --from-literal=api-key=YOUR-KEY), or point engine.apiKeySecretRef at a Secret that has it; the restarting pods read it once the kubelet has updated their volume.`,
		},
		{
			name: "a pod that just exited on an empty key file",
			pods: []corev1.Pod{pod(&corev1.ContainerStateTerminated{ExitCode: 1, Message: "moe: the API key file /var/run/secrets/moe/api-key is empty"}, nil)},
			want: "Engine pod tiny-abc cannot read its API key (moe: the API key file /var/run/secrets/moe/api-key is empty).",
		},
		{
			name: "a pod that runs again once the key appeared is history",
			pods: func() []corev1.Pod {
				p := pod(nil, missing)
				p.Status.ContainerStatuses[0].State.Running = &corev1.ContainerStateRunning{}
				return []corev1.Pod{p}
			}(),
		},
		{
			name: "a pod of an earlier Secret reference is not reported against the current one",
			pods: func() []corev1.Pod {
				p := pod(nil, missing)
				p.Spec.Volumes = nil
				return []corev1.Pod{p}
			}(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			got := apiKeyFailure(obj, ref, tt.pods)
			if tt.want == "" {
				g.Expect(got).To(BeEmpty())
				return
			}
			g.Expect(got).To(HavePrefix(tt.want))
		})
	}
	NewWithT(t).Expect(apiKeyFailure(tinyCPU(), nil, []corev1.Pod{pod(nil, missing)})).To(BeEmpty(), "no reference, no API key failure")
}

// TestEnvtestAPIKeySecret: the Deployment carries the Secret volume and the flag, a pod
// that exits on a missing key turns Degraded to APIKeyUnavailable naming the Secret, and a
// new reference rolls the template.
func TestEnvtestAPIKeySecret(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g := NewWithT(t)
	obj := withAPIKey(loadSample(t, cpuSample, ns), "engine-key", "")
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	g.Expect(obj.Spec.Engine.APIKeySecretRef.Key).To(Equal("api-key"), "the API server defaults the key")
	obj = waitPlanned(t, ns, obj.Name)

	var d *appsv1.Deployment
	eventually(t, func(g Gomega) {
		d = get(g, ns, obj.Name, &appsv1.Deployment{})
		g.Expect(flagValue(engineContainer(d).Args, "--api-key-file")).To(Equal("/var/run/secrets/moe/api-key"))
	})
	g.Expect(d.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("Secret.SecretName", "engine-key")))
	g.Expect(strings.Join(engineContainer(d).Args, " ")).NotTo(ContainSubstring("engine-key"))

	// The pod the ReplicaSet would make (envtest has no controller-manager), crash-looping
	// on the missing file as `moe serve` does.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: obj.Name + "-0", Namespace: ns, Labels: d.Spec.Template.Labels},
		Spec:       d.Spec.Template.Spec,
	}
	g.Expect(k8sClient.Create(ctx, pod)).To(Succeed())
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "engine", Image: d.Spec.Template.Spec.Containers[0].Image, RestartCount: 2,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 1, Reason: "Error", Message: "moe: reading the API key: open /var/run/secrets/moe/api-key: no such file or directory",
		}},
	}}
	g.Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
	eventually(t, func(g Gomega) {
		degraded := condition(g, get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{}), servingv1alpha1.ConditionDegraded)
		g.Expect(degraded.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(degraded.Reason).To(Equal(servingv1alpha1.ReasonAPIKeyUnavailable))
		g.Expect(degraded.Message).To(ContainSubstring(`key "api-key" of Secret "engine-key" in namespace ` + ns))
	})

	// Another Secret: a new template (the pods roll), and the old pod no longer counts.
	got := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
	patch := client.MergeFrom(got.DeepCopy())
	got.Spec.Engine.APIKeySecretRef = &servingv1alpha1.APIKeySecretReference{Name: "other-key", Key: "token"}
	g.Expect(k8sClient.Patch(ctx, got, patch)).To(Succeed())
	eventually(t, func(g Gomega) {
		next := get(g, ns, obj.Name, &appsv1.Deployment{})
		g.Expect(next.Spec.Template.Labels[servingv1alpha1.LabelTemplateHash]).NotTo(Equal(d.Spec.Template.Labels[servingv1alpha1.LabelTemplateHash]))
		g.Expect(next.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("Secret.Items", []corev1.KeyToPath{{Key: "token", Path: "api-key"}})))
		degraded := condition(g, get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{}), servingv1alpha1.ConditionDegraded)
		g.Expect(degraded.Reason).NotTo(Equal(servingv1alpha1.ReasonAPIKeyUnavailable))
	})
}

func TestEngineExitFailure(t *testing.T) {
	pod := func(name string, st corev1.ContainerStatus) corev1.Pod {
		st.Name = engineContainerName
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{st}}}
	}
	truncated := &corev1.ContainerStateTerminated{ExitCode: 1,
		Message: "level=INFO msg=listening addr=:8000\nmoe: loading the model: /models/m.gguf: gguf: tensor data truncated: the file has 100 bytes, want 200\n"}
	waiting := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
	deleting := pod("old", corev1.ContainerStatus{State: waiting, LastTerminationState: corev1.ContainerState{Terminated: truncated}})
	deleting.DeletionTimestamp = &metav1.Time{}
	tests := []struct {
		name string
		pods []corev1.Pod
		want string
	}{
		{"no pods", nil, ""},
		{"a crash-looping pod says what the engine said last",
			[]corev1.Pod{pod("a", corev1.ContainerStatus{State: waiting, LastTerminationState: corev1.ContainerState{Terminated: truncated}})},
			"Engine pod a exited with code 1: moe: loading the model: /models/m.gguf: gguf: tensor data truncated: the file has 100 bytes, want 200. The kubelet restarts it"},
		{"an out-of-memory kill without a message gives the reason",
			[]corev1.Pod{pod("b", corev1.ContainerStatus{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}})},
			"Engine pod b exited with code 137: OOMKilled."},
		{"a pod that runs again is history",
			[]corev1.Pod{pod("c", corev1.ContainerStatus{State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}, LastTerminationState: corev1.ContainerState{Terminated: truncated}})}, ""},
		{"a clean exit is no failure",
			[]corev1.Pod{pod("d", corev1.ContainerStatus{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0}}})}, ""},
		{"a pod being deleted is not reported", []corev1.Pod{deleting}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			got := engineExitFailure(tt.pods)
			if tt.want == "" {
				g.Expect(got).To(BeEmpty())
				return
			}
			g.Expect(got).To(HavePrefix(tt.want))
		})
	}
}

// TestEnvtestEngineFailureIsReportedAndClears: an engine pod crash-looping on a model file it
// refuses turns Degraded to EngineFailing with the engine's last words and a Warning event;
// once the container runs again the condition clears.
func TestEnvtestEngineFailureIsReportedAndClears(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g := NewWithT(t)
	obj := loadSample(t, cpuSample, ns)
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	obj = waitPlanned(t, ns, obj.Name)
	var d *appsv1.Deployment
	eventually(t, func(g Gomega) { d = get(g, ns, obj.Name, &appsv1.Deployment{}) })

	// The pod the ReplicaSet would make (envtest has no controller-manager or kubelet).
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: obj.Name + "-0", Namespace: ns, Labels: d.Spec.Template.Labels}, Spec: d.Spec.Template.Spec}
	g.Expect(k8sClient.Create(ctx, pod)).To(Succeed())
	const said = "moe: loading the model: /models/m.gguf: gguf: tensor data truncated: the file has 100 bytes, want 200"
	last := corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error", Message: said}}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "engine", Image: d.Spec.Template.Spec.Containers[0].Image, RestartCount: 2,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}, LastTerminationState: last,
	}}
	g.Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
	eventually(t, func(g Gomega) {
		degraded := condition(g, get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{}), servingv1alpha1.ConditionDegraded)
		g.Expect(degraded.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(degraded.Reason).To(Equal(servingv1alpha1.ReasonEngineFailing))
		g.Expect(degraded.Message).To(ContainSubstring(said))
		g.Expect(recordedEvents(g, ns, obj.Name)).To(ContainElement(And(
			HaveField("Reason", servingv1alpha1.ReasonEngineFailing), HaveField("Type", corev1.EventTypeWarning), HaveField("Note", ContainSubstring(said)))))
	})

	// The file is fixed and the container restarts and runs: the failure is history.
	g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
	pod.Status.ContainerStatuses[0].RestartCount = 3
	pod.Status.ContainerStatuses[0].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	g.Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
	eventually(t, func(g Gomega) {
		degraded := condition(g, get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{}), servingv1alpha1.ConditionDegraded)
		g.Expect(degraded.Reason).NotTo(Equal(servingv1alpha1.ReasonEngineFailing))
	})
}
