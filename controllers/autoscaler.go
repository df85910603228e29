package controllers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/planner"
)

// Defaults of the built-in autoscaler.
const (
	// DefaultAutoscalerSyncPeriod is how often each autoscaled MixtralDeployment's engines
	// are read.
	DefaultAutoscalerSyncPeriod = 10 * time.Second
	// DefaultScaleTolerance is the fraction around the target within which the replica
	// count does not change.
	DefaultScaleTolerance = 0.1
	// DefaultDriftTolerance is how far (as a fraction) observed throughput per replica may
	// be from the prediction before the drift window opens.
	DefaultDriftTolerance = 0.3
	// DefaultDriftWindow is how long throughput must stay outside the tolerance before
	// ThroughputDrift turns True.
	DefaultDriftWindow = 5 * time.Minute

	// Default targets of the metrics whose target does not come from the plan.
	defaultQueueDepthTarget   = 1.0
	defaultKVCacheUsageTarget = 0.8

	// minWindowRequeue is the shortest wait for the pass that closes a window.
	minWindowRequeue = 10 * time.Millisecond

	// scrapeConcurrency bounds the scrapes in flight for one MixtralDeployment.
	scrapeConcurrency = 16
	// defaultScaleUpWindow and defaultScaleDownWindow are the CRD's defaults, for objects
	// stored before the defaults existed.
	defaultScaleUpWindow   = 30 * time.Second
	defaultScaleDownWindow = 300 * time.Second
	// defaultScaleToZeroAfter is the CRD's default of autoscaling.scaleToZeroAfter.
	defaultScaleToZeroAfter = 10 * time.Minute
)

// Autoscaler is the built-in autoscaler: on each pass of a MixtralDeployment with
// spec.autoscaling.enabled, it reads every Ready engine pod's metrics, decides a replica
// count (see decide) and writes it to spec.replicas through the scale subresource, the one
// writer of that field while autoscaling is enabled. Its windows live in
// status.autoscaling, never in memory, so an operator restart does not reset them; the only
// memory is each pod's previous token counter, from which the throughput rate is taken (a
// restart costs one reading of the rate).
//
// The zero value reads pods at their IPs with the real clock and the defaults above.
type Autoscaler struct {
	// Metrics reads the engine pods; nil means HTTPMetrics at the pods' IPs.
	Metrics MetricsSource
	// Clock is the time the windows and status timestamps are measured in; nil means the
	// real clock. (Throughput rates always use the real elapsed time between readings.)
	Clock clock.PassiveClock
	// SyncPeriod is the time between two passes over one MixtralDeployment; 0 means
	// DefaultAutoscalerSyncPeriod.
	SyncPeriod time.Duration
	// DriftTolerance and DriftWindow set when ThroughputDrift turns True; 0 means the
	// defaults.
	DriftTolerance float64
	DriftWindow    time.Duration

	mu sync.Mutex
	// counters holds, per MixtralDeployment and pod, the previous reading of the
	// generated-token counter.
	counters map[types.NamespacedName]map[types.UID]tokenCounter

	// afterPass, when set, is told how long each pass took to list and read the pods.
	afterPass func(key types.NamespacedName, took time.Duration)
}

// tokenCounter is one pod's previous generated-token reading and the rate derived from it.
type tokenCounter struct {
	tokens  float64
	at      time.Time
	rate    float64
	hasRate bool
	// seen is the latest reading of the generated plus prompt token counters; a change
	// between two readings means the pod served a request in between.
	seen float64
}

// defaultAutoscaler serves reconcilers built without one.
var defaultAutoscaler = &Autoscaler{}

func (r *MixtralDeploymentReconciler) autoscaler() *Autoscaler {
	if r.Autoscaler != nil {
		return r.Autoscaler
	}
	return defaultAutoscaler
}

func (a *Autoscaler) syncPeriod() time.Duration {
	if a.SyncPeriod > 0 {
		return a.SyncPeriod
	}
	return DefaultAutoscalerSyncPeriod
}

func (a *Autoscaler) now() time.Time {
	if a.Clock != nil {
		return a.Clock.Now()
	}
	return time.Now()
}

func (a *Autoscaler) metrics() MetricsSource {
	if a.Metrics != nil {
		return a.Metrics
	}
	return &HTTPMetrics{}
}

func (a *Autoscaler) driftTolerance() float64 {
	if a.DriftTolerance > 0 {
		return a.DriftTolerance
	}
	return DefaultDriftTolerance
}

