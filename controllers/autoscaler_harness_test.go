package controllers

import (
	"context"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/engine/server"
)

// The autoscaler's envtest tests run their own manager, with a fake clock for the windows
// and engine pods whose metrics come from real HTTP servers on loopback; they stop and
// restart it. Their MixtralDeployments carry ownManagerLabel, which the suite's shared
// manager does not cache, so it leaves them alone.
const ownManagerLabel = "test.moe-operator.io/own-manager"

// suiteCacheOptions keep objects labelled ownManagerLabel out of the suite's manager.
func suiteCacheOptions() cache.Options {
	notOwn, err := labels.NewRequirement(ownManagerLabel, selection.DoesNotExist, nil)
	if err != nil {
		panic(err)
	}
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&servingv1alpha1.MixtralDeployment{}: {Label: labels.NewSelector().Add(*notOwn)},
	}}
}

// fakeEngine is a real HTTP server exporting the engine's metrics (the vLLM names, in the
// Prometheus text format, from a Prometheus registry as `moe serve` does) with values the
// test sets. The generated-token counter advances at tokensPerSecond in real time.
type fakeEngine struct {
	srv     *httptest.Server
	running atomic.Uint64 // float64 bits
	waiting atomic.Uint64
	kv      atomic.Uint64
	// tokens is the counter's value at since; it grows at rate tokens per second after.
	mu     sync.Mutex
	tokens float64
	rate   float64
	since  time.Time
	fail   atomic.Bool
	hits   atomic.Int64
}

func newFakeEngine(t testing.TB, extra ...prometheus.Collector) *fakeEngine {
	e := &fakeEngine{since: time.Now()}
	reg := prometheus.NewRegistry()
	reg.MustRegister(extra...)
	labels := prometheus.Labels{"model_name": "tiny-mixtral"}
	gauge := func(name string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: name, ConstLabels: labels},
			func() float64 { return math.Float64frombits(v.Load()) })
	}
	reg.MustRegister(
		gauge(server.MetricRequestsRunning, &e.running),
		gauge(server.MetricRequestsWaiting, &e.waiting),
		gauge(server.MetricKVCacheUsage, &e.kv),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: server.MetricGenerationTokens, Help: "tokens", ConstLabels: labels},
			e.generated),
	)
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		if e.fail.Load() {
			http.Error(w, "engine unavailable", http.StatusServiceUnavailable)
			return
		}
		metrics.ServeHTTP(w, r)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *fakeEngine) generated() float64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.tokens + e.rate*time.Since(e.since).Seconds()
}

// set sets the gauges: running and waiting requests.
func (e *fakeEngine) set(running, waiting float64) {
	e.running.Store(math.Float64bits(running))
	e.waiting.Store(math.Float64bits(waiting))
}

func (e *fakeEngine) setKV(v float64) { e.kv.Store(math.Float64bits(v)) }

// setRate makes the token counter advance at tokensPerSecond from now on.
func (e *fakeEngine) setRate(tokensPerSecond float64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	e.tokens += e.rate * now.Sub(e.since).Seconds()
	e.rate, e.since = tokensPerSecond, now
}

// loopbackPods is the tests' PodAddresser: each engine pod is served on loopback.
type loopbackPods struct {
	mu    sync.Mutex
	addrs map[types.NamespacedName]string
}

func (l *loopbackPods) set(ns, pod, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.addrs == nil {
		l.addrs = map[types.NamespacedName]string{}
	}
	l.addrs[types.NamespacedName{Namespace: ns, Name: pod}] = addr
}

func (l *loopbackPods) PodAddress(pod *corev1.Pod, _ int32) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	addr, ok := l.addrs[types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}]
	if !ok {
		return "", fmt.Errorf("pod %s has no loopback engine", pod.Name)
	}
	return addr, nil
}

// scalerHarness runs a manager of its own over one namespace.
type scalerHarness struct {
	t     testing.TB
	ns    string
	clock *clocktesting.FakeClock
	pods  *loopbackPods
	// syncPeriod is the real time between passes.
	syncPeriod time.Duration
	// realClock makes the autoscaler use the real clock instead of h.clock.
	realClock bool
	// afterPass is handed to each manager's Autoscaler.
	afterPass func(types.NamespacedName, time.Duration)
	// passes counts the passes that have read the engines, in every manager.
	passes atomic.Int64

	stop    func()
	podSeq  int
	started int
}

