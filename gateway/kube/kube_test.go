package kube

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/moe-operator/moe-operator/gateway"
)

// startAPIServer runs a real kube-apiserver and etcd (envtest). Without the binaries the
// test fails when MOE_REQUIRE_ENVTEST is set (make test, CI) and skips otherwise.
func startAPIServer(t *testing.T) (kubernetes.Interface, dynamic.Interface) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if os.Getenv("MOE_REQUIRE_ENVTEST") != "" {
			t.Fatal("KUBEBUILDER_ASSETS is not set; run `make test`")
		}
		t.Skip("KUBEBUILDER_ASSETS is not set; run `make test`")
	}
	// The operator's CRDs, so the gateway's writes to MixtralDeployments meet the real schema.
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("..", "..", "config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	return kubernetes.NewForConfigOrDie(cfg), dynamic.NewForConfigOrDie(cfg)
}

// createMixtralDeployment creates the tiny CPU sample as name in ns.
func createMixtralDeployment(t *testing.T, dyn dynamic.Interface, ns, name string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "config", "samples", "serving_v1alpha1_mixtraldeployment_tiny_cpu.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(data, &obj.Object); err != nil {
		t.Fatal(err)
	}
	obj.SetNamespace(ns)
	obj.SetName(name)
	if _, err := dyn.Resource(mixtralDeployments).Namespace(ns).Create(context.Background(), obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// hostAddress is a non-loopback IPv4 address of this machine: EndpointSlices refuse
// loopback addresses.
func hostAddress(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Fatal("this machine has no non-loopback IPv4 address for the engine to listen on")
	return ""
}

// engine is an HTTP server on this machine's address that answers with its name.
func engine(t *testing.T, name string) (host string, port int32) {
	ln, err := net.Listen("tcp", net.JoinHostPort(hostAddress(t), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			io.WriteString(w, "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0\nvllm:generation_tokens_total 0\n")
			return
		}
		fmt.Fprintf(w, `{"choices":[{"message":{"content":%q}}]}`, name)
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	h, p, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	n, _ := strconv.Atoi(p)
	return h, int32(n)
}

func engineService(ns, name, model string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "moe-operator", "app.kubernetes.io/component": "engine"},
			Annotations: map[string]string{AnnotationServedModelName: model}},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8000}}},
	}
}

func slice(ns, service, host string, port int32, ready bool) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		// The labels the EndpointSlice controller sets: the Service's own, and its name.
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: service + "-x", Labels: map[string]string{
			discoveryv1.LabelServiceName: service, "app.kubernetes.io/managed-by": "moe-operator", "app.kubernetes.io/component": "engine"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready)}}},
	}
}

func TestTheGatewayFollowsTheEngineServicesEndpointSlices(t *testing.T) {
	cs, dyn := startAPIServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	host, port := engine(t, "engine-one")
	if _, err := cs.CoreV1().Services("team-a").Create(ctx, engineService("team-a", "chat", "mixtral-chat"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A Service of something else, with an EndpointSlice: never routed to.
	other := engineService("team-a", "other", "not-an-engine")
	other.Labels = map[string]string{"app": "web"}
	if _, err := cs.CoreV1().Services("team-a").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.DiscoveryV1().EndpointSlices("team-a").Create(ctx, slice("team-a", "other", host, port, true), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	createMixtralDeployment(t, dyn, "team-a", "chat")

	router := gateway.NewRouter(nil)
	cluster, err := Watch(ctx, cs, dyn, "", router, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	gw := gateway.New(router, gateway.Options{Waker: cluster, HoldTimeout: 500 * time.Millisecond, WakeMinInterval: 20 * time.Millisecond})
	go gw.Wake(ctx)
	front := httptest.NewServer(gw)
	defer front.Close()
	ask := func() (int, string) {
		res, err := http.Post(front.URL+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"mixtral-chat","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	eventually := func(what string, f func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !f() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// The Service exists without endpoints: its model is known, not ready, and a request
	// for it is held for the hold timeout, then 503.
	if code, body := ask(); code != 503 || !strings.Contains(body, "no replica of mixtral-chat became ready within 500ms") {
		t.Fatalf("before endpoints: %d %q", code, body)
	}
	if got := router.Models(); len(got) != 1 || got[0] != "mixtral-chat" {
		t.Fatalf("models %v: only the engine Service's", got)
	}
	// The held request was written onto its MixtralDeployment, and, once it left, zero.
	annotations := func() map[string]string {
		obj, err := dyn.Resource(mixtralDeployments).Namespace("team-a").Get(ctx, "chat", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return obj.GetAnnotations()
	}
	eventually("the held count is back to zero", func() bool { return annotations()[AnnotationHeldRequests] == "0" })
	if at, err := time.Parse(time.RFC3339, annotations()[AnnotationHeldAt]); err != nil || time.Since(at) > time.Minute {
		t.Fatalf("held-at %q: %v", annotations()[AnnotationHeldAt], err)
	}

	// A request held while the endpoint comes up goes through.
	answered := make(chan string, 1)
	go func() {
		res, err := http.Post(front.URL+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"mixtral-chat","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			answered <- err.Error()
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		answered <- fmt.Sprint(res.StatusCode, " ", string(b))
	}()
	eventually("the MixtralDeployment hears of the held request", func() bool { return annotations()[AnnotationHeldRequests] == "1" })
	es, err := cs.DiscoveryV1().EndpointSlices("team-a").Create(ctx, slice("team-a", "chat", host, port, true), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := <-answered; !strings.HasPrefix(got, "200 ") || !strings.Contains(got, "engine-one") {
		t.Fatalf("the held request: %s", got)
	}
	eventually("the ready endpoint serves", func() bool { code, body := ask(); return code == 200 && strings.Contains(body, "engine-one") })

	// Not ready (or terminating): it leaves at once.
	es.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Terminating: ptr.To(true)}
	if _, err := cs.DiscoveryV1().EndpointSlices("team-a").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("the terminating endpoint leaves", func() bool { code, _ := ask(); return code == 503 })

	// The Service goes: the model is unknown.
	if err := cs.CoreV1().Services("team-a").Delete(ctx, "chat", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually("the model is gone", func() bool { code, _ := ask(); return code == 404 })
}