func (a *Autoscaler) driftWindow() time.Duration {
	if a.DriftWindow > 0 {
		return a.DriftWindow
	}
	return DefaultDriftWindow
}

// Forget drops what the autoscaler remembers about a MixtralDeployment (deleted, or no
// longer autoscaled).
func (a *Autoscaler) Forget(key types.NamespacedName) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.counters, key)
}

// CacheOptions are the manager's cache settings the autoscaler needs: it lists engine pods,
// so pods are cached, but only those carrying the MixtralDeployment label, not every pod
// in the cluster.
func CacheOptions() cache.Options {
	engine, err := labels.NewRequirement(servingv1alpha1.LabelMixtralDeployment, selection.Exists, nil)
	if err != nil {
		panic("controllers: " + err.Error())
	}
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Label: labels.NewSelector().Add(*engine)},
		},
	}
}

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=serving.moe-operator.io,resources=mixtraldeployments/scale,verbs=get;update;patch

// reconcileAutoscaling is the autoscaling phase. With autoscaling off it clears the
// autoscaler's status and conditions and never touches spec.replicas, which then belongs to
// the plan, a user, an HPA or KEDA (see reconcileReplicas). With it on, it runs one pass of
// the autoscaler, writes its status and conditions, and asks for the next pass after the
// sync period.
func (r *MixtralDeploymentReconciler) reconcileAutoscaling(ctx context.Context, s *scope) error {
	a := r.autoscaler()
	key := client.ObjectKeyFromObject(s.obj)
	st := &s.obj.Status
	spec := s.obj.Spec.Autoscaling
	if spec == nil || !spec.Enabled {
		a.Forget(key)
		st.Autoscaling = nil
		for _, t := range []string{servingv1alpha1.ConditionScalingActive, servingv1alpha1.ConditionScalingLimited, servingv1alpha1.ConditionThroughputDrift} {
			meta.RemoveStatusCondition(&st.Conditions, t)
		}
		return nil
	}
	if p := a.syncPeriod(); s.requeueAfter == 0 || p < s.requeueAfter {
		s.requeueAfter = p
	}
	set := func(condType string, status metav1.ConditionStatus, reason, message string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{
			Type: condType, Status: status, Reason: reason, Message: message, ObservedGeneration: s.obj.Generation,
		})
	}
	if s.workload == nil || s.obj.Spec.Replicas == nil {
		set(servingv1alpha1.ConditionScalingActive, metav1.ConditionFalse, servingv1alpha1.ReasonNotPlanned,
			"The autoscaler waits for a plan; see the Planned condition.")
		return nil
	}

	// Status times are whole seconds on the wire; a pass's time is too, so that a pass
	// decides the same from the state it wrote as from the state it reads back.
	exact := a.now()
	now := exact.Truncate(time.Second)
	plan := s.workload.plan
	current := *s.obj.Spec.Replicas
	as := &servingv1alpha1.AutoscalingStatus{}
	if st.Autoscaling != nil {
		as = st.Autoscaling.DeepCopy()
	}
	state := windows{up: as.ScaleUp, down: as.ScaleDown}
	if as.LastScrapeTime != nil {
		last := as.LastScrapeTime.Time
		state.last = &last
	}

	started := time.Now()
	pods, err := r.enginePods(ctx, s.obj)
	if err != nil {
		return err
	}
	ready, starting := splitPods(pods)
	readings := a.scrape(ctx, ready, s.workload.port())
	load := a.aggregate(key, readings)
	if a.afterPass != nil {
		a.afterPass(key, time.Since(started))
	}

	target, targetErr := autoscalingTarget(spec, plan)
	policy := scalePolicy{
		min:          spec.Min(),
		max:          maxReplicas(spec, current),
		target:       target,
		tolerance:    DefaultScaleTolerance,
		upWindow:     durationOr(spec.ScaleUpWindow, defaultScaleUpWindow),
		downWindow:   durationOr(spec.ScaleDownWindow, defaultScaleDownWindow),
		samplePeriod: a.syncPeriod(),
	}
	rd := reading{current: current}
	holdReason, holdMessage := "", ""
	switch {
	case targetErr != nil:
		holdReason, holdMessage = servingv1alpha1.ReasonNoTarget, sentence(targetErr.Error())
	case len(ready) == 0:
		holdReason = servingv1alpha1.ReasonNoReadyReplicas
		holdMessage = fmt.Sprintf("No replica is ready to be read (%d starting); holding at %d replicas.", len(starting), current)
	default:
		rd.total, rd.read, rd.missing = load.value(spec.Metric)
		if rd.read == 0 && load.firstErr == nil && spec.Metric == servingv1alpha1.MetricOutputTokensPerSecond {
			holdReason = servingv1alpha1.ReasonMetricsPending
			holdMessage = fmt.Sprintf("The throughput rate needs a second reading of the replicas' token counters; holding at %d replicas.", current)
		} else if rd.read == 0 {
			holdReason = servingv1alpha1.ReasonScrapeFailed
			holdMessage = fmt.Sprintf("None of the %d ready replicas' metrics could be read (%s); holding at %d replicas and not scaling down.",
				len(ready), errorText(load.firstErr), current)
		}
	}
	if holdReason != "" {
		rd.read = 0
	}

	// Scale to and from zero. The load's own decisions never go below one replica; only
	// idleness takes the replicas to zero, and only requests held by the gateway bring them
	// back. Held requests are load for the request-counting metrics.
	held := heldRequests(s.obj, exact)
	as.HeldRequests = held
	zeroable := policy.min == 0
	if zeroable {
		policy.min = 1
	}
	if held > 0 && rd.read > 0 && countsRequests(spec.Metric) {
		rd.total += float64(held)
	}
	if held > 0 || load.active || len(starting) > 0 || as.LastRequestTime == nil {
		as.LastRequestTime = &metav1.Time{Time: now}
	}
	idleAfter := durationOr(spec.ScaleToZeroAfter, defaultScaleToZeroAfter)
	var d decision
	switch {
	case zeroable && current == 0:
		d = wake(policy, held, target, targetErr == nil && countsRequests(spec.Metric), now)
	default:
		d = decide(policy, state, rd, now)
		// Every ready replica read, none starting, none busy, no counter moved, and no
		// request since idleAfter: to zero.
		if zeroable && current > 0 && len(ready) > 0 && load.read == len(ready) && !load.unknown &&
			now.Sub(as.LastRequestTime.Time) >= idleAfter {
			d = decision{replicas: 0, recommended: 0, hold: servingv1alpha1.ReasonIdle, next: windows{last: &now}}
		}
	}

	// Scale.
	if d.replicas != current {
		if err := r.writeScale(ctx, s, d.replicas); err != nil {
			return err
		}
		as.LastScaleTime = &metav1.Time{Time: now}
		r.recordScale(s, current, d.replicas, spec.Metric, rd, policy, d.hold)
	}

	// An open window ends on a whole second; the pass that closes it runs then, not at the
	// next sync period after it.
	for _, w := range []struct {
		open   *servingv1alpha1.ScalingWindow
		length time.Duration
	}{{d.next.up, policy.upWindow}, {d.next.down, policy.downWindow}} {
		if w.open != nil {
			if until := w.open.Since.Add(w.length).Sub(exact); until < s.requeueAfter {
				s.requeueAfter = max(until, minWindowRequeue)
			}
		}
	}

	// Status.
	as.DesiredReplicas = d.replicas
	as.RecommendedReplicas = d.recommended
	as.ScrapedReplicas = int32(load.read)
	as.StartingReplicas = int32(len(starting))
	as.LastScrapeTime = &metav1.Time{Time: now}
	as.ScaleUp, as.ScaleDown = d.next.up, d.next.down
	as.ObservedValue = nil
	if targetErr == nil {
		as.Target = quantity(target)
		if rd.read > 0 {
			as.ObservedValue = quantity(rd.total / float64(rd.read))
		}
	}
	drift := r.observeThroughput(s, as, load, now)

	// Conditions.
	switch {
	case d.hold == servingv1alpha1.ReasonWoken:
		set(servingv1alpha1.ConditionScalingActive, metav1.ConditionTrue, servingv1alpha1.ReasonWoken,
			fmt.Sprintf("The gateway holds %d requests for this model at zero replicas; spec.replicas went to %d.", held, d.replicas))
	case d.hold == servingv1alpha1.ReasonIdle:
		set(servingv1alpha1.ConditionScalingActive, metav1.ConditionTrue, servingv1alpha1.ReasonIdle,
			fmt.Sprintf("At zero replicas: no request since %s (scaleToZeroAfter is %s). A request through moe gateway wakes the model.",
				as.LastRequestTime.UTC().Format(time.RFC3339), idleAfter))
	case d.hold == servingv1alpha1.ReasonOutOfBounds:
		set(servingv1alpha1.ConditionScalingActive, metav1.ConditionTrue, servingv1alpha1.ReasonOutOfBounds,
			fmt.Sprintf("spec.replicas was %d, outside minReplicas..maxReplicas (%d..%d); set it to %d.", current, policy.min, policy.max, d.replicas))
	case holdReason != "":
		set(servingv1alpha1.ConditionScalingActive, metav1.ConditionFalse, holdReason, holdMessage)
	default:
		reason, msg := servingv1alpha1.ReasonValidMetrics, ""
		if rd.missing > 0 {
			reason = servingv1alpha1.ReasonPartialMetrics
			msg = fmt.Sprintf(" %d of %d ready replicas could not be read (%s): scaling down is held until all are.", rd.missing, len(ready), errorText(load.firstErr))
		}
		set(servingv1alpha1.ConditionScalingActive, metav1.ConditionTrue, reason,
			activeMessage(spec.Metric, rd, policy, d, len(starting), now)+msg)
	}
	switch {
	case d.limited != "":
		set(servingv1alpha1.ConditionScalingLimited, metav1.ConditionTrue, d.limited, limitedMessage(d.limited, policy, current))
	case d.hold == "" || meta.FindStatusCondition(st.Conditions, servingv1alpha1.ConditionScalingLimited) == nil:
		set(servingv1alpha1.ConditionScalingLimited, metav1.ConditionFalse, servingv1alpha1.ReasonWithinRange,
			fmt.Sprintf("The load's replica count is within minReplicas..maxReplicas (%d..%d).", policy.min, policy.max))
	}
	if drift != nil {
		prev := meta.FindStatusCondition(st.Conditions, servingv1alpha1.ConditionThroughputDrift)
		wasTrue := prev != nil && prev.Status == metav1.ConditionTrue
		set(servingv1alpha1.ConditionThroughputDrift, drift.status, drift.reason, drift.message)
		if r.Recorder != nil && wasTrue != (drift.status == metav1.ConditionTrue) && drift.status != metav1.ConditionUnknown {
			if drift.status == metav1.ConditionTrue {
				r.Recorder.Eventf(s.obj, nil, corev1.EventTypeWarning, servingv1alpha1.EventThroughputDrift, "Observe", "%s", drift.message)
			} else if wasTrue {
				r.Recorder.Eventf(s.obj, nil, corev1.EventTypeNormal, servingv1alpha1.EventThroughputAsPredicted, "Observe", "%s", drift.message)
			}
		}
	}
	st.Autoscaling = as
	logf.FromContext(ctx).V(1).Info("autoscaler pass", "current", current, "desired", d.replicas,
		"recommended", d.recommended, "read", rd.read, "missing", rd.missing, "total", rd.total)
	return nil
}

