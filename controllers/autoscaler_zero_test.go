package controllers

import (
	"context"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

func TestHeldRequestsIgnoresStaleAndMalformedCounts(t *testing.T) {
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	held := func(n, at string) *servingv1alpha1.MixtralDeployment {
		return &servingv1alpha1.MixtralDeployment{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
			servingv1alpha1.AnnotationHeldRequests: n, servingv1alpha1.AnnotationHeldAt: at}}}
	}
	for _, tt := range []struct {
		name string
		obj  *servingv1alpha1.MixtralDeployment
		want int32
	}{
		{"fresh", held("7", now.Add(-30*time.Second).Format(time.RFC3339)), 7},
		{"stale: the gateway that wrote it is gone", held("7", now.Add(-61*time.Second).Format(time.RFC3339)), 0},
		{"from a clock far ahead", held("7", now.Add(2*time.Minute).Format(time.RFC3339)), 0},
		{"no time", held("7", ""), 0},
		{"not a number", held("seven", now.Format(time.RFC3339)), 0},
		{"negative", held("-2", now.Format(time.RFC3339)), 0},
		{"none", &servingv1alpha1.MixtralDeployment{}, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			NewWithT(t).Expect(heldRequests(tt.obj, now)).To(Equal(tt.want))
		})
	}
}

func TestWakeScalesHeldRequestsByTheTarget(t *testing.T) {
	g := NewWithT(t)
	now := time.Now()
	p := scalePolicy{min: 1, max: 3}
	g.Expect(wake(p, 0, 4, true, now).replicas).To(Equal(int32(0)), "nothing held stays at zero")
	g.Expect(wake(p, 0, 4, true, now).hold).To(Equal(servingv1alpha1.ReasonIdle))
	g.Expect(wake(p, 1, 4, true, now).replicas).To(Equal(int32(1)))
	g.Expect(wake(p, 8, 4, true, now).replicas).To(Equal(int32(2)), "8 held at 4 per replica")
	g.Expect(wake(p, 9, 4, true, now).replicas).To(Equal(int32(3)))
	g.Expect(wake(p, 100, 4, true, now).replicas).To(Equal(int32(3)), "within maxReplicas")
	g.Expect(wake(p, 100, 0.8, false, now).replicas).To(Equal(int32(1)), "a metric that does not count requests wakes one")
	g.Expect(wake(p, 8, 4, true, now).hold).To(Equal(servingv1alpha1.ReasonWoken))
}

func TestHeldRequestsChangeTriggersAReconcile(t *testing.T) {
	g := NewWithT(t)
	obj := func(held string) *servingv1alpha1.MixtralDeployment {
		return &servingv1alpha1.MixtralDeployment{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
			servingv1alpha1.AnnotationHeldRequests: held, servingv1alpha1.AnnotationHeldAt: time.Now().String()}}}
	}
	g.Expect(heldRequestsChanged.Update(event.UpdateEvent{ObjectOld: obj("0"), ObjectNew: obj("3")})).To(BeTrue())
	g.Expect(heldRequestsChanged.Update(event.UpdateEvent{ObjectOld: obj("3"), ObjectNew: obj("3")})).To(BeFalse(),
		"the gateway's heartbeat (a new held-at) alone does not")
}

// setHeld writes the gateway's annotations, as `moe gateway --kubernetes` does.
func (h *scalerHarness) setHeld(name string, n int, at time.Time) {
	h.t.Helper()
	obj := &servingv1alpha1.MixtralDeployment{ObjectMeta: metav1.ObjectMeta{Namespace: h.ns, Name: name}}
	patch := []byte(`{"metadata":{"annotations":{"` + servingv1alpha1.AnnotationHeldRequests + `":"` + strconv.Itoa(n) +
		`","` + servingv1alpha1.AnnotationHeldAt + `":"` + at.UTC().Format(time.RFC3339) + `"}}}`)
	if err := k8sClient.Patch(context.Background(), obj, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		h.t.Fatal(err)
	}
}

