package controllers

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// computeStatus fills every status field and condition the reconciler owns from what this
// pass learned. It is a pure function of the scope and the pass's error, so it can be
// table-tested; it leaves status.autoscaling to the autoscaler.
func computeStatus(s *scope, reconcileErr error) {
	obj := s.obj
	st := &obj.Status
	st.Model = modelDisplayName(obj.Spec.Model)
	st.Selector = labels.SelectorFromSet(servingLabels(obj)).String()
	if s.service != nil && len(s.service.Spec.Ports) > 0 {
		st.Endpoint = endpoint(obj, s.service.Spec.Ports[0].Port)
	}

	d := s.deployment
	var desired int32
	if d != nil {
		if d.Spec.Replicas != nil {
			desired = *d.Spec.Replicas
		}
		st.Replicas = d.Status.Replicas
		st.ReadyReplicas = d.Status.ReadyReplicas
		st.UpdatedReplicas = d.Status.UpdatedReplicas
	} else {
		st.Replicas, st.ReadyReplicas, st.UpdatedReplicas = 0, 0, 0
	}
	st.GPUs = 0
	if st.Plan != nil && d != nil && obj.Spec.Accelerator.Type != servingv1alpha1.AcceleratorCPU {
		st.GPUs = st.Plan.GPUsPerReplica * desired
	}

	gen := obj.Generation
	set := func(condType string, status metav1.ConditionStatus, reason, message string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: condType, Status: status, Reason: reason, Message: message, ObservedGeneration: gen,
		})
	}

	// Planned.
	switch {
	case s.planErr != nil:
		msg := plannerMessage(s.planErr)
		if st.Plan != nil && d != nil {
			msg += " The running engine keeps its previous plan (" + st.Plan.Quantization + " TP" + fmt.Sprint(st.Plan.TensorParallelism) + ")."
		}
		set(servingv1alpha1.ConditionPlanned, metav1.ConditionFalse, s.planReason, msg)
	case s.workload != nil:
		p := s.workload.plan
		msg := "Planned " + planSummary(&p, s.workload.replicas()) + "."
		if r := obj.Spec.Replicas; r != nil && *r != p.Replicas && !followsPlan(obj) {
			msg += fmt.Sprintf(" spec.replicas (%d) overrides the plan's %d replicas; remove spec.replicas to follow the plan.", *r, p.Replicas)
		}
		set(servingv1alpha1.ConditionPlanned, metav1.ConditionTrue, servingv1alpha1.ReasonPlanFound, msg)
	}

	setModelCacheStatus(s, set)
	holding := s.cacheHoldsWorkload()
	cacheFailed := s.cache != nil && s.cache.report.failed

	// Available.
	switch {
	case d == nil && s.blocked != "":
		set(servingv1alpha1.ConditionAvailable, metav1.ConditionFalse, s.blockedReason, "No engine runs: "+s.blocked)
	case d == nil && holding:
		set(servingv1alpha1.ConditionAvailable, metav1.ConditionFalse, servingv1alpha1.ReasonModelNotCached,
			"No engine runs until the model is in the cache; see the ModelCached condition.")
	case d == nil:
		set(servingv1alpha1.ConditionAvailable, metav1.ConditionFalse, servingv1alpha1.ReasonNotPlanned,
			"No engine runs because there is no feasible plan; see the Planned condition.")
	case desired == 0:
		set(servingv1alpha1.ConditionAvailable, metav1.ConditionFalse, servingv1alpha1.ReasonScaledToZero,
			"spec.replicas is 0; scale up to serve.")
	case d.Status.ReadyReplicas > 0:
		set(servingv1alpha1.ConditionAvailable, metav1.ConditionTrue, servingv1alpha1.ReasonReplicasReady,
			fmt.Sprintf("%d of %d replicas are ready to serve at %s.", d.Status.ReadyReplicas, desired, st.Endpoint))
	default:
		set(servingv1alpha1.ConditionAvailable, metav1.ConditionFalse, servingv1alpha1.ReasonNoReplicasReady,
			fmt.Sprintf("0 of %d replicas are ready; pods are scheduling or loading the model.", desired))
	}

	// Progressing.
	rolling := d != nil && rollingOut(d, desired)
	switch {
	case s.blocked != "":
		set(servingv1alpha1.ConditionProgressing, metav1.ConditionFalse, s.blockedReason, s.blocked)
	case d == nil && holding && !cacheFailed:
		set(servingv1alpha1.ConditionProgressing, metav1.ConditionTrue, servingv1alpha1.ReasonCachingModel,
			"Caching the model before the engine starts. "+s.cache.report.message)
	case d == nil && holding:
		set(servingv1alpha1.ConditionProgressing, metav1.ConditionFalse, servingv1alpha1.ReasonModelNotCached,
			"No engine Deployment exists because the model could not be cached; see the ModelCached condition.")
	case d == nil:
		set(servingv1alpha1.ConditionProgressing, metav1.ConditionFalse, servingv1alpha1.ReasonNotPlanned,
			"No engine Deployment exists.")
	case rolling:
		set(servingv1alpha1.ConditionProgressing, metav1.ConditionTrue, servingv1alpha1.ReasonRollingOut,
			fmt.Sprintf("Rolling out: %d of %d replicas updated, %d ready.", d.Status.UpdatedReplicas, desired, d.Status.ReadyReplicas))
	default:
		set(servingv1alpha1.ConditionProgressing, metav1.ConditionFalse, servingv1alpha1.ReasonRolloutComplete,
			fmt.Sprintf("All %d replicas run the current pod template.", desired))
	}

	// Degraded.
	var foreign *foreignChildError
	stalled := deploymentCondition(d, appsv1.DeploymentProgressing)
	failure := deploymentCondition(d, appsv1.DeploymentReplicaFailure)
	switch {
	case errors.As(reconcileErr, &foreign):
		set(servingv1alpha1.ConditionDegraded, metav1.ConditionTrue, servingv1alpha1.ReasonChildConflict, sentence(foreign.Error()))
	case reconcileErr != nil:
		set(servingv1alpha1.ConditionDegraded, metav1.ConditionTrue, servingv1alpha1.ReasonReconcileError,
			sentence(reconcileErr.Error())+" The operator retries.")
	case s.blocked != "":
		set(servingv1alpha1.ConditionDegraded, metav1.ConditionTrue, s.blockedReason, s.blocked)
	case s.engineFailure != "":
		set(servingv1alpha1.ConditionDegraded, metav1.ConditionTrue, s.engineFailureReason, s.engineFailure)
	case cacheFailed:
		set(servingv1alpha1.ConditionDegraded, metav1.ConditionTrue, servingv1alpha1.ReasonModelCacheFailed, s.cache.report.message)
	case stalled != nil && stalled.Status == corev1.ConditionFalse && stalled.Reason == "ProgressDeadlineExceeded":
		set(servingv1alpha1.ConditionDegraded, metav1.ConditionTrue, servingv1alpha1.ReasonRolloutStalled,
			"The rollout exceeded its progress deadline: "+stalled.Message+" Check the engine pods' events and logs (scheduling, image pulls, model loading).")
	case failure != nil && failure.Status == corev1.ConditionTrue:
		set(servingv1alpha1.ConditionDegraded, metav1.ConditionTrue, servingv1alpha1.ReasonReplicaFailure,
			"The Deployment cannot create engine pods: "+failure.Message)
	case d != nil && !rolling && d.Status.ReadyReplicas < desired:
		set(servingv1alpha1.ConditionDegraded, metav1.ConditionTrue, servingv1alpha1.ReasonReplicasUnavailable,
			fmt.Sprintf("Only %d of %d replicas are ready.", d.Status.ReadyReplicas, desired))
	default:
		set(servingv1alpha1.ConditionDegraded, metav1.ConditionFalse, servingv1alpha1.ReasonAsExpected, "Nothing is degraded.")
	}

	if reconcileErr == nil {
		st.ObservedGeneration = gen
	}
}