func newScalerHarness(t testing.TB) *scalerHarness {
	t.Helper()
	if tt, ok := t.(*testing.T); ok {
		requireEnvtest(tt)
	} else if envErr != nil {
		t.Skipf("envtest: %v", envErr)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "mxd-"}}
	if err := k8sClient.Create(context.Background(), ns); err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	h := &scalerHarness{
		t:          t,
		ns:         ns.Name,
		clock:      clocktesting.NewFakeClock(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)),
		pods:       &loopbackPods{},
		syncPeriod: 100 * time.Millisecond,
	}
	t.Cleanup(func() { h.stopManager() })
	return h
}

// startManager starts a fresh manager: a new cache, a new reconciler and a new Autoscaler
// with nothing in memory.
func (h *scalerHarness) startManager() {
	h.t.Helper()
	opts := CacheOptions()
	opts.DefaultNamespaces = map[string]cache.Config{h.ns: {}}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                 testScheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  opts,
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	a := &Autoscaler{
		Metrics:    &HTTPMetrics{Addresser: h.pods, Timeout: time.Second},
		Clock:      h.clock,
		SyncPeriod: h.syncPeriod,
		afterPass: func(key types.NamespacedName, took time.Duration) {
			h.passes.Add(1)
			if h.afterPass != nil {
				h.afterPass(key, took)
			}
		},
	}
	if h.realClock {
		a.Clock = nil
	}
	r := &MixtralDeploymentReconciler{
		Client:      mgr.GetClient(),
		Recorder:    mgr.GetEventRecorder("moe-operator"),
		EngineImage: envtestImage,
		Autoscaler:  a,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	h.started++
	h.stop = func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("manager: %v", err)
		}
	}
}

func (h *scalerHarness) stopManager() {
	if h.stop != nil {
		h.stop()
		h.stop = nil
	}
}

func (h *scalerHarness) restartManager() {
	h.stopManager()
	h.startManager()
}

// create makes a tiny CPU MixtralDeployment with autoscaling and replicas set.
func (h *scalerHarness) create(name string, replicas int32, as *servingv1alpha1.AutoscalingSpec) *servingv1alpha1.MixtralDeployment {
	h.t.Helper()
	return h.createFrom(cpuSample, name, replicas, as)
}

// createFrom is create from another of config/samples.
func (h *scalerHarness) createFrom(sample, name string, replicas int32, as *servingv1alpha1.AutoscalingSpec) *servingv1alpha1.MixtralDeployment {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "config", "samples", sample))
	if err != nil {
		h.t.Fatal(err)
	}
	obj := &servingv1alpha1.MixtralDeployment{}
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		h.t.Fatal(err)
	}
	obj.Namespace = h.ns
	obj.Name = name
	obj.Labels = map[string]string{ownManagerLabel: "true"}
	obj.Spec.Replicas = ptr.To(replicas)
	obj.Spec.Autoscaling = as
	if err := k8sClient.Create(context.Background(), obj); err != nil {
		h.t.Fatal(err)
	}
	return obj
}

// addPod creates an engine pod of MixtralDeployment mxd, served by a new fake engine, and
// reports it ready or starting as the kubelet would.
func (h *scalerHarness) addPod(mxd string, ready bool) (*corev1.Pod, *fakeEngine) {
	h.t.Helper()
	e := newFakeEngine(h.t)
	pod := h.addPodAt(mxd, ready, e.srv.Listener.Addr().String())
	return pod, e
}

// addPodAt creates an engine pod served at addr (host:port).
func (h *scalerHarness) addPodAt(mxd string, ready bool, addr string, extraLabels ...map[string]string) *corev1.Pod {
	h.t.Helper()
	ctx := context.Background()
	h.podSeq++
	labels := commonLabels(mxd)
	for _, l := range extraLabels {
		maps.Copy(labels, l)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("%s-%d", mxd, h.podSeq), Namespace: h.ns, Labels: labels,
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: engineContainerName, Image: envtestImage}}},
	}
	if err := k8sClient.Create(ctx, pod); err != nil {
		h.t.Fatal(err)
	}
	h.pods.set(h.ns, pod.Name, addr)
	h.setReady(pod, ready)
	return pod
}

