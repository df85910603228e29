package controllers

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	inferencev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	lwsv1 "sigs.k8s.io/lws/api/leaderworkerset/v1"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/planner"
)

// foreignChildRetry is how often a MixtralDeployment blocked by a foreign child object is
// retried; the foreign object is not watched, so its removal raises no event.
const foreignChildRetry = 30 * time.Second

// conflictRequeue is how soon a pass that lost an optimistic-concurrency race is retried.
const conflictRequeue = time.Second

// MixtralDeploymentReconciler turns a MixtralDeployment into a planned engine Deployment,
// its Service and its PodDisruptionBudget.
type MixtralDeploymentReconciler struct {
	client.Client
	// Recorder records events on MixtralDeployments.
	Recorder events.EventRecorder
	// EngineImage is the moe engine image used on the cpu accelerator when
	// spec.engine.image is empty, and the vllm runtime's model loader image.
	EngineImage string
	// EngineGPUImage is the moe engine image for GPU accelerators when spec.engine.image is
	// empty: the engine with its Vulkan backend and the Vulkan loader; "" means EngineImage.
	EngineGPUImage string
	// VLLMImage is the image of the vllm runtime when spec.engine.image is empty; ""
	// means DefaultVLLMImage.
	VLLMImage string
	// Solve sizes a deployment; nil means planner.Solve. Tests replace it.
	Solve func(planner.Request) (planner.Result, error)
	// Autoscaler runs the autoscaling phase; nil means one with the defaults (pod IPs, the
	// real clock). Tests replace its metrics source and clock.
	Autoscaler *Autoscaler
	// Progress reads the output of running model loader pods (spec.model.cache) for
	// status.modelCache; nil reports no progress between a pull's start and its end. The
	// manager uses PodLogs; tests feed `moe pull` lines.
	Progress PullProgressSource
	// PodReader lists loader pods; nil means Client. The manager passes its uncached API
	// reader, so that no cluster-wide pod informer is started.
	PodReader client.Reader
	// PullPollInterval is how often a running pull's progress is read; 0 means 10s.
	PullPollInterval time.Duration
	// APIRecheck is how often a missing optional API (LeaderWorkerSet, InferencePool) is
	// looked for again, and a multi-node object looked at again while LeaderWorkerSets are
	// unwatched; 0 means DefaultAPIRecheck.
	APIRecheck time.Duration

	// InferencePools renders an InferencePool (Gateway API Inference Extension) per
	// MixtralDeployment when the API is served; EndpointPicker, when set, is each pool's
	// endpoint picker.
	InferencePools bool
	EndpointPicker *EndpointPicker

	// watchesLWS is set by SetupWithManager when the LWS API existed at start, so that
	// LeaderWorkerSet changes trigger passes.
	watchesLWS            bool
	lws, inferencePoolAPI apiCheck
}

// scope is one reconcile pass: the object, a snapshot of its status, and what the phases
// learned for the status phase.
type scope struct {
	obj    *servingv1alpha1.MixtralDeployment
	before *servingv1alpha1.MixtralDeployment

	// planErr is set when the planner refused the spec; planReason is its condition reason.
	planErr    error
	planReason string
	// workload is the plan in effect and its inputs; nil when this pass has no plan, in
	// which case the workload phases leave existing children as they are.
	workload *workload

	// deployment is the engine workload: the Deployment, or a LeaderWorkerSet's view in
	// the same fields (leaderWorkerSetView).
	deployment *appsv1.Deployment
	service    *corev1.Service

	// blocked and blockedReason, when set, are why the plan's workload cannot be created
	// (the LeaderWorkerSet API is missing).
	blocked, blockedReason string

	// engineFailure and engineFailureReason, when set, are why engine pods are down after
	// an error (an API key they cannot read, a model file they refuse).
	engineFailure, engineFailureReason string

	// cache is what the model-cache phase found; nil without spec.model.cache or a plan.
	cache *cacheState
	// requeueAfter, when set, asks for another pass after this long (time-based waits).
	requeueAfter time.Duration
}

