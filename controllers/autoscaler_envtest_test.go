package controllers

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/planner"
)

// autoscaling is an enabled autoscaling spec with the CRD's default windows.
func autoscaling(metric servingv1alpha1.AutoscalingMetric, target string, minReplicas, maxReplicas int32) *servingv1alpha1.AutoscalingSpec {
	as := &servingv1alpha1.AutoscalingSpec{Enabled: true, MinReplicas: ptr.To(minReplicas), MaxReplicas: ptr.To(maxReplicas), Metric: metric}
	if target != "" {
		as.Target = ptr.To(resource.MustParse(target))
	}
	return as
}

func scaleEvents(g Gomega, ns, name, reason string) []string {
	var notes []string
	for _, e := range recordedEvents(g, ns, name) {
		if e.Reason == reason {
			notes = append(notes, e.Note)
		}
	}
	return notes
}

func TestAutoscalerScalesUpWhenLoadExceedsTheTarget(t *testing.T) {
	h := newScalerHarness(t)
	h.startManager()
	g := NewWithT(t)
	const name = "up"
	h.create(name, 2, autoscaling(servingv1alpha1.MetricConcurrency, "4", 1, 8))
	// The engines carry the load from the moment their pods exist, so the
	// window opens at whichever pass reads them first: the one the pods'
	// creation triggers, or the tick's.
	e1, e2 := newFakeEngine(t), newFakeEngine(t)
	e1.set(4, 4) // 8 requests per replica, twice the target
	e2.set(5, 3)
	h.addPodAt(name, true, e1.srv.Listener.Addr().String())
	h.addPodAt(name, true, e2.srv.Listener.Addr().String())

	obj := h.tick(name, time.Second)
	as := obj.Status.Autoscaling
	g.Expect(as.RecommendedReplicas).To(Equal(int32(4)))
	g.Expect(as.ScaleUp).NotTo(BeNil())
	opened := as.ScaleUp.Since.Time
	g.Expect(opened).To(BeTemporally("<=", h.clock.Now()))
	g.Expect(opened).To(BeTemporally(">=", h.clock.Now().Add(-time.Second)))
	g.Expect(as.ScrapedReplicas).To(Equal(int32(2)))
	g.Expect(as.ObservedValue.String()).To(Equal("8"))
	g.Expect(as.Target.String()).To(Equal("4"))
	active := condition(g, obj, servingv1alpha1.ConditionScalingActive)
	g.Expect(active.Status).To(Equal(metav1.ConditionTrue))
	g.Expect(active.Reason).To(Equal(servingv1alpha1.ReasonValidMetrics))
	g.Expect(active.Message).To(ContainSubstring("asks for 4 replicas"))
	g.Expect(h.replicas(name)).To(Equal(int32(2)))

	obj = h.tick(name, opened.Add(29*time.Second).Sub(h.clock.Now()))
	g.Expect(h.replicas(name)).To(Equal(int32(2)), "29 s into the 30 s window")
	g.Expect(obj.Status.Autoscaling.ScaleUp.Since.Time).To(BeTemporally("==", opened))

	obj = h.tick(name, time.Second)
	g.Expect(h.replicas(name)).To(Equal(int32(4)), "the window has lasted 30 s")
	g.Expect(obj.Status.Autoscaling.DesiredReplicas).To(Equal(int32(4)))
	g.Expect(obj.Status.Autoscaling.LastScaleTime.Time).To(BeTemporally("==", h.clock.Now()))
	g.Expect(obj.Status.Autoscaling.ScaleUp).To(BeNil())
	eventually(t, func(g Gomega) {
		g.Expect(scaleEvents(g, h.ns, name, servingv1alpha1.EventScaledUp)).To(ConsistOf(
			"Scaled up from 2 to 4 replicas: Concurrency was 8 per replica against a target of 4 for 30s."))
	})
	// The autoscaler wrote through the scale subresource, under its own field manager.
	obj = get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{})
	g.Expect(replicasManager(obj)).To(Equal(autoscalerFieldOwner + "/scale"))

	// The Deployment creates two pods; they load the model. The load has not moved, and the
	// starting pods will take it: no further step while they start.
	h.addPod(name, false)
	h.addPod(name, false)
	obj = h.tick(name, time.Second)
	g.Expect(obj.Status.Autoscaling.StartingReplicas).To(Equal(int32(2)))
	g.Expect(obj.Status.Autoscaling.RecommendedReplicas).To(Equal(int32(4)))
	g.Expect(condition(g, obj, servingv1alpha1.ConditionScalingActive).Message).To(ContainSubstring("2 starting count toward capacity"))
	h.tick(name, time.Minute)
	g.Expect(h.replicas(name)).To(Equal(int32(4)))

	// More load: 32 requests on the two ready replicas ask for 8.
	e1.set(8, 8)
	e2.set(8, 8)
	obj = h.tick(name, time.Second)
	g.Expect(obj.Status.Autoscaling.RecommendedReplicas).To(Equal(int32(8)))
	h.tick(name, 30*time.Second)
	g.Expect(h.replicas(name)).To(Equal(int32(8)))
}

