package controllers

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// replicasFromPlan decides whether the operator writes spec.replicas, and the value. The
// scale subresource needs spec.replicas to exist, so the operator fills it in from the plan
// when it is unset, and keeps it following the plan only while it still holds the value the
// operator last wrote (AnnotationPlannedReplicas) and was not last written through the scale
// subresource (scaledThroughSubresource). A value anyone else wrote — kubectl scale, an HPA,
// KEDA, a user's edit — is never overwritten. With the built-in autoscaler
// enabled, the operator only fills in an unset field, clamped to the autoscaler's bounds;
// from then on the autoscaler owns it.
func replicasFromPlan(obj *servingv1alpha1.MixtralDeployment, plan servingv1alpha1.Plan) (int32, bool) {
	want := plan.Replicas
	if a := obj.Spec.Autoscaling; a != nil && a.Enabled {
		if obj.Spec.Replicas != nil {
			return 0, false
		}
		want = max(want, a.Min())
		if a.MaxReplicas != nil {
			want = min(want, *a.MaxReplicas)
		}
		return want, true
	}
	if obj.Spec.Replicas == nil {
		return want, true
	}
	written, ok := obj.Annotations[servingv1alpha1.AnnotationPlannedReplicas]
	if !ok || written != strconv.Itoa(int(*obj.Spec.Replicas)) || *obj.Spec.Replicas == want || scaledThroughSubresource(obj) {
		return 0, false
	}
	return want, true
}

// followsPlan reports whether spec.replicas is the operator's to keep in line with the plan.
func followsPlan(obj *servingv1alpha1.MixtralDeployment) bool {
	if obj.Spec.Replicas == nil || (obj.Spec.Autoscaling != nil && obj.Spec.Autoscaling.Enabled) {
		return false
	}
	return obj.Annotations[servingv1alpha1.AnnotationPlannedReplicas] == strconv.Itoa(int(*obj.Spec.Replicas)) &&
		!scaledThroughSubresource(obj)
}

// reconcileReplicas writes spec.replicas (and the annotation recording it) when
// replicasFromPlan says so. The patch carries the resourceVersion the decision was made on,
// so a concurrent write by an HPA wins and this pass is retried on the new object.
func (r *MixtralDeploymentReconciler) reconcileReplicas(ctx context.Context, s *scope) error {
	if s.workload == nil {
		return nil
	}
	want, write := replicasFromPlan(s.obj, s.workload.plan)
	if !write {
		return nil
	}
	status := s.obj.Status.DeepCopy()
	patch := client.MergeFromWithOptions(s.obj.DeepCopy(), client.MergeFromWithOptimisticLock{})
	s.obj.Spec.Replicas = &want
	if s.obj.Spec.Autoscaling == nil || !s.obj.Spec.Autoscaling.Enabled {
		if s.obj.Annotations == nil {
			s.obj.Annotations = map[string]string{}
		}
		s.obj.Annotations[servingv1alpha1.AnnotationPlannedReplicas] = strconv.Itoa(int(want))
	}
	if err := r.Patch(ctx, s.obj, patch); err != nil {
		return fmt.Errorf("setting spec.replicas from the plan: %w", err)
	}
	// The patch returned the stored object; this pass's status is still to be written, as a
	// diff against the status the pass started from.
	s.obj.Status = *status
	s.before.ObjectMeta = *s.obj.ObjectMeta.DeepCopy()
	s.before.Spec = *s.obj.Spec.DeepCopy()
	if r.Recorder != nil {
		r.Recorder.Eventf(s.obj, nil, corev1.EventTypeNormal, servingv1alpha1.EventReplicasFromPlan, "Scale",
			"Set spec.replicas to %d from the plan", want)
	}
	return nil
}