func TestAutoscalerScalesToZeroWhenIdleAndWakesOnHeldRequests(t *testing.T) {
	h := newScalerHarness(t)
	h.startManager()
	g := NewWithT(t)
	const name = "zero"
	h.create(name, 1, autoscaling(servingv1alpha1.MetricConcurrency, "4", 0, 4))
	pod, e := h.addPod(name, true)
	e.set(1, 0)
	obj := h.tick(name, time.Second)
	g.Expect(obj.Status.Autoscaling.LastRequestTime).NotTo(BeNil())

	// The last request ends; 8 more minutes are not yet scaleToZeroAfter (10m by default).
	h.tick(name, time.Minute, func() { e.set(0, 0) })
	h.tick(name, 8*time.Minute)
	g.Expect(h.replicas(name)).To(Equal(int32(1)), "idle for at most 9m")
	// A token counted between two readings is a request too.
	e.setRate(5)
	h.tick(name, time.Second, func() {})
	e.setRate(0)
	h.tick(name, time.Second, func() {})
	busy := get(g, h.ns, name, &servingv1alpha1.MixtralDeployment{}).Status.Autoscaling.LastRequestTime.Time
	g.Expect(busy).To(BeTemporally(">=", h.clock.Now().Add(-2*time.Second).Truncate(time.Second)))
	h.tick(name, 9*time.Minute)
	g.Expect(h.replicas(name)).To(Equal(int32(1)), "the counter moved less than 10m ago")

	h.tick(name, 2*time.Minute)
	g.Expect(h.replicas(name)).To(Equal(int32(0)), "idle for 10m")
	eventually(t, func(g Gomega) {
		g.Expect(scaleEvents(g, h.ns, name, servingv1alpha1.EventScaledDown)).To(ContainElement(
			"Scaled down from 1 to 0 replicas: no request for scaleToZeroAfter."))
	})
	// The Deployment's pod goes.
	g.Expect(k8sClient.Delete(context.Background(), pod, client.GracePeriodSeconds(0))).To(Succeed())
	obj = h.tick(name, time.Minute)
	active := condition(g, obj, servingv1alpha1.ConditionScalingActive)
	g.Expect(active.Reason).To(Equal(servingv1alpha1.ReasonIdle))
	g.Expect(active.Message).To(ContainSubstring("A request through moe gateway wakes the model"))
	g.Expect(h.replicas(name)).To(Equal(int32(0)))

	// A count left by a gateway that died long ago wakes nothing.
	h.setHeld(name, 5, h.clock.Now().Add(-5*time.Minute))
	h.tick(name, time.Second)
	h.tick(name, time.Second)
	g.Expect(h.replicas(name)).To(Equal(int32(0)))

	// The gateway holds 6 requests: at 4 per replica, two replicas, at once. (Set as a
	// change of the tick, so that the pass returned has read it.)
	obj = h.tick(name, time.Second, func() { h.setHeld(name, 6, h.clock.Now()) })
	g.Expect(h.replicas(name)).To(Equal(int32(2)))
	g.Expect(obj.Status.Autoscaling.HeldRequests).To(Equal(int32(6)))
	eventually(t, func(g Gomega) {
		g.Expect(scaleEvents(g, h.ns, name, servingv1alpha1.EventScaledUp)).To(ContainElement(
			"Scaled up from 0 to 2 replicas: the gateway holds requests for the model."))
	})

	// While the pods start, the model is not idle, however long they take.
	h.addPod(name, false)
	h.addPod(name, false)
	h.setHeld(name, 0, h.clock.Now())
	h.tick(name, 11*time.Minute)
	g.Expect(h.replicas(name)).To(Equal(int32(2)))
}

func TestMinReplicasOneNeverScalesToZero(t *testing.T) {
	h := newScalerHarness(t)
	h.startManager()
	g := NewWithT(t)
	const name = "floor"
	h.create(name, 1, autoscaling(servingv1alpha1.MetricConcurrency, "4", 1, 4))
	h.addPod(name, true)
	h.tick(name, time.Second)
	h.tick(name, time.Hour)
	g.Expect(h.replicas(name)).To(Equal(int32(1)))
}
