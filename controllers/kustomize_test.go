package controllers

import (
	"context"
	"testing"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// TestEnvtestKustomizeDefault builds config/default as `kubectl apply -k config/default`
// does (kustomize's own library) and submits every object to the API server (dry run,
// strict field validation), with the install namespace renamed to a test namespace. The
// manager runs with HTTPS metrics behind the authentication filter, and the RBAC it needs
// for that is in the build.
func TestEnvtestKustomizeDefault(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	g := NewWithT(t)
	resources, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), "../config/default")
	g.Expect(err).NotTo(HaveOccurred(), "kustomize build config/default")
	ns := newNamespace(t)

	kinds := map[string]int{}
	var manager, gateway *appsv1.Deployment
	var rules []string
	for _, r := range resources.Resources() {
		m, err := r.Map()
		g.Expect(err).NotTo(HaveOccurred())
		obj := &unstructured.Unstructured{Object: m}
		kinds[obj.GetKind()]++
		switch obj.GetKind() {
		case "CustomResourceDefinition":
			continue // installed by the suite from config/crd/bases, the same file
		case "Namespace":
			g.Expect(obj.GetName()).To(Equal("moe-system"))
			g.Expect(obj.GetLabels()).To(HaveKeyWithValue("pod-security.kubernetes.io/enforce", "restricted"))
			continue
		case "Deployment":
			d := &appsv1.Deployment{}
			g.Expect(runtime.DefaultUnstructuredConverter.FromUnstructured(m, d)).To(Succeed())
			if d.Name == "moe-operator-gateway" {
				gateway = d
			} else {
				manager = d
			}
		case "ClusterRole":
			for _, rule := range m["rules"].([]any) {
				for _, res := range append(toStrings(rule.(map[string]any)["resources"]), toStrings(rule.(map[string]any)["nonResourceURLs"])...) {
					rules = append(rules, obj.GetName()+":"+res)
				}
			}
		}
		if obj.GetNamespace() != "" {
			g.Expect(obj.GetNamespace()).To(Equal("moe-system"), "%s %s", obj.GetKind(), obj.GetName())
			obj.SetNamespace(ns)
		}
		g.Expect(k8sClient.Create(ctx, obj, client.DryRunAll, client.FieldValidation("Strict"))).To(Succeed(), "%s %s", obj.GetKind(), obj.GetName())
	}
	g.Expect(kinds).To(Equal(map[string]int{
		"CustomResourceDefinition": 1, "Namespace": 1, "ServiceAccount": 2, "Role": 1, "RoleBinding": 1,
		"ClusterRole": 5, "ClusterRoleBinding": 2, "Service": 2, "Deployment": 2,
	}))
	g.Expect(gateway).NotTo(BeNil())
	g.Expect(gateway.Spec.Template.Spec.Containers[0].Image).To(Equal("ghcr.io/moe-operator/moe-engine:dev"))
	g.Expect(gateway.Spec.Template.Spec.Containers[0].Args).To(Equal([]string{"gateway", "--kubernetes", "--port=8080"}))
	g.Expect(manager).NotTo(BeNil())
	g.Expect(manager.Name).To(Equal("moe-operator-controller-manager"))
	g.Expect(manager.Spec.Template.Spec.Containers[0].Image).To(Equal("ghcr.io/moe-operator/moe-operator:dev"))
	g.Expect(manager.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--metrics-bind-address=:8443"))
	g.Expect(manager.Spec.Template.Spec.Containers[0].Args).NotTo(ContainElement("--metrics-secure=false"))
	g.Expect(rules).To(ContainElements("moe-operator-manager-role:tokenreviews", "moe-operator-manager-role:subjectaccessreviews",
		"moe-operator-metrics-reader:/metrics", "moe-operator-gateway:endpointslices"))
}

func toStrings(v any) []string {
	list, _ := v.([]any)
	out := make([]string, 0, len(list))
	for _, s := range list {
		out = append(out, s.(string))
	}
	return out
}
