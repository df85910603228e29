package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// fleet is n autoscaled MixtralDeployments of two ready engine pods each, every engine at
// the target (so no window opens and the measured work is the steady state).
func fleet(h *scalerHarness, n int) []*fakeEngine {
	var engines []*fakeEngine
	for i := range n {
		name := fmt.Sprintf("fleet-%02d", i)
		h.create(name, 2, autoscaling(servingv1alpha1.MetricConcurrency, "4", 1, 8))
		for range 2 {
			_, e := h.addPod(name, true)
			e.set(3, 1)
			e.setRate(100)
			engines = append(engines, e)
		}
	}
	return engines
}

// waitFleet waits until every MixtralDeployment of the fleet has read both its pods.
func waitFleet(h *scalerHarness, n int) {
	h.eventually(func(g Gomega) {
		list := &servingv1alpha1.MixtralDeploymentList{}
		g.Expect(k8sClient.List(context.Background(), list, client.InNamespace(h.ns))).To(Succeed())
		g.Expect(list.Items).To(HaveLen(n))
		for _, o := range list.Items {
			g.Expect(o.Status.Autoscaling).NotTo(BeNil(), o.Name)
			g.Expect(o.Status.Autoscaling.ScrapedReplicas).To(Equal(int32(2)), o.Name)
		}
	})
}

// TestAutoscalerFiftyDeployments scales fifty MixtralDeployments at once from their
// engines' load: each is read and decided on its own.
func TestAutoscalerFiftyDeployments(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 50 MixtralDeployments and 100 pods")
	}
	const n = 50
	h := newScalerHarness(t)
	var passes sync.Map // name -> *atomic.Int64
	h.afterPass = func(key types.NamespacedName, _ time.Duration) {
		c, _ := passes.LoadOrStore(key.Name, new(atomic.Int64))
		c.(*atomic.Int64).Add(1)
	}
	h.startManager()
	engines := fleet(h, n)
	waitFleet(h, n)

	// Twice the target everywhere: every one scales from 2 to 4 after the window.
	for _, e := range engines {
		e.set(6, 2)
	}
	h.clock.Step(time.Second)
	h.eventually(func(g Gomega) {
		list := &servingv1alpha1.MixtralDeploymentList{}
		g.Expect(k8sClient.List(context.Background(), list, client.InNamespace(h.ns))).To(Succeed())
		for _, o := range list.Items {
			g.Expect(o.Status.Autoscaling.ScaleUp).NotTo(BeNil(), o.Name)
		}
	})
	h.clock.Step(30 * time.Second)
	h.eventually(func(g Gomega) {
		list := &servingv1alpha1.MixtralDeploymentList{}
		g.Expect(k8sClient.List(context.Background(), list, client.InNamespace(h.ns))).To(Succeed())
		for _, o := range list.Items {
			g.Expect(*o.Spec.Replicas).To(Equal(int32(4)), o.Name)
		}
	})
	for i := range n {
		name := fmt.Sprintf("fleet-%02d", i)
		c, ok := passes.Load(name)
		NewWithT(t).Expect(ok).To(BeTrue(), name)
		NewWithT(t).Expect(c.(*atomic.Int64).Load()).To(BeNumerically(">=", 3), name)
	}
}

// BenchmarkAutoscalerCycle measures one autoscaling cycle over a fleet of MixtralDeployments
// with two ready engine pods each: every one reconciled once, in turn, as the manager's one
// worker does (plan, children compared, pods listed from the cache, both engines' /metrics
// read over loopback HTTP, the decision, and the status write a production pass makes,
// its lastScrapeTime being new). The reads go through a manager's cache, the writes to the
// API server.
//
//	ns/op                  one cycle over the fleet
//	ms/deployment          the cycle per MixtralDeployment: flat when the cost is linear
//	scrape-ms/deployment   listing and reading one MixtralDeployment's pods
//	writes/deployment      API writes per pass
//	status-write-ms        the status write's round trip to the API server, per pass
//
// With the default 10 s sync period, a cycle must take well under 10 s.
func BenchmarkAutoscalerCycle(b *testing.B) {
	for _, n := range []int{5, 50} {
		b.Run(fmt.Sprintf("deployments=%d", n), func(b *testing.B) { benchmarkCycle(b, n) })
	}
}