// writeScale sets spec.replicas through the scale subresource, as an HPA would, on the
// resourceVersion this pass read: a concurrent write wins, and the pass is retried.
func (r *MixtralDeploymentReconciler) writeScale(ctx context.Context, s *scope, replicas int32) error {
	scale := &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: s.obj.Name, Namespace: s.obj.Namespace, ResourceVersion: s.obj.ResourceVersion},
		Spec:       autoscalingv1.ScaleSpec{Replicas: replicas},
	}
	if err := r.SubResource("scale").Update(ctx, s.obj, client.WithSubResourceBody(scale), client.FieldOwner(autoscalerFieldOwner)); err != nil {
		return fmt.Errorf("writing spec.replicas through the scale subresource: %w", err)
	}
	// The status patch that ends the pass is a diff against s.before; keep spec out of it.
	for _, o := range []*servingv1alpha1.MixtralDeployment{s.obj, s.before} {
		o.Spec.Replicas = ptr.To(replicas)
		o.ResourceVersion = scale.ResourceVersion
	}
	return nil
}

// autoscalerFieldOwner is the field manager of the autoscaler's writes to spec.replicas.
const autoscalerFieldOwner = "moe-operator-autoscaler"

func (r *MixtralDeploymentReconciler) recordScale(s *scope, from, to int32, metric servingv1alpha1.AutoscalingMetric, rd reading, p scalePolicy, hold string) {
	if r.Recorder == nil {
		return
	}
	reason, verb, window := servingv1alpha1.EventScaledUp, "up", p.upWindow
	if to < from {
		reason, verb, window = servingv1alpha1.EventScaledDown, "down", p.downWindow
	}
	why := fmt.Sprintf("%s was %s per replica against a target of %s for %s", metric, formatValue(rd.total/float64(max(from, 1))), formatValue(p.target), window)
	switch hold {
	case servingv1alpha1.ReasonOutOfBounds:
		why = fmt.Sprintf("spec.replicas was outside minReplicas..maxReplicas (%d..%d)", p.min, p.max)
	case servingv1alpha1.ReasonIdle:
		why = "no request for scaleToZeroAfter"
	case servingv1alpha1.ReasonWoken:
		why = "the gateway holds requests for the model"
	}
	r.Recorder.Eventf(s.obj, nil, corev1.EventTypeNormal, reason, "Scale", "Scaled %s from %d to %d replicas: %s.", verb, from, to, why)
}

