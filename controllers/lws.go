package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	lwsv1 "sigs.k8s.io/lws/api/leaderworkerset/v1"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// Multi-node replicas run as a LeaderWorkerSet (sigs.k8s.io/lws): one group per replica,
// a leader pod that serves the API and a worker pod for each further node.

// +kubebuilder:rbac:groups=leaderworkerset.x-k8s.io,resources=leaderworkersets,verbs=get;list;watch;create;update;patch;delete

var lwsGroupKind = schema.GroupKind{Group: lwsv1.GroupVersion.Group, Kind: "LeaderWorkerSet"}

// leaderLabels select the leader pods of a LeaderWorkerSet: the pods that serve.
func leaderLabels(name string) map[string]string {
	l := selectorLabels(name)
	l[lwsv1.WorkerIndexLabelKey] = "0"
	return l
}

// servingLabels select the pods that serve a MixtralDeployment's API under its plan in
// effect: all engine pods, or only the leaders of multi-node replicas. The Service, the
// scale subresource's selector and the autoscaler use them.
func servingLabels(obj *servingv1alpha1.MixtralDeployment) map[string]string {
	if p := obj.Status.Plan; p != nil && p.NodesPerReplica > 1 {
		return leaderLabels(obj.Name)
	}
	return selectorLabels(obj.Name)
}

// desiredLeaderWorkerSet is the engine LeaderWorkerSet for w: spec.replicas groups of
// w.nodes() pods, recreated together when one fails (a pipeline misses a stage otherwise),
// rolled one group at a time with one extra group allowed.
func desiredLeaderWorkerSet(w workload) *lwsv1.LeaderWorkerSet {
	leader, worker := w.podTemplateFor(roleLeader), w.podTemplateFor(roleWorker)
	hash := templateHash(leader) + templateHash(worker)
	leader.Labels[templateHashKey], worker.Labels[templateHashKey] = hash, hash
	return &lwsv1.LeaderWorkerSet{
		ObjectMeta: metav1.ObjectMeta{Name: w.obj.Name, Namespace: w.obj.Namespace, Labels: commonLabels(w.obj.Name)},
		Spec: lwsv1.LeaderWorkerSetSpec{
			Replicas: ptr.To(w.replicas()),
			LeaderWorkerTemplate: lwsv1.LeaderWorkerTemplate{
				LeaderTemplate: &leader,
				WorkerTemplate: worker,
				Size:           ptr.To(w.nodes()),
				RestartPolicy:  lwsv1.RecreateGroupOnPodRestart,
			},
			RolloutStrategy: lwsv1.RolloutStrategy{
				Type: lwsv1.RollingUpdateStrategyType,
				RollingUpdateConfiguration: &lwsv1.RollingUpdateConfiguration{
					MaxUnavailable: intstr.FromInt32(0),
					MaxSurge:       intstr.FromInt32(1),
				},
			},
			// Workers start with the leader; they retry until its Ray head answers.
			StartupPolicy: lwsv1.LeaderCreatedStartupPolicy,
		},
	}
}

// syncLeaderWorkerSet owns the replicas, the group's shape and its templates (by hash).
func syncLeaderWorkerSet(existing, desired *lwsv1.LeaderWorkerSet) bool {
	e, d := &existing.Spec, &desired.Spec
	changed := false
	if !equality.Semantic.DeepEqual(e.Replicas, d.Replicas) {
		e.Replicas = d.Replicas
		changed = true
	}
	et, dt := &e.LeaderWorkerTemplate, &d.LeaderWorkerTemplate
	if et.LeaderTemplate == nil || et.LeaderTemplate.Labels[templateHashKey] != dt.LeaderTemplate.Labels[templateHashKey] ||
		!equality.Semantic.DeepEqual(et.Size, dt.Size) || et.RestartPolicy != dt.RestartPolicy {
		et.LeaderTemplate, et.WorkerTemplate, et.Size, et.RestartPolicy = dt.LeaderTemplate, dt.WorkerTemplate, dt.Size, dt.RestartPolicy
		changed = true
	}
	if !equality.Semantic.DeepEqual(e.RolloutStrategy, d.RolloutStrategy) || e.StartupPolicy != d.StartupPolicy {
		e.RolloutStrategy, e.StartupPolicy = d.RolloutStrategy, d.StartupPolicy
		changed = true
	}
	return changed
}

