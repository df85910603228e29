package controllers

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// withPodFields sets every pod field spec.engine offers.
func withPodFields(o *servingv1alpha1.MixtralDeployment) *servingv1alpha1.MixtralDeployment {
	e := &o.Spec.Engine
	e.PodLabels = map[string]string{"team": "search"}
	e.PodAnnotations = map[string]string{"sidecar.istio.io/inject": "false"}
	e.PriorityClassName = "inference-high"
	e.ServiceAccountName = "engine-identity"
	e.RuntimeClassName = ptr.To("nvidia")
	e.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "topology.kubernetes.io/zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"z1", "z2"}}},
		}}},
	}}
	e.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{
		MaxSkew: 1, TopologyKey: "topology.kubernetes.io/zone", WhenUnsatisfiable: corev1.ScheduleAnyway,
	}}
	e.Volumes = []corev1.Volume{{Name: "templates", VolumeSource: corev1.VolumeSource{
		ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "chat-templates"}},
	}}}
	e.VolumeMounts = []corev1.VolumeMount{{Name: "templates", MountPath: "/etc/templates", ReadOnly: true}}
	return o
}

// TestPodFieldsReachTheTemplate: spec.engine's pod fields are in the engine pod template
// beside the operator's own, which win, and they change the template hash (so the pods roll).
func TestPodFieldsReachTheTemplate(t *testing.T) {
	g := NewWithT(t)
	obj := withPodFields(tinyCPU())
	tpl := desiredDeployment(plannedWorkload(t, obj)).Spec.Template
	spec := tpl.Spec

	g.Expect(tpl.Labels).To(HaveKeyWithValue("team", "search"))
	g.Expect(tpl.Labels).To(HaveKeyWithValue(servingv1alpha1.LabelMixtralDeployment, obj.Name), "the selector label is still there")
	g.Expect(tpl.Annotations).To(HaveKeyWithValue("sidecar.istio.io/inject", "false"))
	g.Expect(tpl.Annotations).To(HaveKeyWithValue("prometheus.io/path", "/metrics"))
	g.Expect(spec.PriorityClassName).To(Equal("inference-high"))
	g.Expect(spec.ServiceAccountName).To(Equal("engine-identity"))
	g.Expect(*spec.AutomountServiceAccountToken).To(BeFalse(), "the engine never needs an API token")
	g.Expect(spec.RuntimeClassName).To(Equal(ptr.To("nvidia")))
	g.Expect(spec.Affinity).To(Equal(obj.Spec.Engine.Affinity))
	g.Expect(spec.TopologySpreadConstraints).To(HaveLen(1))
	g.Expect(spec.Volumes).To(ContainElement(obj.Spec.Engine.Volumes[0]))
	g.Expect(spec.Volumes).To(ContainElement(HaveField("Name", tmpVolumeName)), "beside the operator's")
	g.Expect(spec.Containers[0].VolumeMounts).To(ContainElement(obj.Spec.Engine.VolumeMounts[0]))
	g.Expect(spec.TopologySpreadConstraints[0].LabelSelector).To(Equal(&metav1.LabelSelector{MatchLabels: selectorLabels(obj.Name)}),
		"a constraint without a selector counts this MixtralDeployment's pods")

	// Labels and annotations the operator owns cannot be overridden, even past validation.
	clash := tinyCPU()
	clash.Spec.Engine.PodLabels = map[string]string{servingv1alpha1.LabelMixtralDeployment: "other"}
	clash.Spec.Engine.PodAnnotations = map[string]string{"prometheus.io/port": "1"}
	ctpl := desiredDeployment(plannedWorkload(t, clash)).Spec.Template
	g.Expect(ctpl.Labels).To(HaveKeyWithValue(servingv1alpha1.LabelMixtralDeployment, clash.Name))
	g.Expect(ctpl.Annotations).NotTo(HaveKeyWithValue("prometheus.io/port", "1"))

	plain := desiredDeployment(plannedWorkload(t, tinyCPU())).Spec.Template
	g.Expect(plain.Labels[servingv1alpha1.LabelTemplateHash]).NotTo(Equal(tpl.Labels[servingv1alpha1.LabelTemplateHash]))
	g.Expect(plain.Spec.Affinity).To(BeNil())
	g.Expect(plain.Spec.TopologySpreadConstraints).To(BeNil())
}

// TestUserAffinityKeepsTheCacheTerm: with a ReadWriteOnce model cache, the replicas' required
// pod affinity (they share the claim's node) is added to the user's terms, not replaced.
func TestUserAffinityKeepsTheCacheTerm(t *testing.T) {
	g := NewWithT(t)
	user := &corev1.PodAffinityTerm{LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "redis"}}, TopologyKey: "kubernetes.io/hostname"}
	obj := withPodFields(cachedH100())
	obj.Spec.Engine.Affinity.PodAffinity = &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{*user}}
	w := plannedWorkload(t, obj)
	g.Expect(w.cacheAffinity(true)).NotTo(BeNil(), "the fixture must use a ReadWriteOnce cache")
	a := desiredDeployment(w).Spec.Template.Spec.Affinity
	g.Expect(a.NodeAffinity).To(Equal(obj.Spec.Engine.Affinity.NodeAffinity))
	g.Expect(a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution).To(Equal(append([]corev1.PodAffinityTerm{*user},
		w.cacheAffinity(true).PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution...)))
	g.Expect(obj.Spec.Engine.Affinity.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution).To(HaveLen(1), "the spec is not modified")
}

// TestEnvtestPodFieldsAreAdmittedAndApplied: the API server admits the pod fields and the
// reconciler writes them into the Deployment.
func TestEnvtestPodFieldsAreAdmittedAndApplied(t *testing.T) {
	requireEnvtest(t)
	ns := newNamespace(t)
	g := NewWithT(t)
	obj := withPodFields(loadSample(t, cpuSample, ns))
	g.Expect(k8sClient.Create(context.Background(), obj)).To(Succeed())
	eventually(t, func(g Gomega) {
		d := get(g, ns, obj.Name, &appsv1.Deployment{})
		spec := d.Spec.Template.Spec
		g.Expect(d.Spec.Template.Labels).To(HaveKeyWithValue("team", "search"))
		g.Expect(spec.PriorityClassName).To(Equal("inference-high"))
		g.Expect(spec.ServiceAccountName).To(Equal("engine-identity"))
		g.Expect(spec.RuntimeClassName).To(Equal(ptr.To("nvidia")))
		g.Expect(spec.Affinity.NodeAffinity).NotTo(BeNil())
		g.Expect(spec.TopologySpreadConstraints).To(HaveLen(1))
		g.Expect(spec.Containers[0].VolumeMounts).To(ContainElement(HaveField("MountPath", "/etc/templates")))
	})
}
