package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// ScalingWindow is a stretch of time during which every reading of the load asked to scale
// the same way. The built-in autoscaler keeps it in status, so a restarted operator goes on
// with the window it had, instead of starting over or forgetting it.
type ScalingWindow struct {
	// Since is when the window opened: the previous reading, which did not ask to scale
	// this way (or, with no recent reading, the first one that did).
	Since metav1.Time `json:"since"`
	// Replicas is where a step goes once the window has lasted long enough: the fewest
	// replicas asked for since Since for a scale-up, the most for a scale-down.
	Replicas int32 `json:"replicas"`
}

// Condition types the built-in autoscaler reports, besides ScalingActive and ScalingLimited.
const (
	// ConditionThroughputDrift is True when the engines' observed output throughput per
	// replica has stayed further from the planner's prediction than the operator's drift
	// tolerance for the drift window: the plan's replica count and latencies cannot be
	// trusted. Unknown until the replicas have generated tokens under load.
	ConditionThroughputDrift = "ThroughputDrift"
)

// Reasons of the ScalingActive condition.
const (
	// ReasonValidMetrics: every ready replica's metrics were read.
	ReasonValidMetrics = "ValidMetrics"
	// ReasonPartialMetrics: some ready replicas' metrics could not be read; the autoscaler
	// may scale up on the others' load but does not scale down.
	ReasonPartialMetrics = "PartialMetrics"
	// ReasonScrapeFailed: no ready replica's metrics could be read; the autoscaler holds.
	ReasonScrapeFailed = "ScrapeFailed"
	// ReasonNoReadyReplicas: no replica is ready to be read; the autoscaler holds.
	ReasonNoReadyReplicas = "NoReadyReplicas"
	// ReasonMetricsPending: the metric is a rate and needs a second reading.
	ReasonMetricsPending = "MetricsPending"
	// ReasonNoTarget: the metric's default target comes from the plan, and there is none.
	ReasonNoTarget = "NoTarget"
	// ReasonOutOfBounds: spec.replicas was outside minReplicas..maxReplicas and was brought
	// inside at once, without reading the load.
	ReasonOutOfBounds = "OutOfBounds"
	// ReasonIdle: with minReplicas 0, the replicas have had no request for
	// scaleToZeroAfter (and went to zero), or are at zero with none held.
	ReasonIdle = "Idle"
	// ReasonWoken: at zero replicas, the gateway held requests, and spec.replicas went up.
	ReasonWoken = "Woken"
)

// Reasons of the ScalingLimited condition.
const (
	// ReasonMaxReplicas: the load asks for more replicas than maxReplicas.
	ReasonMaxReplicas = "MaxReplicas"
	// ReasonMinReplicas: the load asks for fewer replicas than minReplicas.
	ReasonMinReplicas = "MinReplicas"
	// ReasonScaleUpRate: the load asks for more than twice the current replicas; one step
	// at most doubles them.
	ReasonScaleUpRate = "ScaleUpRate"
	// ReasonWithinRange: the load's replica count needs no clamping.
	ReasonWithinRange = "WithinRange"
)

// Reasons of the ThroughputDrift condition.
const (
	// ReasonThroughputBelowPrediction: replicas generate fewer tokens per second than predicted.
	ReasonThroughputBelowPrediction = "ThroughputBelowPrediction"
	// ReasonThroughputAbovePrediction: replicas generate more tokens per second than predicted.
	ReasonThroughputAbovePrediction = "ThroughputAbovePrediction"
	// ReasonThroughputAsPredicted: the observed throughput is within the tolerance, or has
	// not been outside it for the whole drift window.
	ReasonThroughputAsPredicted = "ThroughputAsPredicted"
	// ReasonNotEnoughLoad: no replica has generated tokens under load yet.
	ReasonNotEnoughLoad = "NotEnoughLoad"
)

// Event reasons the built-in autoscaler records on a MixtralDeployment.
const (
	// EventScaledUp: the autoscaler raised spec.replicas.
	EventScaledUp = "ScaledUp"
	// EventScaledDown: the autoscaler lowered spec.replicas.
	EventScaledDown = "ScaledDown"
	// EventThroughputDrift: the ThroughputDrift condition turned True.
	EventThroughputDrift = "ThroughputDrift"
	// EventThroughputAsPredicted: the ThroughputDrift condition turned False again.
	EventThroughputAsPredicted = "ThroughputAsPredicted"
)

// Min is minReplicas, 1 (the default) when unset.
func (a *AutoscalingSpec) Min() int32 {
	if a == nil || a.MinReplicas == nil {
		return 1
	}
	return *a.MinReplicas
}
