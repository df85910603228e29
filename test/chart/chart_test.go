// Package chart tests the Helm chart in charts/moe-operator with the real helm (v3.22.0,
// built from the Go module proxy by `make helm`) and a real API server (envtest):
// `helm lint`, `helm template` with default and all-features values, the rendered objects
// created with strict field validation, the manager pod admitted under Pod Security
// "restricted", and the manager's RBAC checked by the API server's own authorizer.
//
// HELM names the helm binary and KUBEBUILDER_ASSETS the envtest binaries; `make test` sets
// both. Without them the tests skip, unless MOE_REQUIRE_HELM=1 or MOE_REQUIRE_ENVTEST=1
// makes that a failure.
package chart

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

const (
	chartDir = "../../charts/moe-operator"
	// kubeVersion is what `helm template` and `helm lint` assume: helm built from the module
	// proxy is not stamped with its release's default.
	kubeVersion = "v1.37.2"
	release     = "moe"
	namespace   = "moe-system"
)

// helm returns the helm binary, or skips (fails under MOE_REQUIRE_HELM=1) without one.
func helm(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	home, _ := os.UserHomeDir()
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		cache = filepath.Join(home, ".cache")
	}
	h := filepath.Join(cache, "moe-operator", "bin", "helm-v3.22.0")
	if _, err := os.Stat(h); err == nil {
		return h
	}
	if os.Getenv("MOE_REQUIRE_HELM") == "1" {
		t.Fatal("no helm: set HELM or run `make helm`")
	}
	t.Skip("no helm: set HELM or run `make helm`")
	return ""
}

func runHelm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helm(t), args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	if err != nil {
		return out.String() + stderr.String(), err
	}
	return out.String(), nil
}

// render runs helm template and decodes every object.
func render(t *testing.T, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := runHelm(t, append([]string{"template", release, chartDir, "--namespace", namespace, "--kube-version", kubeVersion}, args...)...)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("decoding helm template output: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	return objs
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, nameSuffix string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && strings.HasSuffix(o.GetName(), nameSuffix) {
			return o
		}
	}
	t.Fatalf("no %s named *%s rendered", kind, nameSuffix)
	return nil
}

func convert[T any](t *testing.T, o *unstructured.Unstructured) *T {
	t.Helper()
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", o.GetKind(), o.GetName(), err)
	}
	return out
}

func kinds(objs []*unstructured.Unstructured) []string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.GetKind())
	}
	slices.Sort(ks)
	return ks
}

func TestLint(t *testing.T) {
	for name, args := range map[string][]string{
		"default values":       nil,
		"all features":         {"--values", "testdata/all-features.yaml"},
		"no leader election":   {"--set", "leaderElection.enabled=false"},
		"external RBAC, no SA": {"--set", "rbac.create=false", "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=existing"},
	} {
		t.Run(name, func(t *testing.T) {
			if out, err := runHelm(t, append([]string{"lint", "--strict", "--kube-version", kubeVersion, chartDir}, args...)...); err != nil {
				t.Fatalf("helm lint: %v\n%s", err, out)
			}
		})
	}
}

// values.schema.json and the template's own checks turn mistakes into errors before
// anything reaches a cluster.
func TestRejectsBadValues(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"unknown log level":                    {[]string{"--set", "logLevel=verbose"}, "logLevel"},
		"misspelled key":                       {[]string{"--set", "leaderElection.enable=true"}, "enable"},
		"two managers without leader election": {[]string{"--set", "replicaCount=2", "--set", "leaderElection.enabled=false"}, "leaderElection.enabled"},
		"bad pull policy":                      {[]string{"--set", "image.pullPolicy=Sometimes"}, "pullPolicy"},
		"a NetworkPolicy for no namespace":     {[]string{"--set", "networkPolicy.enabled=true"}, "networkPolicy.engineNamespaces"},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := runHelm(t, append([]string{"template", release, chartDir, "--kube-version", kubeVersion}, tc.args...)...)
			if err == nil {
				t.Fatalf("helm template accepted %v", tc.args)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("error does not name %q:\n%s", tc.want, out)
			}
		})
	}
}