// enginePods lists the MixtralDeployment's serving engine pods (the leaders of multi-node
// replicas).
func (r *MixtralDeploymentReconciler) enginePods(ctx context.Context, obj *servingv1alpha1.MixtralDeployment) ([]corev1.Pod, error) {
	list := &corev1.PodList{}
	if err := r.List(ctx, list, client.InNamespace(obj.Namespace), client.MatchingLabels(servingLabels(obj))); err != nil {
		return nil, fmt.Errorf("listing engine pods: %w", err)
	}
	return list.Items, nil
}

// splitPods sorts pods into the ready ones, whose load is read, and the starting ones
// (created, not ready, not finished), which count toward capacity. Terminating and finished
// pods are neither.
func splitPods(pods []corev1.Pod) (ready, starting []*corev1.Pod) {
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if podReady(p) {
			ready = append(ready, p)
		} else {
			starting = append(starting, p)
		}
	}
	return ready, starting
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podReading is one ready pod's scrape.
type podReading struct {
	pod     *corev1.Pod
	metrics EngineMetrics
	err     error
}

// scrape reads every pod concurrently, at most scrapeConcurrency at a time.
func (a *Autoscaler) scrape(ctx context.Context, pods []*corev1.Pod, port int32) []podReading {
	out := make([]podReading, len(pods))
	src := a.metrics()
	sem := make(chan struct{}, scrapeConcurrency)
	var wg sync.WaitGroup
	for i, p := range pods {
		out[i].pod = p
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			out[i].metrics, out[i].err = src.Scrape(ctx, p, port)
		}()
	}
	wg.Wait()
	return out
}

