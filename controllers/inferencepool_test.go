package controllers

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	inferencev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	lwsv1 "sigs.k8s.io/lws/api/leaderworkerset/v1"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

func TestParseEndpointPicker(t *testing.T) {
	p, err := ParseEndpointPicker("{name}-epp:9002")
	if err != nil || p.Name != "{name}-epp" || p.Port != 9002 {
		t.Errorf("ParseEndpointPicker = %+v, %v", p, err)
	}
	if p, err := ParseEndpointPicker(""); p != nil || err != nil {
		t.Errorf("empty: %+v, %v", p, err)
	}
	for _, bad := range []string{"epp", "epp:0", ":9002", "epp:port", "epp:70000"} {
		if _, err := ParseEndpointPicker(bad); err == nil || !strings.Contains(err.Error(), "NAME:PORT") {
			t.Errorf("%q: %v, want an error naming the form", bad, err)
		}
	}
}

func TestInferencePoolSelectsTheServingPods(t *testing.T) {
	g := NewWithT(t)
	picker := &EndpointPicker{Name: "{name}-epp", Port: 9002}
	w := plannedWorkload(t, h100Preset())
	w.obj.Status.Plan = &w.plan
	pool := desiredInferencePool(w, picker)
	g.Expect(pool.Spec.Selector.MatchLabels).To(Equal(map[inferencev1.LabelKey]inferencev1.LabelValue{
		servingv1alpha1.LabelMixtralDeployment: "chat"}))
	g.Expect(pool.Spec.TargetPorts).To(Equal([]inferencev1.Port{{Number: 8000}}))
	g.Expect(pool.Spec.EndpointPickerRef.Name).To(Equal(inferencev1.ObjectName("chat-epp")))
	g.Expect(desiredInferencePool(w, nil).Spec.EndpointPickerRef).To(BeNil())

	// A multi-node replica's pool holds only its leaders, which serve the API.
	m := plannedWorkload(t, vllmL4MultiNode())
	m.obj.Status.Plan = &m.plan
	g.Expect(desiredInferencePool(m, nil).Spec.Selector.MatchLabels).To(HaveKeyWithValue(
		inferencev1.LabelKey(lwsv1.WorkerIndexLabelKey), inferencev1.LabelValue("0")))
}

// inferenceExtensionCRDs is the CRD directory of the sigs.k8s.io/gateway-api-inference-extension
// module this project builds against.
func inferenceExtensionCRDs(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api-inference-extension").Output()
	if err != nil {
		t.Fatalf("locating the gateway-api-inference-extension module: %v", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "bases")
}

// TestEnvtestInferencePoolIsAdmittedByTheRealCRD installs the extension's own CRDs from its
// Go module and sees the operator (run with InferencePools on) create a pool the API server
// accepts, with the defaults the CRD applies.
func TestEnvtestInferencePoolIsAdmittedByTheRealCRD(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g := NewWithT(t)
	_, err := envtest.InstallCRDs(restConfig, envtest.CRDInstallOptions{Paths: []string{inferenceExtensionCRDs(t)}, ErrorIfPathMissing: true})
	g.Expect(err).NotTo(HaveOccurred())
	obj := loadSample(t, vllmSample, ns)
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	var pool *inferencev1.InferencePool
	eventually(t, func(g Gomega) {
		pool = get(g, ns, obj.Name, &inferencev1.InferencePool{})
	})
	cur := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
	g.Expect(metav1.IsControlledBy(pool, cur)).To(BeTrue())
	g.Expect(pool.Spec.Selector.MatchLabels).To(HaveKeyWithValue(inferencev1.LabelKey(servingv1alpha1.LabelMixtralDeployment), inferencev1.LabelValue(obj.Name)))
	g.Expect(pool.Spec.TargetPorts).To(Equal([]inferencev1.Port{{Number: 8000}}))
	ref := pool.Spec.EndpointPickerRef
	g.Expect(ref).NotTo(BeNil())
	g.Expect(ref.Name).To(Equal(inferencev1.ObjectName(obj.Name + "-epp")))
	g.Expect(ref.Port.Number).To(Equal(inferencev1.PortNumber(9002)))

	// The real schema's rules hold: a pool without target ports is refused.
	bad := pool.DeepCopy()
	bad.ObjectMeta = metav1.ObjectMeta{Name: "no-ports", Namespace: ns}
	bad.Spec.TargetPorts = nil
	g.Expect(k8sClient.Create(ctx, bad, client.DryRunAll)).NotTo(Succeed())

	// A second pass changes nothing: the API server's defaults do not look like drift.
	rv := pool.ResourceVersion
	eventually(t, func(g Gomega) {
		c := get(g, ns, obj.Name, &servingv1alpha1.MixtralDeployment{})
		c.Spec.Engine.Env = append(c.Spec.Engine.Env, corev1.EnvVar{Name: "ROLL", Value: "1"})
		g.Expect(k8sClient.Update(ctx, c)).To(Succeed())
	})
	waitPlanned(t, ns, obj.Name)
	g.Expect(get(g, ns, obj.Name, &inferencev1.InferencePool{}).ResourceVersion).To(Equal(rv))
}