func TestTemplateDefaults(t *testing.T) {
	objs := render(t)
	want := []string{"ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding",
		"Deployment", "Deployment", "Role", "RoleBinding", "Service", "Service", "ServiceAccount", "ServiceAccount"}
	if got := kinds(objs); !reflect.DeepEqual(got, want) {
		t.Fatalf("rendered kinds %v, want %v", got, want)
	}
	for _, o := range objs {
		if ns := o.GetNamespace(); ns != "" && ns != namespace {
			t.Errorf("%s %s in namespace %q, want the release namespace", o.GetKind(), o.GetName(), ns)
		}
	}

	dep := convert[appsv1.Deployment](t, find(t, objs, "Deployment", "moe-operator"))
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("containers: %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.Image != "ghcr.io/moe-operator/moe-operator:0.1.0" {
		t.Errorf("image %q, want the appVersion tag", c.Image)
	}
	for _, arg := range []string{"--leader-elect", "--leader-election-namespace=" + namespace, "--engine-image=ghcr.io/moe-operator/moe-engine:0.1.0", "--engine-gpu-image=ghcr.io/moe-operator/moe-engine:0.1.0-vulkan", "--health-probe-bind-address=:8081", "--metrics-bind-address=:8443", "--metrics-secure=true"} {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("args %v lack %s", c.Args, arg)
		}
	}
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context %+v is not restricted", psc)
	}
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container security context %+v is not restricted", sc)
	}
	for name, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.StrVal != "probes" {
			t.Errorf("%s probe %+v", name, p)
		}
	}
	if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("probe paths %s, %s", c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path)
	}

	// Metrics over HTTPS by default, on the port the Service names https.
	svc := convert[corev1.Service](t, find(t, objs, "Service", "-metrics"))
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "https" || svc.Spec.Ports[0].Port != 8443 || svc.Spec.Ports[0].TargetPort.StrVal != "https" {
		t.Errorf("metrics Service ports %+v, want https 8443", svc.Spec.Ports)
	}
	reader := convert[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", "-metrics-reader"))
	if want := []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}; !reflect.DeepEqual(reader.Rules, want) {
		t.Errorf("metrics-reader rules %+v, want %+v", reader.Rules, want)
	}

	// The manager's ClusterRole is exactly the generated role: no hand-added permissions.
	role := convert[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", "-manager"))
	generated, err := os.ReadFile("../../config/rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var gen rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(generated, &gen); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(role.Rules, gen.Rules) {
		t.Errorf("chart ClusterRole rules differ from config/rbac/role.yaml (run make manifests)")
	}
	// Least privilege: no wildcard anywhere, no access to Secrets.
	for _, o := range objs {
		if o.GetKind() != "ClusterRole" && o.GetKind() != "Role" {
			continue
		}
		r := convert[rbacv1.ClusterRole](t, o)
		for _, rule := range r.Rules {
			for _, s := range slices.Concat(rule.APIGroups, rule.Resources, rule.Verbs) {
				if s == "*" {
					t.Errorf("%s %s has a wildcard rule %+v", o.GetKind(), o.GetName(), rule)
				}
			}
			if slices.Contains(rule.Resources, "secrets") {
				t.Errorf("%s %s grants access to Secrets", o.GetKind(), o.GetName())
			}
		}
	}
}