func TestAutoscalerHoldsWithinTheTolerance(t *testing.T) {
	h := newScalerHarness(t)
	h.startManager()
	g := NewWithT(t)
	const name = "steady"
	h.create(name, 2, autoscaling(servingv1alpha1.MetricConcurrency, "10", 1, 8))
	_, e1 := h.addPod(name, true)
	_, e2 := h.addPod(name, true)

	for _, load := range []struct {
		name   string
		a, b   float64
		holds  bool
		wantUp bool
	}{
		{name: "5% over the target holds", a: 10, b: 11, holds: true},
		{name: "5% under the target holds", a: 10, b: 9, holds: true},
		{name: "15% over the target asks for more", a: 12, b: 11, wantUp: true},
		{name: "15% under the target still needs both replicas", a: 8, b: 9, holds: true},
		{name: "55% under the target asks for fewer", a: 4, b: 5},
	} {
		t.Run(load.name, func(t *testing.T) {
			g := NewWithT(t)
			e1.set(load.a, 0)
			e2.set(load.b, 0)
			obj := h.tick(name, time.Second)
			as := obj.Status.Autoscaling
			switch {
			case load.holds:
				g.Expect(as.RecommendedReplicas).To(Equal(int32(2)), "ceil(%v / 10)", load.a+load.b)
				g.Expect(as.ScaleUp).To(BeNil())
				g.Expect(as.ScaleDown).To(BeNil())
				g.Expect(condition(g, obj, servingv1alpha1.ConditionScalingLimited).Reason).To(Equal(servingv1alpha1.ReasonWithinRange))
				h.tick(name, 10*time.Minute)
				g.Expect(h.replicas(name)).To(Equal(int32(2)), "nothing changes within the tolerance, however long")
			case load.wantUp:
				g.Expect(as.RecommendedReplicas).To(Equal(int32(3)))
				g.Expect(as.ScaleUp).NotTo(BeNil())
			default:
				g.Expect(as.ScaleDown).NotTo(BeNil())
			}
		})
	}
	g.Expect(h.replicas(name)).To(Equal(int32(2)))
}

