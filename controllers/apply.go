package controllers

import (
	"context"
	"fmt"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// foreignChildError reports a child object that exists under the operator's chosen name but is
// not controlled by the MixtralDeployment. The operator never adopts or overwrites it.
type foreignChildError struct {
	kind, name string
	// hint, when set, replaces "delete or rename it" with what else the user can do.
	hint string
}

func (e *foreignChildError) Error() string {
	what := "delete or rename it"
	if e.hint != "" {
		what = e.hint
	}
	return fmt.Sprintf("a %s named %q already exists and is not owned by this MixtralDeployment; %s", e.kind, e.name, what)
}

// syncFunc copies the fields the operator owns from desired into existing and reports
// whether anything changed. Fields the API server or other controllers default or own are
// left alone, so a second pass over an unchanged spec writes nothing.
type syncFunc[T client.Object] func(existing, desired T) bool

// applyChild creates desired when it does not exist, or updates the existing object when
// sync reports a change. desired must have its name and namespace set; the owner becomes
// its controller. It returns the object as stored.
func applyChild[T client.Object](ctx context.Context, c client.Client, owner client.Object, kind string, desired, existing T, sync syncFunc[T]) (T, error) {
	if err := controllerutil.SetControllerReference(owner, desired, c.Scheme()); err != nil {
		return existing, fmt.Errorf("setting the owner of %s %q: %w", kind, desired.GetName(), err)
	}
	err := c.Get(ctx, client.ObjectKeyFromObject(desired), existing)
	switch {
	case apierrors.IsNotFound(err):
		if err := c.Create(ctx, desired); err != nil {
			return existing, fmt.Errorf("creating %s %q: %w", kind, desired.GetName(), err)
		}
		return desired, nil
	case err != nil:
		return existing, fmt.Errorf("reading %s %q: %w", kind, desired.GetName(), err)
	}
	if !metav1.IsControlledBy(existing, owner) {
		return existing, &foreignChildError{kind: kind, name: desired.GetName()}
	}
	changed := syncLabels(existing, desired)
	if sync(existing, desired) {
		changed = true
	}
	if !changed {
		return existing, nil
	}
	if err := c.Update(ctx, existing); err != nil {
		return existing, fmt.Errorf("updating %s %q: %w", kind, desired.GetName(), err)
	}
	return existing, nil
}

// syncLabels adds or corrects the desired labels on existing, keeping any others.
func syncLabels(existing, desired client.Object) bool {
	labels := existing.GetLabels()
	changed := false
	for k, v := range desired.GetLabels() {
		if cur, ok := labels[k]; !ok || cur != v {
			if labels == nil {
				labels = map[string]string{}
			}
			labels[k] = v
			changed = true
		}
	}
	if changed {
		existing.SetLabels(labels)
	}
	return changed
}

// syncDeployment owns the replica count, the rollout settings and the pod template. The
// template is compared by its hash label, not field by field, so API-server defaults in
// the stored template never look like drift; a different hash replaces the template and
// rolls the pods. The selector is immutable and set only on create.
func syncDeployment(existing, desired *appsv1.Deployment) bool {
	changed := false
	if !equality.Semantic.DeepEqual(existing.Spec.Replicas, desired.Spec.Replicas) {
		existing.Spec.Replicas = desired.Spec.Replicas
		changed = true
	}
	if !equality.Semantic.DeepEqual(existing.Spec.Strategy, desired.Spec.Strategy) {
		existing.Spec.Strategy = desired.Spec.Strategy
		changed = true
	}
	if !equality.Semantic.DeepEqual(existing.Spec.RevisionHistoryLimit, desired.Spec.RevisionHistoryLimit) {
		existing.Spec.RevisionHistoryLimit = desired.Spec.RevisionHistoryLimit
		changed = true
	}
	if !equality.Semantic.DeepEqual(existing.Spec.ProgressDeadlineSeconds, desired.Spec.ProgressDeadlineSeconds) {
		existing.Spec.ProgressDeadlineSeconds = desired.Spec.ProgressDeadlineSeconds
		changed = true
	}
	if existing.Spec.Template.Labels[templateHashKey] != desired.Spec.Template.Labels[templateHashKey] {
		existing.Spec.Template = desired.Spec.Template
		changed = true
	}
	return changed
}

// syncService owns the type, selector, ports and the operator's annotations (others are
// kept); the cluster IP and other allocated fields stay as the API server set them.
func syncService(existing, desired *corev1.Service) bool {
	changed := false
	for k, v := range desired.Annotations {
		if existing.Annotations[k] != v {
			if existing.Annotations == nil {
				existing.Annotations = map[string]string{}
			}
			existing.Annotations[k] = v
			changed = true
		}
	}
	if existing.Spec.Type != desired.Spec.Type {
		existing.Spec.Type = desired.Spec.Type
		changed = true
	}
	if !maps.Equal(existing.Spec.Selector, desired.Spec.Selector) {
		existing.Spec.Selector = desired.Spec.Selector
		changed = true
	}
	if !equality.Semantic.DeepEqual(existing.Spec.Ports, desired.Spec.Ports) {
		existing.Spec.Ports = desired.Spec.Ports
		changed = true
	}
	return changed
}

// syncPodDisruptionBudget owns the budget and its selector.
func syncPodDisruptionBudget(existing, desired *policyv1.PodDisruptionBudget) bool {
	if equality.Semantic.DeepEqual(existing.Spec, desired.Spec) {
		return false
	}
	existing.Spec = desired.Spec
	return true
}