func TestTemplateAllFeatures(t *testing.T) {
	objs := render(t, "--values", "testdata/all-features.yaml")
	sm := find(t, objs, "ServiceMonitor", "moe-operator")
	if sm.GetLabels()["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels %v", sm.GetLabels())
	}
	if port, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints"); len(port) != 1 {
		t.Errorf("ServiceMonitor endpoints %v", port)
	}
	pm := find(t, objs, "PodMonitor", "-engines")
	if sel, _, _ := unstructured.NestedStringMap(pm.Object, "spec", "selector", "matchLabels"); sel["app.kubernetes.io/name"] != "moe-engine" {
		t.Errorf("PodMonitor selects %v, want the engine pods", sel)
	}
	dep := convert[appsv1.Deployment](t, find(t, objs, "Deployment", "moe-operator"))
	if *dep.Spec.Replicas != 2 || dep.Spec.Template.Spec.ServiceAccountName != "moe-manager" {
		t.Errorf("replicas %d, service account %q", *dep.Spec.Replicas, dep.Spec.Template.Spec.ServiceAccountName)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--engine-image=registry.example.com/moe-engine:1.2.3") {
		t.Errorf("args %v lack the engineImage value", c.Args)
	}
	if !slices.Contains(c.Args, "--engine-gpu-image=registry.example.com/moe-engine:1.2.3-vulkan") {
		t.Errorf("args %v lack the engineGPUImage value", c.Args)
	}
	if !slices.Contains(c.Args, "--metrics-bind-address=:9090") || c.Ports[0].ContainerPort != 9090 || c.Ports[1].ContainerPort != 9091 {
		t.Errorf("ports %v, args %v", c.Ports, c.Args)
	}
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if ep, _ := endpoints[0].(map[string]any); ep["scheme"] != "https" || ep["port"] != "https" ||
		ep["bearerTokenFile"] != "/var/run/secrets/kubernetes.io/serviceaccount/token" {
		t.Errorf("ServiceMonitor endpoint %v, want https with the ServiceAccount's bearer token", ep)
	}
}

// TestMetricsPlainHTTP: metrics.secure=false is the only way to plain HTTP, and the Service
// and ServiceMonitor follow.
func TestMetricsPlainHTTP(t *testing.T) {
	objs := render(t, "--values", "testdata/all-features.yaml", "--set", "metrics.secure=false")
	c := convert[appsv1.Deployment](t, find(t, objs, "Deployment", "moe-operator")).Spec.Template.Spec.Containers[0]
	if !slices.Contains(c.Args, "--metrics-secure=false") || c.Ports[0].Name != "http" {
		t.Errorf("args %v, ports %v", c.Args, c.Ports)
	}
	sm := find(t, objs, "ServiceMonitor", "moe-operator")
	endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
	if ep, _ := endpoints[0].(map[string]any); ep["scheme"] != "http" || ep["bearerTokenFile"] != nil {
		t.Errorf("ServiceMonitor endpoint %v, want plain http", ep)
	}
}

// TestNetworkPolicy: off by default; when enabled, one policy per engine namespace that
// selects the engine pods and admits on their http port only the operator, gateway pods
// and the listed namespaces.
func TestNetworkPolicy(t *testing.T) {
	for _, o := range render(t) {
		if o.GetKind() == "NetworkPolicy" {
			t.Fatalf("a NetworkPolicy %s/%s renders by default", o.GetNamespace(), o.GetName())
		}
	}
	var policies []*networkingv1.NetworkPolicy
	for _, o := range render(t, "--values", "testdata/all-features.yaml") {
		if o.GetKind() == "NetworkPolicy" {
			policies = append(policies, convert[networkingv1.NetworkPolicy](t, o))
		}
	}
	if len(policies) != 2 || policies[0].Namespace != "moe-system" || policies[1].Namespace != "team-a" {
		t.Fatalf("want one policy in moe-system and one in team-a, got %d", len(policies))
	}
	operator := networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": namespace}},
		PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{
			"app.kubernetes.io/name": "moe-operator", "app.kubernetes.io/instance": release, "app.kubernetes.io/component": "manager",
		}},
	}
	gatewayLabels := map[string]string{"app.kubernetes.io/component": "moe-gateway"}
	gatewayHere := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: gatewayLabels}}
	gatewayThere := networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": namespace}},
		PodSelector:       &metav1.LabelSelector{MatchLabels: gatewayLabels},
	}
	monitoring := networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}},
	}
	for _, p := range policies {
		if !reflect.DeepEqual(p.Spec.PodSelector.MatchLabels, map[string]string{"app.kubernetes.io/name": "moe-engine"}) {
			t.Errorf("%s: selects %v, want the engine pods", p.Namespace, p.Spec.PodSelector.MatchLabels)
		}
		if !reflect.DeepEqual(p.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) || len(p.Spec.Ingress) != 2 {
			t.Fatalf("%s: policy types %v, %d ingress rules", p.Namespace, p.Spec.PolicyTypes, len(p.Spec.Ingress))
		}
		// Engine pods reach each other on every port (a multi-node replica's Ray and NCCL).
		peers := p.Spec.Ingress[1]
		engines := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "moe-engine"}}}
		if len(peers.Ports) != 0 || !reflect.DeepEqual(peers.From, []networkingv1.NetworkPolicyPeer{engines}) {
			t.Errorf("%s: second rule %+v, want every port from the engine pods", p.Namespace, peers)
		}
		rule := p.Spec.Ingress[0]
		if len(rule.Ports) != 1 || rule.Ports[0].Port.StrVal != "http" {
			t.Errorf("%s: ports %+v, want the engines' http port", p.Namespace, rule.Ports)
		}
		want := []networkingv1.NetworkPolicyPeer{operator, gatewayHere, gatewayThere, monitoring}
		if p.Namespace == namespace {
			want = []networkingv1.NetworkPolicyPeer{operator, gatewayHere, monitoring}
		}
		if !reflect.DeepEqual(rule.From, want) {
			t.Errorf("%s: from %+v\nwant %+v", p.Namespace, rule.From, want)
		}
	}
}