func TestAutoscalerScalesDownOnlyAfterTheWindow(t *testing.T) {
	h := newScalerHarness(t)
	h.startManager()
	g := NewWithT(t)
	const name = "down"
	h.create(name, 4, autoscaling(servingv1alpha1.MetricConcurrency, "4", 1, 8))
	var engines []*fakeEngine
	for range 4 {
		_, e := h.addPod(name, true)
		e.set(4, 0) // at the target
		engines = append(engines, e)
	}
	load := func(n float64) func() {
		return func() {
			for _, e := range engines {
				e.set(n, 0)
			}
		}
	}

	obj := h.tick(name, time.Second, load(1)) // 4 requests in all: one replica's worth
	opened := h.clock.Now()
	g.Expect(obj.Status.Autoscaling.ScaleDown).To(beWindow(opened, 1))
	g.Expect(condition(g, obj, servingv1alpha1.ConditionScalingActive).Message).To(ContainSubstring("once it has for 5m0s"))

	// A burst back at the target half-way closes the window: the 300 s start over.
	h.tick(name, 150*time.Second)
	obj = h.tick(name, time.Second, load(4))
	g.Expect(obj.Status.Autoscaling.ScaleDown).To(BeNil())
	obj = h.tick(name, time.Second, load(1))
	reopened := h.clock.Now()
	g.Expect(obj.Status.Autoscaling.ScaleDown).To(beWindow(reopened, 1))

	h.tick(name, 299*time.Second)
	g.Expect(h.replicas(name)).To(Equal(int32(4)), "299 s into the 300 s window")
	obj = h.tick(name, time.Second)
	g.Expect(h.replicas(name)).To(Equal(int32(1)))
	g.Expect(obj.Status.Autoscaling.LastScaleTime.Time).To(BeTemporally("==", reopened.Add(300*time.Second)))
	eventually(t, func(g Gomega) {
		g.Expect(scaleEvents(g, h.ns, name, servingv1alpha1.EventScaledDown)).To(ConsistOf(
			"Scaled down from 4 to 1 replicas: Concurrency was 1 per replica against a target of 4 for 5m0s."))
	})
}

func TestAutoscalerRespectsMinAndMax(t *testing.T) {
	h := newScalerHarness(t)
	h.startManager()
	g := NewWithT(t)
	const name = "bounds"
	h.create(name, 2, autoscaling(servingv1alpha1.MetricQueueDepth, "1", 2, 3))
	_, e1 := h.addPod(name, true)
	_, e2 := h.addPod(name, true)

	// 100 waiting requests ask for 100 replicas; maxReplicas is 3.
	e1.set(4, 50)
	e2.set(4, 50)
	obj := h.tick(name, time.Second)
	limited := condition(g, obj, servingv1alpha1.ConditionScalingLimited)
	g.Expect(limited.Status).To(Equal(metav1.ConditionTrue))
	g.Expect(limited.Reason).To(Equal(servingv1alpha1.ReasonMaxReplicas))
	g.Expect(limited.Message).To(ContainSubstring("raise autoscaling.maxReplicas"))
	g.Expect(obj.Status.Autoscaling.RecommendedReplicas).To(Equal(int32(3)))
	h.tick(name, 30*time.Second)
	g.Expect(h.replicas(name)).To(Equal(int32(3)))
	h.addPod(name, true)
	h.tick(name, 10*time.Minute)
	g.Expect(h.replicas(name)).To(Equal(int32(3)), "never above maxReplicas")

	// No load asks for none; minReplicas is 2.
	e1.set(0, 0)
	e2.set(0, 0)
	obj = h.tick(name, time.Second)
	limited = condition(g, obj, servingv1alpha1.ConditionScalingLimited)
	g.Expect(limited.Reason).To(Equal(servingv1alpha1.ReasonMinReplicas))
	h.tick(name, 300*time.Second)
	g.Expect(h.replicas(name)).To(Equal(int32(2)))
	h.tick(name, 10*time.Minute)
	g.Expect(h.replicas(name)).To(Equal(int32(2)), "never below minReplicas")

	// Someone scales outside the bounds: brought back at once, whatever the load.
	h.scaleTo(name, 9, "kubectl")
	eventually(t, func(g Gomega) {
		h.clock.Step(time.Second)
		g.Expect(*get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{}).Spec.Replicas).To(Equal(int32(3)))
		g.Expect(scaleEvents(g, h.ns, name, servingv1alpha1.EventScaledDown)).To(ContainElement(
			"Scaled down from 9 to 3 replicas: spec.replicas was outside minReplicas..maxReplicas (2..3)."))
	})
	h.scaleTo(name, 1, "kubectl")
	eventually(t, func(g Gomega) {
		h.clock.Step(time.Second)
		g.Expect(*get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{}).Spec.Replicas).To(Equal(int32(2)))
	})
	g.Expect(h.replicas(name)).To(Equal(int32(2)))
}