// rollingOut reports whether the Deployment is still bringing its replicas to the current
// template: the Deployment controller has not seen the latest spec, pods of an old template
// remain, or new pods are not yet available while the rollout is under way. A replica lost
// after a completed rollout (the Deployment reports NewReplicaSetAvailable) is not a
// rollout; it shows as Degraded instead.
func rollingOut(d *appsv1.Deployment, desired int32) bool {
	if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas < desired || d.Status.Replicas > desired {
		return true
	}
	if d.Status.AvailableReplicas >= desired {
		return false
	}
	c := deploymentCondition(d, appsv1.DeploymentProgressing)
	return c == nil || (c.Status == corev1.ConditionTrue && c.Reason != "NewReplicaSetAvailable")
}

func deploymentCondition(d *appsv1.Deployment, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	if d == nil {
		return nil
	}
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == t {
			return &d.Status.Conditions[i]
		}
	}
	return nil
}

func findCondition(conds []metav1.Condition, t string) *metav1.Condition {
	return meta.FindStatusCondition(conds, t)
}

func isControlledBy(obj, owner client.Object) bool {
	return metav1.IsControlledBy(obj, owner)
}

// sentence capitalizes msg and ends it with a period.
func sentence(msg string) string {
	if msg == "" {
		return msg
	}
	r, size := utf8.DecodeRuneInString(msg)
	msg = string(unicode.ToUpper(r)) + msg[size:]
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg
}