// TestInstall creates every rendered object in a real API server with strict field
// validation, admits the manager pod under Pod Security "restricted", and asks the API
// server's RBAC authorizer what the manager's ServiceAccount may do.
func TestInstall(t *testing.T) {
	objs := render(t, "--values", "testdata/all-features.yaml")
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if os.Getenv("MOE_REQUIRE_ENVTEST") == "1" {
			t.Fatal("KUBEBUILDER_ASSETS is not set; run `make test`")
		}
		t.Skip("KUBEBUILDER_ASSETS is not set; run `make test`")
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(chartDir, "crds")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(discovery.NewDiscoveryClientForConfigOrDie(cfg)))

	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   namespace,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err) // the all-features NetworkPolicy's second namespace
	}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		if gvk.Group == "monitoring.coreos.com" {
			continue // the Prometheus operator's CRDs are not part of this project
		}
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatalf("%s: %v", gvk, err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		if _, err := ri.Create(ctx, o, metav1.CreateOptions{FieldValidation: "Strict"}); err != nil {
			t.Errorf("creating %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}

	// envtest runs no controller-manager, so no pod is made from the Deployment: create its
	// template as a pod (dry run) to have Pod Security admission judge it.
	dep, err := cs.AppsV1().Deployments(namespace).Get(ctx, release+"-moe-operator", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "manager", Namespace: namespace, Labels: dep.Spec.Template.Labels}, Spec: dep.Spec.Template.Spec}
	pod.Spec.PriorityClassName = "" // the envtest API server has no PriorityClass admission data to check against
	if _, err := cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("the manager pod is not admitted under Pod Security restricted: %v", err)
	}
	// The admission is real: the same pod with privilege escalation allowed is refused.
	loose := pod.DeepCopy()
	loose.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr(true)
	if _, err := cs.CoreV1().Pods(namespace).Create(ctx, loose, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err == nil {
		t.Error("Pod Security admission let a pod with allowPrivilegeEscalation through")
	}

	// The gateway's pod too; it may list and watch Services and EndpointSlices, patch
	// MixtralDeployments (the held-request count), and nothing else.
	gw, err := cs.AppsV1().Deployments(namespace).Get(ctx, release+"-moe-operator-gateway", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gwPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "gateway", Namespace: namespace, Labels: gw.Spec.Template.Labels}, Spec: gw.Spec.Template.Spec}
	if _, err := cs.CoreV1().Pods(namespace).Create(ctx, gwPod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("the gateway pod is not admitted under Pod Security restricted: %v", err)
	}
	gwSA := "system:serviceaccount:" + namespace + ":" + release + "-moe-operator-gateway"
	for _, tc := range []struct {
		attrs authzv1.ResourceAttributes
		allow bool
	}{
		{authzv1.ResourceAttributes{Group: "", Resource: "services", Verb: "watch"}, true},
		{authzv1.ResourceAttributes{Group: "discovery.k8s.io", Resource: "endpointslices", Verb: "list"}, true},
		{authzv1.ResourceAttributes{Group: "serving.moe-operator.io", Resource: "mixtraldeployments", Verb: "patch", Namespace: "team-a"}, true},
		{authzv1.ResourceAttributes{Group: "serving.moe-operator.io", Resource: "mixtraldeployments", Verb: "delete", Namespace: "team-a"}, false},
		{authzv1.ResourceAttributes{Group: "serving.moe-operator.io", Resource: "mixtraldeployments", Subresource: "scale", Verb: "update", Namespace: "team-a"}, false},
		{authzv1.ResourceAttributes{Group: "", Resource: "services", Verb: "update", Namespace: "team-a"}, false},
		{authzv1.ResourceAttributes{Group: "", Resource: "secrets", Verb: "get", Namespace: "team-a"}, false},
		{authzv1.ResourceAttributes{Group: "", Resource: "pods", Verb: "list"}, false},
	} {
		review, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: gwSA, Groups: []string{"system:serviceaccounts"}, ResourceAttributes: &tc.attrs,
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if review.Status.Allowed != tc.allow {
			t.Errorf("gateway: %s %s in %q: allowed=%v, want %v", tc.attrs.Verb, tc.attrs.Resource, tc.attrs.Namespace, review.Status.Allowed, tc.allow)
		}
	}

	sa := "system:serviceaccount:" + namespace + ":moe-manager"
	for _, tc := range []struct {
		attrs authzv1.ResourceAttributes
		allow bool
	}{
		{authzv1.ResourceAttributes{Group: "serving.moe-operator.io", Resource: "mixtraldeployments", Verb: "watch"}, true},
		{authzv1.ResourceAttributes{Group: "serving.moe-operator.io", Resource: "mixtraldeployments", Subresource: "status", Verb: "patch", Namespace: "team-a"}, true},
		{authzv1.ResourceAttributes{Group: "apps", Resource: "deployments", Verb: "create", Namespace: "team-a"}, true},
		{authzv1.ResourceAttributes{Group: "", Resource: "services", Verb: "patch", Namespace: "team-a"}, true},
		{authzv1.ResourceAttributes{Group: "policy", Resource: "poddisruptionbudgets", Verb: "create", Namespace: "team-a"}, true},
		{authzv1.ResourceAttributes{Group: "coordination.k8s.io", Resource: "leases", Verb: "update", Namespace: namespace}, true},
		// The metrics filter reviews scrapers' tokens and access.
		{authzv1.ResourceAttributes{Group: "authentication.k8s.io", Resource: "tokenreviews", Verb: "create"}, true},
		{authzv1.ResourceAttributes{Group: "authorization.k8s.io", Resource: "subjectaccessreviews", Verb: "create"}, true},
		// Least privilege: what the manager never needs.
		{authzv1.ResourceAttributes{Group: "coordination.k8s.io", Resource: "leases", Verb: "update", Namespace: "team-a"}, false},
		{authzv1.ResourceAttributes{Group: "", Resource: "secrets", Verb: "get", Namespace: "team-a"}, false},
		{authzv1.ResourceAttributes{Group: "apps", Resource: "deployments", Verb: "delete", Namespace: "team-a"}, false},
		{authzv1.ResourceAttributes{Group: "serving.moe-operator.io", Resource: "mixtraldeployments", Verb: "delete", Namespace: "team-a"}, false},
		{authzv1.ResourceAttributes{Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Verb: "create"}, false},
	} {
		review, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: sa, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace}, ResourceAttributes: &tc.attrs,
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if review.Status.Allowed != tc.allow {
			t.Errorf("%s %s/%s in %q: allowed=%v, want %v", tc.attrs.Verb, tc.attrs.Resource, tc.attrs.Subresource, tc.attrs.Namespace, review.Status.Allowed, tc.allow)
		}
	}

	// Namespace users get MixtralDeployments through the aggregated built-in roles.
	for role, verbs := range map[string][]string{"edit": {"create", "delete", "update"}, "view": {"list"}} {
		if err := aggregated(ctx, cs, role, verbs); err != nil {
			t.Error(err)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestGateway: the gateway runs `moe gateway --kubernetes` from the engine image, with the
// labels the engines' NetworkPolicy admits, its keys from Secrets, and a restricted pod.
func TestGateway(t *testing.T) {
	objs := render(t, "--values", "testdata/all-features.yaml")
	manager := convert[appsv1.Deployment](t, find(t, objs, "Deployment", "moe-operator"))
	for _, arg := range []string{"--inference-pools", "--inference-pool-endpoint-picker={name}-epp:9002"} {
		if !slices.Contains(manager.Spec.Template.Spec.Containers[0].Args, arg) {
			t.Errorf("manager args %v lack %s", manager.Spec.Template.Spec.Containers[0].Args, arg)
		}
	}
	dep := convert[appsv1.Deployment](t, find(t, objs, "Deployment", "-gateway"))
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	if c.Image != "registry.example.com/moe-engine:1.2.3" {
		t.Errorf("image %q, want the engine image", c.Image)
	}
	want := []string{"gateway", "--kubernetes", "--port=8080", "--namespace=team-a",
		"--api-key-file=/var/run/secrets/moe-gateway/keys/keys", "--backend-api-key-file=/var/run/secrets/moe-gateway/backend/api-key",
		"--max-concurrency-per-key=16", "--max-concurrency-per-model=64", "--hold-timeout=2m", "--max-held-per-model=20"}
	if !reflect.DeepEqual(c.Args, want) {
		t.Errorf("args %v, want %v", c.Args, want)
	}
	if l := dep.Spec.Template.Labels; l["app.kubernetes.io/component"] != "moe-gateway" {
		t.Errorf("labels %v lack the NetworkPolicy's gatewayLabels", l)
	}
	if len(pod.Volumes) != 2 || pod.Volumes[0].Secret.SecretName != "gateway-keys" || pod.Volumes[1].Secret.SecretName != "engine-key" {
		t.Errorf("volumes %+v", pod.Volumes)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/health" {
		t.Errorf("readiness probe %+v", c.ReadinessProbe)
	}
	role := convert[rbacv1.ClusterRole](t, find(t, objs, "ClusterRole", "-gateway"))
	wantRules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		{APIGroups: []string{"serving.moe-operator.io"}, Resources: []string{"mixtraldeployments"}, Verbs: []string{"patch"}},
	}
	if !reflect.DeepEqual(role.Rules, wantRules) {
		t.Errorf("gateway rules %+v", role.Rules)
	}
	svc := convert[corev1.Service](t, find(t, objs, "Service", "-gateway"))
	if svc.Spec.Ports[0].Port != 80 || !reflect.DeepEqual(svc.Spec.Selector, dep.Spec.Selector.MatchLabels) {
		t.Errorf("Service %+v", svc.Spec)
	}
	for _, o := range render(t, "--set", "gateway.enabled=false") {
		if strings.HasSuffix(o.GetName(), "-gateway") {
			t.Errorf("gateway.enabled=false still renders %s %s", o.GetKind(), o.GetName())
		}
	}
}

// aggregated checks that the built-in role has the MixtralDeployment verbs aggregated
// into it (the aggregation controller runs in kube-controller-manager, which envtest lacks,
// so the check reads the selector labels instead of the aggregated rules).
func aggregated(ctx context.Context, cs kubernetes.Interface, role string, verbs []string) error {
	list, err := cs.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{LabelSelector: "rbac.authorization.k8s.io/aggregate-to-" + role + "=true"})
	if err != nil {
		return err
	}
	for _, r := range list.Items {
		for _, rule := range r.Rules {
			if slices.Contains(rule.APIGroups, "serving.moe-operator.io") && slices.Contains(rule.Resources, "mixtraldeployments") {
				ok := true
				for _, v := range verbs {
					ok = ok && slices.Contains(rule.Verbs, v)
				}
				if ok {
					return nil
				}
			}
		}
	}
	return errors.New("no ClusterRole aggregates MixtralDeployment " + strings.Join(verbs, ",") + " into " + role)
}