// requeue asks for another pass after d at the latest.
func (s *scope) requeue(d time.Duration) {
	if s.requeueAfter == 0 || d < s.requeueAfter {
		s.requeueAfter = d
	}
}

// +kubebuilder:rbac:groups=serving.moe-operator.io,resources=mixtraldeployments,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=serving.moe-operator.io,resources=mixtraldeployments/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=serving.moe-operator.io,resources=mixtraldeployments/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile runs the phases plan → replicas → autoscaling → model cache → workload →
// device → service → PDB → InferencePool, then writes status once.
func (r *MixtralDeploymentReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, err error) {
	obj := &servingv1alpha1.MixtralDeployment{}
	if err := r.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) {
			r.autoscaler().Forget(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !obj.DeletionTimestamp.IsZero() {
		// Children carry owner references; the garbage collector removes them.
		return ctrl.Result{}, nil
	}
	s := &scope{obj: obj, before: obj.DeepCopy()}
	defer func() {
		if apierrors.IsConflict(err) {
			// The object or a child changed under this pass (a stale cache read, or an HPA
			// writing spec.replicas). Retry shortly on the newer version; nothing here is
			// worth reporting as degraded.
			logf.FromContext(ctx).V(1).Info("conflict; retrying on the newer version", "reason", err.Error())
			result, err = ctrl.Result{RequeueAfter: conflictRequeue}, nil
			return
		}
		if statusErr := r.reconcileStatus(ctx, s, err); statusErr != nil {
			err = errors.Join(err, statusErr)
		}
		var foreign *foreignChildError
		if errors.As(err, &foreign) {
			// A user problem, reported in Degraded; retry slowly instead of backing off hot.
			logf.FromContext(ctx).Info("a child object belongs to something else", "reason", foreign.Error())
			result, err = ctrl.Result{RequeueAfter: foreignChildRetry}, nil
		}
	}()

	phases := []func(context.Context, *scope) error{
		r.reconcilePlan,
		r.reconcileReplicas,
		r.reconcileAutoscaling,
		r.reconcileModelCache,
		r.reconcileWorkload,
		r.reconcileDevice,
		r.reconcileService,
		r.reconcilePodDisruptionBudget,
		r.reconcileInferencePool,
	}
	for _, phase := range phases {
		if err := phase(ctx, s); err != nil {
			return ctrl.Result{}, err
		}
	}
	result = ctrl.Result{RequeueAfter: s.requeueAfter}
	if s.requeueAfter > 0 {
		// Time-based passes (the autoscaler's readings, a pull's progress) share the low
		// priority, so when the worker is saturated every object still gets its turn in
		// order, and changes users make go first.
		result.Priority = ptr.To(handler.LowPriority)
	}
	return result, nil
}

// reconcilePlan asks the planner for the cheapest configuration that meets the targets. A
// spec the planner refuses (infeasible targets, an impossible override) is not an error:
// it is reported in the Planned condition and an event, the existing workload keeps its
// previous plan, and nothing is retried until the spec changes.
func (r *MixtralDeploymentReconciler) reconcilePlan(ctx context.Context, s *scope) error {
	solve := r.Solve
	if solve == nil {
		solve = planner.Solve
	}
	req, err := planRequest(s.obj.Spec)
	var res planner.Result
	if err == nil {
		res, err = solve(req)
	}
	switch {
	case errors.Is(err, planner.ErrInfeasible):
		s.planErr, s.planReason = err, servingv1alpha1.ReasonTargetsInfeasible
	case errors.Is(err, errInvalidSpec), errors.Is(err, planner.ErrInvalidRequest),
		errors.Is(err, planner.ErrUnknownModel), errors.Is(err, planner.ErrUnknownAccelerator),
		errors.Is(err, planner.ErrUnknownQuantization):
		s.planErr, s.planReason = err, servingv1alpha1.ReasonInvalidSpec
	case err != nil:
		return fmt.Errorf("planning: %w", err)
	}
	if s.planErr != nil {
		logf.FromContext(ctx).Info("no feasible plan", "reason", s.planErr.Error())
		return nil
	}
	plan := statusPlan(res.Plan)
	s.obj.Status.Plan = plan
	image := r.EngineImage
	switch {
	case engineRuntime(s.obj.Spec) == servingv1alpha1.RuntimeVLLM:
		image = cmp.Or(r.VLLMImage, DefaultVLLMImage)
	case s.obj.Spec.Accelerator.Type != servingv1alpha1.AcceleratorCPU:
		image = cmp.Or(r.EngineGPUImage, r.EngineImage)
	}
	s.workload = &workload{obj: s.obj, plan: *plan, model: req.Model, accelerator: req.Accelerator,
		image: image, moeImage: r.EngineImage}
	return nil
}

func (r *MixtralDeploymentReconciler) reconcileWorkload(ctx context.Context, s *scope) error {
	if s.workload == nil || s.cacheHoldsWorkload() {
		return nil
	}
	if s.workload.nodes() > 1 {
		return r.reconcileLeaderWorkerSet(ctx, s)
	}
	d, err := applyChild(ctx, r.Client, s.obj, "Deployment", desiredDeployment(*s.workload), &appsv1.Deployment{}, syncDeployment)
	if err != nil {
		return err
	}
	s.deployment = d
	return r.deleteLeaderWorkerSet(ctx, s)
}

func (r *MixtralDeploymentReconciler) reconcileService(ctx context.Context, s *scope) error {
	if s.workload == nil {
		return nil
	}
	svc, err := applyChild(ctx, r.Client, s.obj, "Service", desiredService(*s.workload), &corev1.Service{}, syncService)
	if err != nil {
		return err
	}
	s.service = svc
	return nil
}

func (r *MixtralDeploymentReconciler) reconcilePodDisruptionBudget(ctx context.Context, s *scope) error {
	if s.workload == nil {
		return nil
	}
	_, err := applyChild(ctx, r.Client, s.obj, "PodDisruptionBudget", desiredPodDisruptionBudget(*s.workload),
		&policyv1.PodDisruptionBudget{}, syncPodDisruptionBudget)
	return err
}

// reconcileStatus recomputes every owned status field and condition, records plan events,
// and patches status only when it changed.
func (r *MixtralDeploymentReconciler) reconcileStatus(ctx context.Context, s *scope, reconcileErr error) error {
	if s.deployment == nil {
		// No workload phase ran (no plan this pass, or no LWS API): report on whatever runs.
		if err := r.readRunningWorkload(ctx, s); err != nil {
			return err
		}
	}
	if reconcileErr == nil {
		reason, failure, err := r.engineFailures(ctx, s)
		if err != nil {
			return err
		}
		s.engineFailureReason, s.engineFailure = reason, failure
	}
	computeStatus(s, reconcileErr)
	r.recordPlanEvents(s)
	r.recordEngineFailureEvents(s)
	r.recordModelCacheEvents(s)
	if equality.Semantic.DeepEqual(s.before.Status, s.obj.Status) {
		return nil
	}
	if err := r.Status().Patch(ctx, s.obj, client.MergeFrom(s.before)); err != nil {
		return fmt.Errorf("writing status: %w", client.IgnoreNotFound(err))
	}
	return nil
}

// readRunningWorkload sets s.deployment to the engine workload that runs: the
// LeaderWorkerSet of a multi-node plan in effect (when the API exists), else the
// Deployment.
func (r *MixtralDeploymentReconciler) readRunningWorkload(ctx context.Context, s *scope) error {
	key := client.ObjectKeyFromObject(s.obj)
	if p := s.obj.Status.Plan; p != nil && p.NodesPerReplica > 1 && s.blocked == "" {
		l := &lwsv1.LeaderWorkerSet{}
		err := r.Get(ctx, key, l)
		switch {
		case err == nil && isControlledBy(l, s.obj):
			s.deployment = leaderWorkerSetView(l)
			return nil
		case err != nil && client.IgnoreNotFound(err) != nil && !meta.IsNoMatchError(err):
			return fmt.Errorf("reading LeaderWorkerSet %q: %w", s.obj.Name, err)
		}
	}
	d := &appsv1.Deployment{}
	err := r.Get(ctx, key, d)
	switch {
	case err == nil && isControlledBy(d, s.obj):
		s.deployment = d
	case err != nil && client.IgnoreNotFound(err) != nil:
		return fmt.Errorf("reading Deployment %q: %w", s.obj.Name, err)
	}
	return nil
}

// recordPlanEvents records a Normal event when the plan changed and a Warning when the spec
// became unplannable (once per distinct message, not on every pass).
func (r *MixtralDeploymentReconciler) recordPlanEvents(s *scope) {
	if r.Recorder == nil {
		return
	}
	before, after := s.before.Status.Plan, s.obj.Status.Plan
	if s.planErr == nil && after != nil && (before == nil || !equality.Semantic.DeepEqual(*before, *after)) {
		verb := "Planned"
		if before != nil {
			verb = "Re-planned from " + before.Quantization + " TP" + fmt.Sprint(before.TensorParallelism) + " to"
		}
		r.Recorder.Eventf(s.obj, nil, corev1.EventTypeNormal, servingv1alpha1.EventPlanChanged, "Plan",
			"%s %s (%s)", verb, planSummary(after, after.Replicas), after.Reason)
	}
	if s.planErr != nil {
		prev := findCondition(s.before.Status.Conditions, servingv1alpha1.ConditionPlanned)
		cur := findCondition(s.obj.Status.Conditions, servingv1alpha1.ConditionPlanned)
		if cur != nil && (prev == nil || prev.Status != cur.Status || prev.Message != cur.Message) {
			r.Recorder.Eventf(s.obj, nil, corev1.EventTypeWarning, servingv1alpha1.EventPlanInfeasible, "Plan", "%s", cur.Message)
		}
	}
}

// recordEngineFailureEvents records a Warning when the Degraded condition starts reporting
// an engine failure or its message changes.
func (r *MixtralDeploymentReconciler) recordEngineFailureEvents(s *scope) {
	if r.Recorder == nil || s.engineFailure == "" {
		return
	}
	prev := findCondition(s.before.Status.Conditions, servingv1alpha1.ConditionDegraded)
	if prev == nil || prev.Reason != s.engineFailureReason || prev.Message != s.engineFailure {
		r.Recorder.Eventf(s.obj, nil, corev1.EventTypeWarning, s.engineFailureReason, "Serve", "%s", s.engineFailure)
	}
}

// SetupWithManager registers the reconciler. It watches MixtralDeployments (spec changes,
// and the gateway's held-request count, which wakes a model at zero replicas; status
// writes are the reconciler's own) and the children it owns.
//
// LeaderWorkerSets are watched when their API exists at start; otherwise objects that need
// one are looked at every APIRecheck.
func (r *MixtralDeploymentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	installed, err := r.lwsInstalled()
	if err != nil {
		return err
	}
	b := ctrl.NewControllerManagedBy(mgr)
	if installed {
		b = b.Owns(&lwsv1.LeaderWorkerSet{})
		r.watchesLWS = true
	}
	if r.InferencePools {
		served, err := r.inferencePoolAPI.served(r, inferencePoolGroupKind, inferencev1.GroupVersion.Version)
		if err != nil {
			return err
		}
		if served {
			b = b.Owns(&inferencev1.InferencePool{})
		}
	}
	return b.
		For(&servingv1alpha1.MixtralDeployment{}, builder.WithPredicates(predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, heldRequestsChanged))).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&batchv1.Job{}).
		Owns(&corev1.PersistentVolumeClaim{}).
		// Engine pods carry no owner reference to the MixtralDeployment (their ReplicaSet
		// owns them); their label names it. Only new container exits pass.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(enginePodOwner), builder.WithPredicates(engineExitChanged)).
		Named("mixtraldeployment").
		Complete(r)
}

// heldRequestsChanged passes updates that change the gateway's held-request count.
var heldRequestsChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetAnnotations()[servingv1alpha1.AnnotationHeldRequests] !=
			e.ObjectNew.GetAnnotations()[servingv1alpha1.AnnotationHeldRequests]
	},
}
