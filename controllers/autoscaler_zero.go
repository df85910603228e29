package controllers

import (
	"math"
	"strconv"
	"time"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// heldFreshness is how old the gateway's held-request count may be and still count. The
// gateway rewrites it every heldRefresh (15 s in gateway/kube) while it holds requests, so
// a count this old was left by a gateway that is gone.
const heldFreshness = time.Minute

// heldRequests is the fresh count of requests the gateway holds for obj (the annotations
// AnnotationHeldRequests and AnnotationHeldAt), 0 when there is none, it is malformed or it
// is stale.
func heldRequests(obj *servingv1alpha1.MixtralDeployment, now time.Time) int32 {
	n, err := strconv.ParseInt(obj.Annotations[servingv1alpha1.AnnotationHeldRequests], 10, 32)
	if err != nil || n <= 0 {
		return 0
	}
	at, err := time.Parse(time.RFC3339, obj.Annotations[servingv1alpha1.AnnotationHeldAt])
	if err != nil || now.Sub(at) > heldFreshness || at.Sub(now) > heldFreshness {
		return 0
	}
	return int32(n)
}

// countsRequests reports whether the metric counts requests, so that held requests add to
// it one each.
func countsRequests(m servingv1alpha1.AutoscalingMetric) bool {
	return m == "" || m == servingv1alpha1.MetricConcurrency || m == servingv1alpha1.MetricQueueDepth
}

// wake is the decision at zero replicas with minReplicas 0: nothing held stays at zero
// (Idle); held requests scale up at once (Woken), with no window, since the requests are
// already waiting: to ceil(held/target) replicas when the metric counts requests, else one,
// within 1..max.
func wake(p scalePolicy, held int32, target float64, byTarget bool, now time.Time) decision {
	d := decision{next: windows{last: &now}}
	if held <= 0 {
		d.hold = servingv1alpha1.ReasonIdle
		return d
	}
	want := int32(1)
	if byTarget && target > 0 {
		want = int32(math.Ceil(float64(held)/target - 1e-9))
	}
	want = min(max(want, 1), max(p.max, 1))
	d.replicas, d.recommended, d.hold = want, want, servingv1alpha1.ReasonWoken
	return d
}