func TestAutoscalerHoldsWhenScrapesFail(t *testing.T) {
	h := newScalerHarness(t)
	h.startManager()
	g := NewWithT(t)
	const name = "blind"
	h.create(name, 3, autoscaling(servingv1alpha1.MetricConcurrency, "4", 1, 8))
	var engines []*fakeEngine
	for range 3 {
		_, e := h.addPod(name, true)
		e.set(1, 0) // low load: asks for 1 replica
		engines = append(engines, e)
	}

	// One replica's metrics fail: its load is unknown, so no scale-down, however long.
	engines[0].fail.Store(true)
	obj := h.tick(name, time.Second)
	active := condition(g, obj, servingv1alpha1.ConditionScalingActive)
	g.Expect(active.Status).To(Equal(metav1.ConditionTrue))
	g.Expect(active.Reason).To(Equal(servingv1alpha1.ReasonPartialMetrics))
	g.Expect(active.Message).To(ContainSubstring("1 of 3 ready replicas could not be read"))
	g.Expect(active.Message).To(ContainSubstring("503 Service Unavailable"))
	g.Expect(obj.Status.Autoscaling.ScaleDown).To(BeNil())
	h.tick(name, 10*time.Minute)
	g.Expect(h.replicas(name)).To(Equal(int32(3)))

	// Every replica fails (one answers 503s, two are gone): hold.
	engines[1].fail.Store(true)
	engines[2].srv.Close()
	obj = h.tick(name, time.Second)
	active = condition(g, obj, servingv1alpha1.ConditionScalingActive)
	g.Expect(active.Status).To(Equal(metav1.ConditionFalse))
	g.Expect(active.Reason).To(Equal(servingv1alpha1.ReasonScrapeFailed))
	g.Expect(active.Message).To(ContainSubstring("holding at 3 replicas and not scaling down"))
	g.Expect(obj.Status.Autoscaling.ScrapedReplicas).To(BeZero())
	h.tick(name, 10*time.Minute)
	g.Expect(h.replicas(name)).To(Equal(int32(3)))

	// While one replica is missing, the others' load may still scale up.
	engines[0].fail.Store(false)
	engines[1].fail.Store(false)
	engines[0].set(8, 8)
	engines[1].set(8, 8)
	obj = h.tick(name, time.Second)
	g.Expect(condition(g, obj, servingv1alpha1.ConditionScalingActive).Reason).To(Equal(servingv1alpha1.ReasonPartialMetrics))
	g.Expect(obj.Status.Autoscaling.RecommendedReplicas).To(Equal(int32(6)), "32 requests on the two read replicas, at least")
	h.tick(name, 30*time.Second)
	g.Expect(h.replicas(name)).To(Equal(int32(6)))

	// Without pods to read (none ready), hold as well.
	noPods := "empty"
	h.create(noPods, 2, autoscaling(servingv1alpha1.MetricConcurrency, "4", 1, 8))
	h.addPod(noPods, false)
	obj = h.tick(noPods, time.Second)
	active = condition(g, obj, servingv1alpha1.ConditionScalingActive)
	g.Expect(active.Reason).To(Equal(servingv1alpha1.ReasonNoReadyReplicas))
	g.Expect(active.Message).To(ContainSubstring("1 starting"))
	h.tick(noPods, 10*time.Minute)
	g.Expect(h.replicas(noPods)).To(Equal(int32(2)))
}

