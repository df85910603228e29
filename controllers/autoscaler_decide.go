package controllers

import (
	"fmt"
	"math"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// scalePolicy is what a scaling decision reads from the spec and the operator's settings,
// defaults resolved.
type scalePolicy struct {
	min, max int32
	// target is the metric's per-replica value to hold.
	target float64
	// tolerance is the fraction around the target within which nothing changes.
	tolerance float64
	// upWindow and downWindow are how long every reading must have asked for more (fewer)
	// replicas before a step up (down).
	upWindow, downWindow time.Duration
	// samplePeriod is the expected time between readings. A window opens at the previous
	// reading when that reading is at most two periods old, and otherwise at the reading
	// that asks to scale, so a gap in the readings never counts toward a window.
	samplePeriod time.Duration
}

// reading is one pass's view of the load.
type reading struct {
	// current is spec.replicas. Every replica it asks for counts as capacity, whether it is
	// ready, still loading its model, or not yet created, so load that replicas already on
	// their way will take does not scale up again.
	current int32
	// total is the metric summed over the ready replicas that were read.
	total float64
	// read and missing count the ready replicas whose metrics came back and those whose
	// did not (a failed scrape, or a rate still waiting for its second reading).
	read, missing int
}

// windows is the autoscaler's state between passes, kept in status.autoscaling.
type windows struct {
	up, down *servingv1alpha1.ScalingWindow
	// last is the previous reading's time.
	last *time.Time
}

// decision is the outcome of one pass.
type decision struct {
	// replicas is the new spec.replicas; equal to the reading's current when holding.
	replicas int32
	// recommended is what this reading alone asks for: within min and max, at most twice
	// current.
	recommended int32
	// limited is the ScalingLimited reason when the load asked for a count outside
	// min..max or beyond one step; empty when it did not.
	limited string
	// hold is the ScalingActive reason when there was no reading to act on; empty
	// otherwise.
	hold string
	// next is the state for the next pass.
	next windows
}

// maxStep is how many times the current replicas one scale-up step may reach.
const maxStep = 2

// decide computes one pass of the built-in autoscaler. With observed the metric's average
// over current replicas (total/current), the load asks for
//
//	desired = ceil(current × observed / target) = ceil(total / target)
//
// unless observed/target is within 1±tolerance, in which case it asks for current. desired is
// clamped to min..max and to at most maxStep×current. A reading with missing replicas never
// asks for fewer than current: the missing load is unknown.
//
// spec.replicas follows only once every reading for upWindow has asked for more (the step
// goes to the fewest asked for in that time), or every reading for downWindow has asked for
// fewer (the step goes to the most asked for). A reading that asks for current, or no
// reading at all (hold), closes both windows. A spec.replicas outside min..max is brought
// inside at once, whatever the load.
func decide(p scalePolicy, w windows, r reading, now time.Time) decision {
	d := decision{replicas: r.current, recommended: r.current}
	d.next.last = &now
	if r.current < p.min || r.current > p.max {
		d.replicas = min(max(r.current, p.min), p.max)
		d.recommended = d.replicas
		d.hold = servingv1alpha1.ReasonOutOfBounds
		return d
	}
	if r.read == 0 || r.current <= 0 {
		d.hold = servingv1alpha1.ReasonScrapeFailed
		return d
	}

	want := float64(r.current)
	observed := r.total / float64(r.current)
	if math.Abs(observed/p.target-1) > p.tolerance {
		// The small epsilon keeps an exact multiple (8 requests at target 4) from rounding up
		// through floating-point noise.
		want = math.Ceil(float64(r.current)*observed/p.target - 1e-9)
	}
	if r.missing > 0 && want < float64(r.current) {
		want = float64(r.current)
	}
	rec := r.current
	switch {
	case want > float64(p.max):
		rec, d.limited = p.max, servingv1alpha1.ReasonMaxReplicas
	case want < float64(p.min):
		rec, d.limited = p.min, servingv1alpha1.ReasonMinReplicas
	default:
		rec = int32(want)
	}
	if step := maxStep * r.current; rec > step {
		rec, d.limited = step, servingv1alpha1.ReasonScaleUpRate
	}
	d.recommended = rec

	opened := now
	if w.last != nil && !w.last.After(now) && now.Sub(*w.last) <= 2*p.samplePeriod {
		opened = *w.last
	}
	switch {
	case rec > r.current:
		up := servingv1alpha1.ScalingWindow{Since: metav1.NewTime(opened), Replicas: rec}
		if w.up != nil && w.up.Replicas > r.current && !w.up.Since.Time.After(now) {
			up = *w.up
			up.Replicas = min(up.Replicas, rec)
		}
		if now.Sub(up.Since.Time) >= p.upWindow {
			d.replicas = up.Replicas
			return d
		}
		d.next.up = &up
	case rec < r.current:
		down := servingv1alpha1.ScalingWindow{Since: metav1.NewTime(opened), Replicas: rec}
		if w.down != nil && w.down.Replicas < r.current && !w.down.Since.Time.After(now) {
			down = *w.down
			down.Replicas = max(down.Replicas, rec)
		}
		if now.Sub(down.Since.Time) >= p.downWindow {
			d.replicas = down.Replicas
			return d
		}
		d.next.down = &down
	}
	return d
}

// waitingFor says, for a condition message, which window is open and how long it has left.
func (d decision) waitingFor(p scalePolicy, now time.Time) string {
	switch {
	case d.next.up != nil:
		return fmt.Sprintf("The load has asked for %d replicas for %s; spec.replicas follows once it has for %s.",
			d.next.up.Replicas, now.Sub(d.next.up.Since.Time).Round(time.Second), p.upWindow)
	case d.next.down != nil:
		return fmt.Sprintf("The load has asked for %d replicas or fewer for %s; spec.replicas follows once it has for %s.",
			d.next.down.Replicas, now.Sub(d.next.down.Since.Time).Round(time.Second), p.downWindow)
	}
	return ""
}