// load is the aggregate of one pass's readings.
type load struct {
	read, failed int
	firstErr     error
	running      float64
	waiting      float64
	kvCache      float64
	// tokensPerSecond sums the rates of the rated pods.
	tokensPerSecond float64
	rated           int
	// active is whether a pod read had a request running or waiting, or served one since
	// its previous reading. unknown is whether a pod was read for the first time, so
	// whether it served a request lately is not known.
	active, unknown bool
}

// aggregate sums the readings and updates the per-pod token counters, forgetting pods that
// are gone.
func (a *Autoscaler) aggregate(key types.NamespacedName, readings []podReading) load {
	var l load
	at := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.counters == nil {
		a.counters = map[types.NamespacedName]map[types.UID]tokenCounter{}
	}
	prev := a.counters[key]
	next := make(map[types.UID]tokenCounter, len(readings))
	minElapsed := a.syncPeriod() / 2
	for _, rd := range readings {
		if rd.err != nil {
			l.failed++
			if l.firstErr == nil {
				l.firstErr = rd.err
			}
			if c, ok := prev[rd.pod.UID]; ok {
				next[rd.pod.UID] = c
			}
			continue
		}
		l.read++
		m := rd.metrics
		l.running += m.Running
		l.waiting += m.Waiting
		l.kvCache += m.KVCacheUsage
		c, ok := prev[rd.pod.UID]
		seen := m.GenerationTokens + m.PromptTokens
		if m.Running+m.Waiting > 0 || (ok && seen != c.seen) {
			l.active = true
		}
		if !ok {
			l.unknown = true
		}
		switch {
		case !ok || m.GenerationTokens < c.tokens:
			// First reading, or the engine restarted and its counter with it.
			c = tokenCounter{tokens: m.GenerationTokens, at: at}
		case at.Sub(c.at) >= minElapsed:
			c = tokenCounter{tokens: m.GenerationTokens, at: at, rate: (m.GenerationTokens - c.tokens) / at.Sub(c.at).Seconds(), hasRate: true}
		}
		c.seen = seen
		next[rd.pod.UID] = c
		if c.hasRate {
			l.tokensPerSecond += c.rate
			l.rated++
		}
	}
	a.counters[key] = next
	return l
}

