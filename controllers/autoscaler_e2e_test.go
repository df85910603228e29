package controllers

import (
	"bufio"
	"context"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/engine/loadgen"
	"github.com/moe-operator/moe-operator/engine/modelgen"
)

// startMoeServe builds cmd/moe, writes the tiny generated model and serves it on loopback
// with one sequence at a time, so concurrent requests queue. It returns host:port.
func startMoeServe(t *testing.T, name string) string {
	t.Helper()
	tmp := t.TempDir()
	moe := filepath.Join(tmp, "moe")
	build := exec.Command("go", "build", "-o", moe, "./cmd/moe")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building moe: %v\n%s", err, out)
	}
	model := filepath.Join(tmp, "tiny.gguf")
	c, err := modelgen.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	if err := modelgen.Write(model, c); err != nil {
		t.Fatal(err)
	}
	serve := exec.Command(moe, "serve", "--model", model, "--host", "127.0.0.1", "--port", "0",
		"--served-model-name", name, "--threads", "1", "--max-num-seqs", "1", "--max-queue", "64",
		"--shutdown-grace", "1s")
	stderr, err := serve.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var logsMu sync.Mutex
	addr := make(chan string, 1)
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		re := regexp.MustCompile(`msg=listening addr=(\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logsMu.Lock()
			logs.WriteString(sc.Text() + "\n")
			logsMu.Unlock()
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	t.Cleanup(func() {
		_ = serve.Process.Signal(syscall.SIGTERM)
		_ = serve.Wait()
		<-logged
		if t.Failed() {
			logsMu.Lock()
			t.Logf("moe serve log:\n%s", logs.String())
			logsMu.Unlock()
		}
	})
	var hostPort string
	select {
	case hostPort = <-addr:
	case <-time.After(time.Minute):
		t.Fatal("moe serve did not log its address")
	}
	eventually(t, func(g Gomega) {
		res, err := http.Get("http://" + hostPort + "/ready")
		g.Expect(err).NotTo(HaveOccurred())
		res.Body.Close()
		g.Expect(res.StatusCode).To(Equal(http.StatusOK))
	})
	return hostPort
}

// TestAutoscalerEndToEndRealEngine drives a real `moe serve` with real concurrent requests
// and lets the autoscaler, with its default settings and the real clock, read its
// vllm:num_requests_waiting: the Deployment gains a replica within the 30 s scale-up window
// of the overload starting.
func TestAutoscalerEndToEndRealEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real engine under load for about 30 s")
	}
	h := newScalerHarness(t)
	h.realClock = true
	h.syncPeriod = 0 // DefaultAutoscalerSyncPeriod
	h.startManager()
	g := NewWithT(t)
	ctx := context.Background()
	const name = "e2e"
	addr := startMoeServe(t, "tiny-mixtral")

	// Defaults: windows 30 s up and 300 s down, QueueDepth's target of 1 waiting request.
	h.create(name, 1, &servingv1alpha1.AutoscalingSpec{Enabled: true, MinReplicas: ptr.To[int32](1), MaxReplicas: ptr.To[int32](3),
		Metric: servingv1alpha1.MetricQueueDepth})
	h.addPodAt(name, true, addr)
	var obj *servingv1alpha1.MixtralDeployment
	eventually(t, func(g Gomega) {
		obj = get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(obj.Status.Autoscaling).NotTo(BeNil())
		g.Expect(obj.Status.Autoscaling.ScrapedReplicas).To(Equal(int32(1)))
		g.Expect(condition(g, obj, servingv1alpha1.ConditionScalingActive).Status).To(Equal(metav1.ConditionTrue))
	})
	g.Expect(obj.Spec.Autoscaling.ScaleUpWindow.Duration).To(Equal(30*time.Second), "the CRD's default")
	g.Expect(obj.Status.Autoscaling.RecommendedReplicas).To(Equal(int32(1)), "idle")

	// Six clients keep a request each in flight against a server that runs one at a time:
	// about five wait at every moment.
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadDone := make(chan loadgen.Result, 1)
	start := time.Now()
	go func() {
		res, err := loadgen.Run(loadCtx, loadgen.Options{
			URL: "http://" + addr, Model: "tiny-mixtral", Concurrency: 6, Duration: 90 * time.Second,
			MaxTokens: 300, IgnoreEOS: true,
		})
		if err != nil {
			t.Errorf("loadgen: %v", err)
		}
		loadDone <- res
	}()

	var reaction time.Duration
	NewWithT(t).Eventually(func(g Gomega) {
		d := get(g, h.ns, name, &appsv1.Deployment{})
		g.Expect(*d.Spec.Replicas).To(BeNumerically(">", 1))
		reaction = time.Since(start)
	}).WithTimeout(60 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	// The status of the pass that scaled, before the load stops.
	eventually(t, func(g Gomega) {
		obj = get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(obj.Status.Autoscaling.LastScaleTime).NotTo(BeNil())
	})
	as := obj.Status.Autoscaling
	stopLoad()
	res := <-loadDone

	t.Logf("reaction: the Deployment went from 1 to %d replicas %.2f s after the overload started "+
		"(sync period %s, scale-up window %s); observed %s waiting per replica against a target of %s; "+
		"%d requests, %.0f tok/s, %.2f tok/s per replica observed by the autoscaler, ratio to the plan %.3f",
		*obj.Spec.Replicas, reaction.Seconds(), DefaultAutoscalerSyncPeriod, obj.Spec.Autoscaling.ScaleUpWindow.Duration,
		as.ObservedValue, as.Target, res.Requests, res.OutputTokensPerSecond,
		as.ObservedOutputTokensPerSecondPerReplica, as.ThroughputRatio)
	g.Expect(*obj.Spec.Replicas).To(Equal(int32(2)), "one step at most doubles")
	// The window is 30 s from the last reading without overload, which precedes the
	// overload, and the pass that closes it runs when it ends; the margin covers the pass
	// itself and this test's polling on a busy machine.
	g.Expect(reaction).To(BeNumerically("<=", 30*time.Second+500*time.Millisecond))
	g.Expect(reaction).To(BeNumerically(">=", 30*time.Second-DefaultAutoscalerSyncPeriod-time.Second),
		"the overload had to last the window, less the time since the previous reading")
	g.Expect(as.ObservedOutputTokensPerSecondPerReplica).To(BeNumerically(">", 0), "the engine's token counter was read")
	eventually(t, func(g Gomega) {
		g.Expect(scaleEvents(g, h.ns, name, servingv1alpha1.EventScaledUp)).To(ConsistOf(
			HavePrefix("Scaled up from 1 to 2 replicas: QueueDepth was ")))
	})
}