func TestAutoscalerWindowsSurviveAManagerRestart(t *testing.T) {
	h := newScalerHarness(t)
	h.startManager()
	g := NewWithT(t)
	const name = "restart"
	h.create(name, 4, autoscaling(servingv1alpha1.MetricConcurrency, "4", 1, 8))
	var engines []*fakeEngine
	for range 4 {
		_, e := h.addPod(name, true)
		e.set(1, 0)
		engines = append(engines, e)
	}

	obj := h.tick(name, time.Second)
	opened := h.clock.Now()
	g.Expect(obj.Status.Autoscaling.ScaleDown).To(beWindow(opened, 1))
	h.tick(name, 200*time.Second)

	// The operator restarts 200 s into the 300 s window: a new cache, reconciler and
	// autoscaler, nothing carried over in memory.
	h.restartManager()
	g.Expect(h.started).To(Equal(2))
	obj = h.tick(name, 99*time.Second)
	g.Expect(obj.Status.Autoscaling.ScaleDown).To(beWindow(opened, 1), "the window goes on from where it was")
	g.Expect(h.replicas(name)).To(Equal(int32(4)))
	h.tick(name, time.Second)
	g.Expect(h.replicas(name)).To(Equal(int32(1)), "scaled down 300 s after the window opened, as without the restart")

	// Same for a scale-up window: high load on the remaining replica.
	engines[0].set(4, 4)
	obj = h.tick(name, time.Second)
	opened = h.clock.Now()
	g.Expect(obj.Status.Autoscaling.ScaleUp).To(beWindow(opened, 2))
	h.tick(name, 20*time.Second)
	h.restartManager()
	obj = h.tick(name, 9*time.Second)
	g.Expect(obj.Status.Autoscaling.ScaleUp).To(beWindow(opened, 2))
	g.Expect(h.replicas(name)).To(Equal(int32(1)))
	h.tick(name, time.Second)
	g.Expect(h.replicas(name)).To(Equal(int32(2)))
}

func TestAutoscalerExternalModeLeavesReplicasAlone(t *testing.T) {
	h := newScalerHarness(t)
	h.startManager()
	ctx := context.Background()
	const name = "external"
	obj := h.create(name, 1, &servingv1alpha1.AutoscalingSpec{Enabled: false, MaxReplicas: ptr.To[int32](5)})
	// Like the plan-filled default: spec.replicas unset, filled in from the plan.
	g := NewWithT(t)
	patch := client.MergeFrom(obj.DeepCopy())
	obj.Spec.Replicas = nil
	g.Expect(k8sClient.Patch(ctx, obj, patch)).To(Succeed())
	_, e := h.addPod(name, true)
	e.set(50, 50)

	var planned int32
	eventually(t, func(g Gomega) {
		got := get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		g.Expect(got.Status.Plan).NotTo(BeNil())
		g.Expect(got.Spec.Replicas).NotTo(BeNil())
		planned = got.Status.Plan.Replicas
		g.Expect(*got.Spec.Replicas).To(Equal(planned), "filled in from the plan")
	})

	// An HPA (or KEDA's) writes through the scale subresource.
	hpa := "kube-controller-manager"
	h.scaleTo(name, planned+2, hpa)
	eventually(t, func(g Gomega) {
		g.Expect(*get(g, h.ns, name, &appsv1.Deployment{}).Spec.Replicas).To(Equal(planned + 2))
	})
	// ... and back to the plan's own count.
	h.scaleTo(name, planned, hpa)
	eventually(t, func(g Gomega) {
		g.Expect(*get(g, h.ns, name, &appsv1.Deployment{}).Spec.Replicas).To(Equal(planned))
	})

	// A re-plan to a different replica count must not take spec.replicas back from the HPA,
	// although it holds the value the operator once wrote.
	got := get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{})
	patch = client.MergeFrom(got.DeepCopy())
	got.Spec.Targets.OutputTokensPerSecond = ptr.To(int64(got.Status.Plan.OutputTokensPerSecondPerReplica*float64(planned+3)) + 1)
	g.Expect(k8sClient.Patch(ctx, got, patch)).To(Succeed())
	eventually(t, func(g Gomega) {
		got := get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		g.Expect(got.Status.Plan.Replicas).To(BeNumerically(">", planned))
	})
	g.Consistently(func(g Gomega) {
		got := get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(*got.Spec.Replicas).To(Equal(planned))
		g.Expect(*get(g, h.ns, name, &appsv1.Deployment{}).Spec.Replicas).To(Equal(planned))
	}).WithTimeout(2 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())

	// Nothing of the built-in autoscaler runs: no scrapes, no status, no conditions.
	got = get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{})
	g.Expect(got.Status.Autoscaling).To(BeNil())
	for _, c := range []string{servingv1alpha1.ConditionScalingActive, servingv1alpha1.ConditionScalingLimited, servingv1alpha1.ConditionThroughputDrift} {
		g.Expect(findCondition(got.Status.Conditions, c)).To(BeNil())
	}
	g.Expect(e.hits.Load()).To(BeZero())
	g.Expect(scaleEvents(g, h.ns, name, servingv1alpha1.EventReplicasFromPlan)).To(HaveLen(1), "the operator wrote spec.replicas once, when it was unset")
}