// value is the metric's total over the replicas read, and how many were read and missing.
func (l load) value(m servingv1alpha1.AutoscalingMetric) (total float64, read, missing int) {
	switch m {
	case servingv1alpha1.MetricQueueDepth:
		return l.waiting, l.read, l.failed
	case servingv1alpha1.MetricKVCacheUsage:
		return l.kvCache, l.read, l.failed
	case servingv1alpha1.MetricOutputTokensPerSecond:
		return l.tokensPerSecond, l.rated, l.failed + (l.read - l.rated)
	default: // Concurrency
		return l.running + l.waiting, l.read, l.failed
	}
}

// autoscalingTarget is the per-replica target: spec.autoscaling.target, or the metric's
// default (the plan's batch size for Concurrency, its predicted throughput per replica for
// OutputTokensPerSecond, 1 waiting request for QueueDepth, 0.8 for KVCacheUsage).
func autoscalingTarget(spec *servingv1alpha1.AutoscalingSpec, plan servingv1alpha1.Plan) (float64, error) {
	if spec.Target != nil {
		if v := spec.Target.AsApproximateFloat64(); v > 0 {
			return v, nil
		}
		return 0, errors.New("autoscaling.target must be positive")
	}
	switch spec.Metric {
	case servingv1alpha1.MetricQueueDepth:
		return defaultQueueDepthTarget, nil
	case servingv1alpha1.MetricKVCacheUsage:
		return defaultKVCacheUsageTarget, nil
	case servingv1alpha1.MetricOutputTokensPerSecond:
		if plan.OutputTokensPerSecondPerReplica > 0 {
			return plan.OutputTokensPerSecondPerReplica, nil
		}
		return 0, errors.New("the plan predicts no throughput per replica, the default target of OutputTokensPerSecond: set autoscaling.target")
	default:
		if plan.BatchSize > 0 {
			return float64(plan.BatchSize), nil
		}
		return 0, errors.New("the plan has no batch size, the default target of Concurrency: set autoscaling.target")
	}
}

// maxReplicas is spec.autoscaling.maxReplicas; admission requires it with enabled, and an
// object stored without it keeps its current count as the ceiling.
func maxReplicas(spec *servingv1alpha1.AutoscalingSpec, current int32) int32 {
	if spec.MaxReplicas != nil {
		return *spec.MaxReplicas
	}
	return max(current, spec.Min())
}

func durationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.Duration
}

// quantity renders a float as a Quantity with milli precision.
func quantity(v float64) *resource.Quantity {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return resource.NewMilliQuantity(int64(math.Round(v*1000)), resource.DecimalSI)
}

func formatValue(v float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}