// leaderWorkerSetView presents a LeaderWorkerSet's replicas (groups) in the Deployment
// fields the status phase reads, so that status, scale and the conditions mean the same
// for both workloads: a group is ready when all its pods are.
func leaderWorkerSetView(l *lwsv1.LeaderWorkerSet) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: l.Name, Namespace: l.Namespace, Generation: l.Generation},
		Spec:       appsv1.DeploymentSpec{Replicas: l.Spec.Replicas},
		Status: appsv1.DeploymentStatus{
			// LWS reports no observed generation; its counts are of the latest spec it saw.
			ObservedGeneration: l.Generation,
			Replicas:           l.Status.Replicas,
			ReadyReplicas:      l.Status.ReadyReplicas,
			AvailableReplicas:  l.Status.ReadyReplicas,
			UpdatedReplicas:    l.Status.UpdatedReplicas,
		},
	}
	return d
}

// lwsInstalled reports whether the API server serves LeaderWorkerSets. The answer is
// cached (apiCheck), so single-node objects, which look for a LeaderWorkerSet of an earlier
// plan on every pass, cost no discovery request.
func (r *MixtralDeploymentReconciler) lwsInstalled() (bool, error) {
	return r.lws.served(r, lwsGroupKind, lwsv1.GroupVersion.Version)
}

// reconcileLeaderWorkerSet runs a multi-node plan: the LeaderWorkerSet, once the LWS API
// exists, replacing the Deployment of an earlier single-node plan. Without the API, the
// running engine (if any) stays and the conditions say what to install.
func (r *MixtralDeploymentReconciler) reconcileLeaderWorkerSet(ctx context.Context, s *scope) error {
	installed, err := r.lwsInstalled()
	if err != nil {
		return err
	}
	if !installed {
		s.blockedReason = servingv1alpha1.ReasonLeaderWorkerSetMissing
		s.blocked = fmt.Sprintf("The plan runs each replica on %d nodes, which needs the LeaderWorkerSet API (%s), and this cluster does not serve it. "+
			"Install LWS (https://lws.sigs.k8s.io/docs/installation/); the operator looks again every %s. "+
			"Or choose an accelerator whose node holds the model, so that a replica fits one node.",
			s.workload.nodes(), lwsv1.GroupVersion, r.apiRecheck())
		s.requeue(r.apiRecheck())
		return nil
	}
	l, err := applyChild(ctx, r.Client, s.obj, "LeaderWorkerSet", desiredLeaderWorkerSet(*s.workload), &lwsv1.LeaderWorkerSet{}, syncLeaderWorkerSet)
	if err != nil {
		return err
	}
	s.deployment = leaderWorkerSetView(l)
	if !r.watchesLWS {
		s.requeue(r.apiRecheck())
	}
	return deleteOwned(ctx, r.Client, s.obj, "Deployment", &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: s.obj.Name, Namespace: s.obj.Namespace}})
}

// deleteLeaderWorkerSet removes the LeaderWorkerSet of an earlier multi-node plan, if the
// API exists and there is one.
func (r *MixtralDeploymentReconciler) deleteLeaderWorkerSet(ctx context.Context, s *scope) error {
	if installed, err := r.lwsInstalled(); err != nil || !installed {
		return err
	}
	return deleteOwned(ctx, r.Client, s.obj, "LeaderWorkerSet", &lwsv1.LeaderWorkerSet{ObjectMeta: metav1.ObjectMeta{Name: s.obj.Name, Namespace: s.obj.Namespace}})
}

// deleteOwned deletes obj if it exists and owner controls it; objects of others stay.
func deleteOwned(ctx context.Context, c client.Client, owner client.Object, kind string, obj client.Object) error {
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		if meta.IsNoMatchError(err) {
			return nil // the API is gone, and with it every object of its kind
		}
		return client.IgnoreNotFound(err)
	}
	if !metav1.IsControlledBy(obj, owner) {
		return nil
	}
	if err := c.Delete(ctx, obj, client.Preconditions{UID: ptr.To(obj.GetUID())}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the %s %q of an earlier plan: %w", kind, obj.GetName(), err)
	}
	return nil
}
