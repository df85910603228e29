//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/controllers"
)

// testAutoscaling turns the built-in autoscaler on for the running MixtralDeployment (one
// ready replica), drives sustained load through its Service, and requires that the operator,
// reading the engine pods' /metrics at their pod IPs, adds a replica that becomes ready; then
// that the replicas return to one once the load stops and the scale-down window has passed.
// It leaves autoscaling off and one replica, for the rollout step that follows.
func testAutoscaling(t *testing.T, ctx context.Context, mxd *servingv1alpha1.MixtralDeployment) {
	const (
		clients    = 6
		downWindow = 30 * time.Second
	)
	key := client.ObjectKeyFromObject(mxd)
	var cur servingv1alpha1.MixtralDeployment
	if err := k8s.Get(ctx, key, &cur); err != nil {
		t.Fatal(err)
	}
	patch := client.MergeFrom(cur.DeepCopy())
	target := resource.MustParse("2")
	cur.Spec.Autoscaling = &servingv1alpha1.AutoscalingSpec{
		Enabled: true, MinReplicas: ptr[int32](1), MaxReplicas: ptr[int32](2),
		// Six clients keep about six requests in flight: three times the target of one
		// replica, so the load asks for three and maxReplicas holds it at two.
		Metric: servingv1alpha1.MetricConcurrency, Target: &target,
		ScaleDownWindow: &metav1.Duration{Duration: downWindow},
	}
	if err := k8s.Patch(ctx, &cur, patch); err != nil {
		t.Fatal(err)
	}
	// The autoscaler reads the idle replica first.
	eventually(t, time.Minute, "the autoscaler reads the replica", func() error {
		got := getMXD(t, ctx, key)
		if got.Status.Autoscaling == nil || got.Status.Autoscaling.ScrapedReplicas < 1 {
			return fmt.Errorf("status.autoscaling: %+v; conditions: %v", got.Status.Autoscaling, got.Status.Conditions)
		}
		if c := meta.FindStatusCondition(got.Status.Conditions, servingv1alpha1.ConditionScalingActive); c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Errorf("ScalingActive: %+v", c)
		}
		if *got.Spec.Replicas != 1 {
			return stop(fmt.Errorf("spec.replicas is %d before any load", *got.Spec.Replicas))
		}
		return nil
	})

	ec := newClient(t, ctx, mxd)
	l := startLoad(ctx, ec, mxd.Spec.Model.ServedName, clients)
	loaded := time.Now()
	eventually(t, 2*time.Minute, "the load adds a replica", func() error {
		if n := *getMXD(t, ctx, key).Spec.Replicas; n != 2 {
			return fmt.Errorf("spec.replicas is %d", n)
		}
		return nil
	})
	reaction := time.Since(loaded)
	got := getMXD(t, ctx, key)
	eventually(t, 5*time.Minute, "the new replica becomes ready", func() error {
		var d appsv1.Deployment
		if err := k8s.Get(ctx, key, &d); err != nil {
			return err
		}
		if d.Status.ReadyReplicas != 2 {
			return fmt.Errorf("%d of 2 ready; pods: %s", d.Status.ReadyReplicas, describePods(t, ctx, mxd))
		}
		return nil
	})
	ready := time.Since(loaded)
	ok, failures := l.stop()
	unloaded := time.Now()
	as := got.Status.Autoscaling
	t.Logf("under %d clients' load through the %s, spec.replicas went from 1 to 2 after %s and the second replica was ready after %s; "+
		"%d requests succeeded, %d failed; at the decision: %s per replica read from %d, target %s",
		clients, ec.Route, reaction.Round(100*time.Millisecond), ready.Round(time.Second), ok, len(failures),
		as.ObservedValue, as.ScrapedReplicas, as.Target)
	if len(failures) > 0 {
		t.Errorf("%d requests failed while scaling up, first: %v", len(failures), failures[:min(len(failures), 5)])
	}
	// The default scale-up window is 30 s, and the pass that closes it runs when it ends;
	// the margin covers the time the load takes to build up and the poll.
	if reaction > 45*time.Second {
		t.Errorf("the replica came %s after the load started; want within the 30 s scale-up window", reaction.Round(time.Second))
	}

	eventually(t, 3*time.Minute, "the replicas return to one after the load", func() error {
		got := getMXD(t, ctx, key)
		if n := *got.Spec.Replicas; n != 1 {
			return fmt.Errorf("spec.replicas is %d; status.autoscaling: recommended %d, scale-down window %+v",
				n, got.Status.Autoscaling.RecommendedReplicas, got.Status.Autoscaling.ScaleDown)
		}
		return nil
	})
	shrank := time.Since(unloaded)
	t.Logf("spec.replicas returned to 1 %s after the load stopped (scale-down window %s)", shrank.Round(time.Second), downWindow)
	// The window opens at the last reading that still saw the load (docs/autoscaling.md),
	// which the chart's operator takes up to one sync period before the load stops.
	if earliest := downWindow - controllers.DefaultAutoscalerSyncPeriod; shrank < earliest {
		t.Errorf("scaled down %s after the load stopped: the %s window cannot have passed (it opens at most %s before the load stops)",
			shrank.Round(time.Second), downWindow, controllers.DefaultAutoscalerSyncPeriod)
	}
	var events eventsv1.EventList
	if err := k8s.List(ctx, &events, client.InNamespace(mxd.Namespace)); err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range events.Items {
		if e.Regarding.Kind == "MixtralDeployment" && e.Regarding.Name == mxd.Name {
			reasons = append(reasons, e.Reason)
		}
	}
	for _, want := range []string{servingv1alpha1.EventScaledUp, servingv1alpha1.EventScaledDown} {
		if !slices.Contains(reasons, want) {
			t.Errorf("no %s event; events: %v", want, reasons)
		}
	}

	// Off again: the status goes, spec.replicas stays where the autoscaler left it (one).
	cur = *getMXD(t, ctx, key)
	patch = client.MergeFrom(cur.DeepCopy())
	cur.Spec.Autoscaling.Enabled = false
	if err := k8s.Patch(ctx, &cur, patch); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "autoscaling off", func() error {
		got := getMXD(t, ctx, key)
		if got.Status.Autoscaling != nil || got.Status.ObservedGeneration < got.Generation {
			return fmt.Errorf("status.autoscaling %+v at generation %d/%d", got.Status.Autoscaling, got.Status.ObservedGeneration, got.Generation)
		}
		if *got.Spec.Replicas != 1 {
			return stop(fmt.Errorf("spec.replicas is %d", *got.Spec.Replicas))
		}
		return nil
	})
	waitAvailable(t, ctx, mxd, 2*time.Minute)
}

func getMXD(t *testing.T, ctx context.Context, key client.ObjectKey) *servingv1alpha1.MixtralDeployment {
	t.Helper()
	var got servingv1alpha1.MixtralDeployment
	if err := k8s.Get(ctx, key, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}