func errorText(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

func activeMessage(metric servingv1alpha1.AutoscalingMetric, rd reading, p scalePolicy, d decision, starting int, now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s is %s per replica over %d replicas against a target of %s (read from %d ready replicas",
		metric, formatValue(rd.total/float64(max(rd.current, 1))), rd.current, formatValue(p.target), rd.read)
	if starting > 0 {
		fmt.Fprintf(&b, "; %d starting count toward capacity", starting)
	}
	fmt.Fprintf(&b, "): the load asks for %d replicas.", d.recommended)
	if w := d.waitingFor(p, now); w != "" {
		b.WriteString(" " + w)
	}
	return b.String()
}

func limitedMessage(reason string, p scalePolicy, current int32) string {
	switch reason {
	case servingv1alpha1.ReasonMaxReplicas:
		return fmt.Sprintf("The load asks for more than maxReplicas (%d); raise autoscaling.maxReplicas to serve it without queueing.", p.max)
	case servingv1alpha1.ReasonMinReplicas:
		return fmt.Sprintf("The load asks for fewer than minReplicas (%d).", p.min)
	default:
		return fmt.Sprintf("The load asks for more than twice the %d current replicas; one step at most doubles them.", current)
	}
}

// throughputState is the ThroughputDrift condition a pass computed.
type throughputState struct {
	status  metav1.ConditionStatus
	reason  string
	message string
}

// observeThroughput fills the predicted and observed throughput per replica and their
// ratio, and decides the ThroughputDrift condition; nil leaves the condition as it is (no
// load to compare, but a verdict from earlier load stands).
//
// The prediction is the planner's performance model at the observed batch (the mean
// running requests per replica, at most the plan's batch size), so a lightly loaded replica
// is not compared with a full one.
func (r *MixtralDeploymentReconciler) observeThroughput(s *scope, as *servingv1alpha1.AutoscalingStatus, l load, now time.Time) *throughputState {
	a := r.autoscaler()
	plan := s.workload.plan
	as.PredictedOutputTokensPerSecondPerReplica = plan.OutputTokensPerSecondPerReplica
	as.ObservedOutputTokensPerSecondPerReplica, as.ThroughputRatio = 0, 0
	if l.rated > 0 {
		as.ObservedOutputTokensPerSecondPerReplica = round3(l.tokensPerSecond / float64(l.rated))
	}
	batch := 0
	if l.read > 0 {
		batch = int(math.Round(l.running / float64(l.read)))
	}
	unknown := func() *throughputState {
		if meta.FindStatusCondition(s.obj.Status.Conditions, servingv1alpha1.ConditionThroughputDrift) != nil {
			return nil
		}
		return &throughputState{status: metav1.ConditionUnknown, reason: servingv1alpha1.ReasonNotEnoughLoad,
			message: "No replica has generated tokens under load yet; throughput is compared with the plan's prediction once one has."}
	}
	if l.rated == 0 || batch < 1 || as.ObservedOutputTokensPerSecondPerReplica == 0 {
		return unknown()
	}
	batch = min(batch, int(max(plan.BatchSize, 1)))
	predicted := plan.OutputTokensPerSecondPerReplica
	if req, err := planRequest(s.obj.Spec); err == nil {
		if q, err := planner.ParseQuantization(plan.Quantization); err == nil {
			if p, err := planner.Predict(req, q, int(plan.TensorParallelism), int(max(1, plan.PipelineParallelism)), batch); err == nil {
				predicted = p.OutputTokensPerSecond
			}
		}
	}
	if predicted <= 0 {
		return unknown()
	}
	observed := as.ObservedOutputTokensPerSecondPerReplica
	as.PredictedOutputTokensPerSecondPerReplica = round3(predicted)
	ratio := observed / predicted
	as.ThroughputRatio = round3(ratio)

	tol, window := a.driftTolerance(), a.driftWindow()
	what := fmt.Sprintf("Observed %s tok/s per replica is %s%% of the %s tok/s the plan predicts at batch %d",
		formatValue(observed), formatValue(100*ratio), formatValue(predicted), batch)
	if math.Abs(ratio-1) <= tol {
		as.ThroughputDriftSince = nil
		return &throughputState{status: metav1.ConditionFalse, reason: servingv1alpha1.ReasonThroughputAsPredicted,
			message: fmt.Sprintf("%s, within the %s%% tolerance.", what, formatValue(100*tol))}
	}
	if as.ThroughputDriftSince == nil || as.ThroughputDriftSince.After(now) {
		as.ThroughputDriftSince = &metav1.Time{Time: now}
	}
	lasted := now.Sub(as.ThroughputDriftSince.Time)
	if lasted < window {
		return &throughputState{status: metav1.ConditionFalse, reason: servingv1alpha1.ReasonThroughputAsPredicted,
			message: fmt.Sprintf("%s, outside the %s%% tolerance for %s; ThroughputDrift turns True after %s.", what, formatValue(100*tol), lasted, window)}
	}
	reason, advice := servingv1alpha1.ReasonThroughputBelowPrediction,
		"The plan's replica count may fall short of targets.outputTokensPerSecond and its latencies may be optimistic: check targets.promptTokens and targets.outputTokens against the real traffic, or calibrate the planner with `moe bench`."
	if ratio > 1 {
		reason, advice = servingv1alpha1.ReasonThroughputAbovePrediction,
			"The plan may use more replicas than needed: check targets.promptTokens and targets.outputTokens against the real traffic, or calibrate the planner with `moe bench`."
	}
	return &throughputState{status: metav1.ConditionTrue, reason: reason,
		message: fmt.Sprintf("%s, outside the %s%% tolerance for %s. %s", what, formatValue(100*tol), lasted, advice)}
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }
