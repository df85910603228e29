package controllers

import (
	"context"
	"fmt"
	"iter"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// The operator holds no permission on Secrets (it never reads the key), so it learns that
// the Secret or key behind spec.engine.apiKeySecretRef is missing from the engine pods: the
// optional volume leaves the file out, `moe serve --api-key-file` exits with an error that
// names the path, and the container's termination message (FallbackToLogsOnError) carries
// it. apiKeyFailure finds that message; a watch on the engine pods' container states
// brings the reconciler back when one appears.

// apiKeyFailure returns the Degraded message for an engine pod of the current API key
// reference that exited because it could not read the key, or "" when none did.
func apiKeyFailure(obj *servingv1alpha1.MixtralDeployment, ref *servingv1alpha1.APIKeySecretReference, pods []corev1.Pod) string {
	if ref == nil {
		return ""
	}
	for pod, t := range failedExits(pods) {
		if !mountsAPIKey(pod, ref) || !strings.Contains(t.Message, apiKeyPath()) {
			continue
		}
		return fmt.Sprintf("Engine pod %s cannot read its API key (%s). Put the key into key %q of Secret %q in namespace %s "+
			"(kubectl create secret generic %s -n %s --from-literal=%s=YOUR-KEY), or point engine.apiKeySecretRef at a Secret that has it; "+
			"the restarting pods read it once the kubelet has updated their volume.",
			pod.Name, lastLine(strings.TrimSpace(t.Message)), ref.Key, ref.Name, obj.Namespace, ref.Name, obj.Namespace, ref.Key)
	}
	return ""
}

// failedExits yields each engine pod whose engine container is down (not running, not
// ready) after exiting with an error, with that exit: the current state's, then the last.
func failedExits(pods []corev1.Pod) iter.Seq2[*corev1.Pod, *corev1.ContainerStateTerminated] {
	return func(yield func(*corev1.Pod, *corev1.ContainerStateTerminated) bool) {
		for i := range pods {
			pod := &pods[i]
			for _, c := range pod.Status.ContainerStatuses {
				if c.Name != engineContainerName || engineUp(c) {
					continue
				}
				for _, t := range []*corev1.ContainerStateTerminated{c.State.Terminated, c.LastTerminationState.Terminated} {
					if t != nil && t.ExitCode != 0 && !yield(pod, t) {
						return
					}
				}
			}
		}
	}
}

// mountsAPIKey reports whether pod mounts the Secret key ref names (so pods of an earlier
// reference, still rolling out, are not reported against the current one).
func mountsAPIKey(pod *corev1.Pod, ref *servingv1alpha1.APIKeySecretReference) bool {
	for _, v := range pod.Spec.Volumes {
		if v.Name != apiKeyVolumeName || v.Secret == nil || v.Secret.SecretName != ref.Name {
			continue
		}
		for _, item := range v.Secret.Items {
			if item.Key == ref.Key {
				return true
			}
		}
	}
	return false
}

// engineUp reports whether the engine container runs now (loading or serving): an exit
// before that is history, not a failure to report, once the container is back.
func engineUp(c corev1.ContainerStatus) bool { return c.Ready || c.State.Running != nil }

// engineExitFailure returns the Degraded message for an engine pod whose engine container
// is down after exiting with an error (a model file it refuses, an out-of-memory kill, a
// bad flag), with the last line of what it said, or "" when none is.
func engineExitFailure(pods []corev1.Pod) string {
	for pod, t := range failedExits(pods) {
		if pod.DeletionTimestamp != nil {
			continue
		}
		why := lastLine(strings.TrimSpace(t.Message))
		if why == "" {
			why = t.Reason
		}
		return fmt.Sprintf("Engine pod %s exited with code %d: %s. The kubelet restarts it with a growing back-off; once the cause is fixed it recovers by itself.",
			pod.Name, t.ExitCode, strings.TrimSuffix(why, "."))
	}
	return ""
}

// engineFailures lists the engine pods of s's object and returns the Degraded reason and
// message for engine containers that are down after an error: APIKeyUnavailable when the
// key could not be read, else EngineFailing; "" when none are. Engine pods are in the
// manager's cache (the autoscaler reads them too).
func (r *MixtralDeploymentReconciler) engineFailures(ctx context.Context, s *scope) (reason, message string, err error) {
	if s.workload == nil {
		return "", "", nil
	}
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(s.obj.Namespace), client.MatchingLabels(selectorLabels(s.obj.Name))); err != nil {
		return "", "", fmt.Errorf("listing engine pods: %w", err)
	}
	if msg := apiKeyFailure(s.obj, s.workload.apiKeyRef(), pods.Items); msg != "" {
		return servingv1alpha1.ReasonAPIKeyUnavailable, msg, nil
	}
	if msg := engineExitFailure(pods.Items); msg != "" {
		return servingv1alpha1.ReasonEngineFailing, msg, nil
	}
	return "", "", nil
}

// enginePodOwner maps an engine pod to its MixtralDeployment.
func enginePodOwner(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[servingv1alpha1.LabelMixtralDeployment]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// engineExitChanged passes engine pod updates whose engine container terminated anew (a
// new termination message or restart), and nothing else: readiness and the autoscaler's
// concerns reach the reconciler through the Deployment.
var engineExitChanged = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return engineExit(e.ObjectOld) != engineExit(e.ObjectNew)
	},
}

// engineExit summarizes the engine container's terminations of a pod.
func engineExit(o client.Object) string {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return ""
	}
	for _, c := range pod.Status.ContainerStatuses {
		if c.Name != engineContainerName {
			continue
		}
		out := fmt.Sprint(c.RestartCount)
		for _, t := range []*corev1.ContainerStateTerminated{c.State.Terminated, c.LastTerminationState.Terminated} {
			if t != nil {
				out += fmt.Sprintf("|%d:%s", t.ExitCode, t.Message)
			}
		}
		return out
	}
	return ""
}