func benchmarkCycle(b *testing.B, n int) {
	h := newScalerHarness(b)
	fleet(h, n)

	// A manager for its cache only: the benchmark is the worker.
	opts := CacheOptions()
	opts.DefaultNamespaces = map[string]cache.Config{h.ns: {}}
	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme: testScheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0", Cache: opts,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	b.Cleanup(func() { cancel(); <-done })
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		b.Fatal("cache did not sync")
	}

	var writes atomic.Int64
	var patchTime atomic.Int64
	var scrapes []time.Duration
	counted := interceptor.NewClient(noWatch{mgr.GetClient()}, interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, p client.Patch, opts ...client.SubResourcePatchOption) error {
			writes.Add(1)
			st := time.Now()
			defer func() { patchTime.Add(int64(time.Since(st))) }()
			return c.SubResource(sub).Patch(ctx, obj, p, opts...)
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			writes.Add(1)
			return c.SubResource(sub).Update(ctx, obj, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			writes.Add(1)
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			writes.Add(1)
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, p client.Patch, opts ...client.PatchOption) error {
			writes.Add(1)
			return c.Patch(ctx, obj, p, opts...)
		},
	})
	r := &MixtralDeploymentReconciler{
		Client: counted, EngineImage: envtestImage, EngineGPUImage: envtestGPUImage,
		Autoscaler: &Autoscaler{
			Metrics: &HTTPMetrics{Addresser: h.pods}, Clock: h.clock,
			afterPass: func(_ types.NamespacedName, d time.Duration) { scrapes = append(scrapes, d) },
		},
	}
	cycle := func() {
		// Each cycle is a sync period later, so each pass writes its status as in production.
		h.clock.Step(DefaultAutoscalerSyncPeriod)
		for i := range n {
			req := ctrl.Request{NamespacedName: types.NamespacedName{Namespace: h.ns, Name: fmt.Sprintf("fleet-%02d", i)}}
			if _, err := r.Reconcile(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	}
	// The first cycles create the children and wait for the cache to hold them.
	cycle()
	waitFleet(h, n)
	cycle()

	scrapes = scrapes[:0]
	startWrites := writes.Load()
	patchTime.Store(0)
	passes := 0
	for b.Loop() {
		cycle()
		passes += n
	}
	var sum time.Duration
	for _, d := range scrapes {
		sum += d
	}
	slices.Sort(scrapes)
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(passes), "ms/deployment")
	b.ReportMetric(sum.Seconds()*1000/float64(len(scrapes)), "scrape-ms/deployment")
	b.ReportMetric(scrapes[len(scrapes)*95/100].Seconds()*1000, "p95-scrape-ms")
	b.ReportMetric(float64(writes.Load()-startWrites)/float64(passes), "writes/deployment")
	b.ReportMetric(float64(patchTime.Load())/1e6/float64(passes), "status-write-ms")
}

// noWatch lets interceptor wrap a client that has no Watch.
type noWatch struct{ client.Client }

func (noWatch) Watch(context.Context, client.ObjectList, ...client.ListOption) (watch.Interface, error) {
	return nil, errors.New("no watch")
}

// TestAutoscalerSaturatedWorkerServesEveryDeployment keeps the manager's one worker busy
// (a 1 ms sync period) over MixtralDeployments that existed before it started: periodic
// passes share one priority, so each still gets its turn instead of a few hogging the queue.
func TestAutoscalerSaturatedWorkerServesEveryDeployment(t *testing.T) {
	const n = 10
	h := newScalerHarness(t)
	h.syncPeriod = time.Millisecond
	var mu sync.Mutex
	passes := map[string]int{}
	h.afterPass = func(key types.NamespacedName, _ time.Duration) {
		mu.Lock()
		passes[key.Name]++
		mu.Unlock()
	}
	fleet(h, n)
	h.startManager()
	h.eventually(func(g Gomega) {
		mu.Lock()
		defer mu.Unlock()
		for i := range n {
			g.Expect(passes[fmt.Sprintf("fleet-%02d", i)]).To(BeNumerically(">=", 5), "fleet-%02d", i)
		}
	})
	mu.Lock()
	defer mu.Unlock()
	counts := make([]int, 0, n)
	for _, c := range passes {
		counts = append(counts, c)
	}
	NewWithT(t).Expect(slices.Min(counts)*3).To(BeNumerically(">=", slices.Max(counts)), "passes per deployment: %v", passes)
}