// setReady writes the pod's status as the kubelet would.
func (h *scalerHarness) setReady(pod *corev1.Pod, ready bool) {
	h.t.Helper()
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.0.0.%d", h.podSeq%250+1),
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}},
	}
	if err := k8sClient.Status().Update(context.Background(), pod); err != nil {
		h.t.Fatal(err)
	}
}

// tick moves the fake clock by d and waits for a pass at the new time, which therefore read
// the engines after every change made before the call. It returns the object as stored
// after that pass.
//
// A change made before tick may also be read by a pass still at the old time (passes repeat
// every syncPeriod of real time), which the autoscaler rightly takes as a change at that
// time. Where the test asserts when a window opened, make the change inside tick instead:
// changes run after the clock has moved, and tick then waits for a pass that read them.
func (h *scalerHarness) tick(name string, d time.Duration, changes ...func()) *servingv1alpha1.MixtralDeployment {
	h.t.Helper()
	h.clock.Step(d)
	want := h.clock.Now().Truncate(time.Second)
	for _, change := range changes {
		change()
	}
	// The pass counted next may have read the engines before the changes; the one after it
	// began after them, and the one after that began once it had written its status (passes
	// over one object never overlap).
	after := h.passes.Load() + 3
	if len(changes) == 0 {
		after = 0
	}
	var obj *servingv1alpha1.MixtralDeployment
	h.eventually(func(g Gomega) {
		g.Expect(h.passes.Load()).To(BeNumerically(">=", after), "passes since the changes")
		obj = get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(obj.Status.Autoscaling).NotTo(BeNil())
		g.Expect(obj.Status.Autoscaling.LastScrapeTime).NotTo(BeNil())
		g.Expect(obj.Status.Autoscaling.LastScrapeTime.Time.Equal(want)).To(BeTrue(),
			"a pass at %s (last at %s)", want, obj.Status.Autoscaling.LastScrapeTime)
	})
	return obj
}

// replicas is the MixtralDeployment's spec.replicas, once its Deployment has followed.
func (h *scalerHarness) replicas(name string) int32 {
	h.t.Helper()
	var n int32
	h.eventually(func(g Gomega) {
		obj := get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(obj.Spec.Replicas).NotTo(BeNil())
		d := get(g, h.ns, name, &appsv1.Deployment{})
		g.Expect(d.Spec.Replicas).To(Equal(obj.Spec.Replicas), "the Deployment follows spec.replicas")
		n = *obj.Spec.Replicas
	})
	return n
}

// scaleTo writes spec.replicas through the scale subresource, as kubectl scale or an HPA
// does, under the given field manager.
func (h *scalerHarness) scaleTo(name string, replicas int32, manager string) {
	h.t.Helper()
	scaleTo(h.t, h.ns, name, replicas, manager)
}

// scaleTo reads the scale subresource and writes spec.replicas back through it, as
// kubectl scale and the HPA controller do.
func scaleTo(t testing.TB, ns, name string, replicas int32, manager string) {
	t.Helper()
	ctx := context.Background()
	obj := &servingv1alpha1.MixtralDeployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	NewWithT(t).Eventually(func(g Gomega) {
		scale := &autoscalingv1.Scale{}
		g.Expect(k8sClient.SubResource("scale").Get(ctx, obj, scale)).To(Succeed())
		scale.Spec.Replicas = replicas
		g.Expect(k8sClient.SubResource("scale").Update(ctx, obj, client.WithSubResourceBody(scale), client.FieldOwner(manager))).To(Succeed())
	}).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
}

// eventually polls f until it passes, as the suite's eventually does.
func (h *scalerHarness) eventually(f func(g Gomega)) {
	h.t.Helper()
	NewWithT(h.t).Eventually(f).WithTimeout(30 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
}