// replicasManager is the field manager that owns spec.replicas, with its subresource.
func replicasManager(obj *servingv1alpha1.MixtralDeployment) string {
	for _, m := range obj.ManagedFields {
		if m.FieldsV1 != nil && ownsSpecReplicas(m) {
			if m.Subresource != "" {
				return m.Manager + "/" + m.Subresource
			}
			return m.Manager
		}
	}
	return ""
}

func TestAutoscalerReportsThroughputDrift(t *testing.T) {
	h := newScalerHarness(t)
	h.startManager()
	g := NewWithT(t)
	const name = "drift"
	h.create(name, 2, autoscaling(servingv1alpha1.MetricOutputTokensPerSecond, "", 1, 8))
	obj := waitPlannedIn(t, h.ns, name)
	plan := obj.Status.Plan
	batch := int(plan.BatchSize)
	predicted := predictAt(g, obj, batch)

	var engines []*fakeEngine
	for range 2 {
		_, e := h.addPod(name, true)
		e.set(float64(batch), 0)
		e.setRate(predicted / 2) // half the predicted throughput
		engines = append(engines, e)
	}
	// The first reading of the counters gives no rate yet.
	obj = h.tick(name, time.Second)
	firstRate := h.clock.Now()
	if obj.Status.Autoscaling.ObservedOutputTokensPerSecondPerReplica == 0 {
		g.Expect(condition(g, obj, servingv1alpha1.ConditionScalingActive).Reason).To(Equal(servingv1alpha1.ReasonMetricsPending))
		g.Expect(condition(g, obj, servingv1alpha1.ConditionThroughputDrift).Status).To(Equal(metav1.ConditionUnknown))
		obj = h.tick(name, time.Second)
	}
	as := obj.Status.Autoscaling
	g.Expect(as.Target.AsApproximateFloat64()).To(BeNumerically("~", plan.OutputTokensPerSecondPerReplica, 0.001),
		"OutputTokensPerSecond's default target is the plan's predicted throughput per replica")
	g.Expect(as.PredictedOutputTokensPerSecondPerReplica).To(BeNumerically("~", predicted, 0.01))
	g.Expect(as.ObservedOutputTokensPerSecondPerReplica).To(BeNumerically("~", predicted/2, predicted/10))
	g.Expect(as.ThroughputRatio).To(BeNumerically("~", 0.5, 0.1))
	// The drift opened at the first pass with a rate: the pass this tick read, or one
	// more at the previous tick's time (passes repeat in real time between ticks).
	g.Expect(as.ThroughputDriftSince.Time).To(BeTemporally(">=", firstRate))
	g.Expect(as.ThroughputDriftSince.Time).To(BeTemporally("<=", h.clock.Now()))
	drift := condition(g, obj, servingv1alpha1.ConditionThroughputDrift)
	g.Expect(drift.Status).To(Equal(metav1.ConditionFalse), "not for the whole drift window yet")

	obj = h.tick(name, DefaultDriftWindow)
	drift = condition(g, obj, servingv1alpha1.ConditionThroughputDrift)
	g.Expect(drift.Status).To(Equal(metav1.ConditionTrue))
	g.Expect(drift.Reason).To(Equal(servingv1alpha1.ReasonThroughputBelowPrediction))
	g.Expect(drift.Message).To(ContainSubstring("calibrate the planner with `moe bench`"))
	eventually(t, func(g Gomega) {
		g.Expect(scaleEvents(g, h.ns, name, servingv1alpha1.EventThroughputDrift)).To(HaveLen(1))
	})

	// Back to the prediction: the condition clears, with an event.
	for _, e := range engines {
		e.setRate(predicted)
	}
	eventually(t, func(g Gomega) {
		obj := h.tick(name, time.Second)
		g.Expect(condition(g, obj, servingv1alpha1.ConditionThroughputDrift).Status).To(Equal(metav1.ConditionFalse))
	})
	obj = get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{})
	g.Expect(obj.Status.Autoscaling.ThroughputDriftSince).To(BeNil())
	g.Expect(obj.Status.Autoscaling.ThroughputRatio).To(BeNumerically("~", 1, 0.3))
	eventually(t, func(g Gomega) {
		g.Expect(scaleEvents(g, h.ns, name, servingv1alpha1.EventThroughputAsPredicted)).To(HaveLen(1))
	})
}

// waitPlannedIn waits for a plan in status.
func waitPlannedIn(t *testing.T, ns, name string) *servingv1alpha1.MixtralDeployment {
	t.Helper()
	var obj *servingv1alpha1.MixtralDeployment
	eventually(t, func(g Gomega) {
		obj = get(g, ns, name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(obj.Status.Plan).NotTo(BeNil())
	})
	return obj
}

func TestAutoscalerTurnedOffClearsItsStatus(t *testing.T) {
	h := newScalerHarness(t)
	h.startManager()
	g := NewWithT(t)
	const name = "off"
	h.create(name, 2, autoscaling(servingv1alpha1.MetricConcurrency, "4", 1, 8))
	_, e := h.addPod(name, true)
	e.set(1, 0)
	h.tick(name, time.Second)

	obj := get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{})
	patch := client.MergeFrom(obj.DeepCopy())
	obj.Spec.Autoscaling.Enabled = false
	g.Expect(k8sClient.Patch(context.Background(), obj, patch)).To(Succeed())
	eventually(t, func(g Gomega) {
		obj := get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{})
		g.Expect(obj.Status.ObservedGeneration).To(Equal(obj.Generation))
		g.Expect(obj.Status.Autoscaling).To(BeNil())
		g.Expect(findCondition(obj.Status.Conditions, servingv1alpha1.ConditionScalingActive)).To(BeNil())
	})
	hits := e.hits.Load()
	h.clock.Step(time.Hour)
	g.Consistently(e.hits.Load).WithTimeout(time.Second).WithPolling(100 * time.Millisecond).Should(Equal(hits))
	g.Expect(h.replicas(name)).To(Equal(int32(2)), "left where the autoscaler had it")
}

// predictAt is the planner's throughput per replica for obj's plan at batch.
func predictAt(g Gomega, obj *servingv1alpha1.MixtralDeployment, batch int) float64 {
	req, err := planRequest(obj.Spec)
	g.Expect(err).NotTo(HaveOccurred())
	q, err := planner.ParseQuantization(obj.Status.Plan.Quantization)
	g.Expect(err).NotTo(HaveOccurred())
	p, err := planner.Predict(req, q, int(obj.Status.Plan.TensorParallelism), 1, batch)
	g.Expect(err).NotTo(HaveOccurred())
	return p.OutputTokensPerSecond
}

// beWindow matches a scaling window opened at since (any time zone) going to replicas.
func beWindow(since time.Time, replicas int32) types.GomegaMatcher {
	return And(
		Not(BeNil()),
		WithTransform(func(w *servingv1alpha1.ScalingWindow) time.Time { return w.Since.Time }, BeTemporally("==", since)),
		WithTransform(func(w *servingv1alpha1.ScalingWindow) int32 { return w.Replicas }, Equal(replicas)),
	)
}
