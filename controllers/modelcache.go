package controllers

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch;create;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list
// +kubebuilder:rbac:groups="",resources=pods/log,verbs=get

// defaultPullPollInterval is how often a running pull's progress is read when the
// reconciler's PullPollInterval is unset. `moe pull` prints progress every 5 s.
const defaultPullPollInterval = 10 * time.Second

// cacheState is what the model-cache phase observed and concluded in one pass.
type cacheState struct {
	report cacheReport
}

// holdsWorkload reports whether the engine Deployment waits for the cache: with
// spec.model.cache, replicas start (or take a new template) only once the loader Job for
// the current spec has completed. A Deployment that already runs is left as it is.
func (s *scope) cacheHoldsWorkload() bool {
	return s.cache != nil && !s.cache.report.ready
}

func (r *MixtralDeploymentReconciler) pullPollInterval() time.Duration {
	if r.PullPollInterval > 0 {
		return r.PullPollInterval
	}
	return defaultPullPollInterval
}

func (r *MixtralDeploymentReconciler) podReader() client.Reader {
	if r.PodReader != nil {
		return r.PodReader
	}
	return r.Client
}

// reconcileModelCache makes sure the cache claim and the loader Job for the current spec
// exist, reads how far the pull got, and decides whether the engine may start. Without a
// plan it leaves the cache as it is, like every other child; without spec.model.cache it
// removes the loader Jobs and, unless it was retained, the claim.
func (r *MixtralDeploymentReconciler) reconcileModelCache(ctx context.Context, s *scope) error {
	spec := s.obj.Spec.Model.Cache
	if spec == nil {
		claim := modelCacheClaimName(s.obj.Name)
		if st := s.before.Status.ModelCache; st != nil && st.ClaimName != "" {
			claim = st.ClaimName // model.cache.claimName, gone with model.cache
		}
		return r.removeModelCache(ctx, s.obj, claim)
	}
	if s.workload == nil {
		return nil
	}
	w := *s.workload
	uri, _ := modelSource(s.obj.Spec.Model)
	obs := cacheObservation{
		uri:          uri,
		claimName:    w.cacheClaimName(),
		namespace:    s.obj.Namespace,
		tokenRef:     s.obj.Spec.Model.TokenSecretRef,
		backoffLimit: loaderBackoffLimit,
		prev:         s.obj.Status.ModelCache,
	}
	claim, mismatch, err := r.applyCacheClaim(ctx, s.obj, w)
	if err != nil {
		return err
	}
	obs.claim, obs.mismatch = claim, mismatch
	s.cache = &cacheState{}
	if mismatch == "" {
		job, created, err := r.applyLoaderJob(ctx, s.obj, w)
		if err != nil {
			return err
		}
		obs.job = job
		if err := r.deleteLoaderJobs(ctx, s.obj, job.Name); err != nil {
			return err
		}
		if created && r.Recorder != nil {
			r.Recorder.Eventf(s.obj, job, corev1.EventTypeNormal, servingv1alpha1.EventModelPullStarted, "Pull",
				"Pulling %s into PersistentVolumeClaim %s with Job %s", uri, obs.claimName, job.Name)
		}
		if !created {
			if obs.pods, err = r.loaderPods(ctx, job); err != nil {
				return err
			}
			if pod := newestPod(obs.pods); pod != nil && pod.Status.Phase == corev1.PodRunning && r.Progress != nil {
				out, err := r.Progress.Tail(ctx, pod)
				if err != nil {
					// Progress is best effort: the pull goes on, and the next poll retries.
					logf.FromContext(ctx).V(1).Info("no pull progress this pass", "reason", err.Error())
				} else if e, ok := ParsePullLog(out); ok {
					obs.latest = &e
				}
			}
		}
	}
	s.cache.report = assessCache(obs)
	if !s.cache.report.ready && !s.cache.report.failed {
		s.requeue(r.pullPollInterval())
	}
	return nil
}

// applyCacheClaim creates the cache claim, or takes the existing one. It manages a claim
// that is its own: one it controls, or an unowned one whose AnnotationRetainedBy names this
// MixtralDeployment (a cache retained under this namespace and name). The owner reference
// and the annotation follow whenDeleted, and a bigger size is applied (claims only grow).
// An unowned claim that model.cache.claimName names but that is not its own is the user's:
// it is used as it is and never changed, owned or deleted. Any other claim of the name is
// foreign and left alone, whatever its labels say. A claim whose storage class or access
// mode differ from the spec (a retained or hand-edited claim) is not changed; mismatch says
// what differs and what to do.
func (r *MixtralDeploymentReconciler) applyCacheClaim(ctx context.Context, obj *servingv1alpha1.MixtralDeployment, w workload) (*corev1.PersistentVolumeClaim, string, error) {
	spec := w.cacheSpec()
	desired := desiredCacheClaim(w)
	existing := &corev1.PersistentVolumeClaim{}
	err := r.Get(ctx, client.ObjectKeyFromObject(desired), existing)
	switch {
	case apierrors.IsNotFound(err):
		if !cacheRetained(spec) {
			if err := controllerutil.SetControllerReference(obj, desired, r.Scheme()); err != nil {
				return nil, "", fmt.Errorf("setting the owner of PersistentVolumeClaim %q: %w", desired.Name, err)
			}
		}
		if err := r.Create(ctx, desired); err != nil {
			return nil, "", fmt.Errorf("creating PersistentVolumeClaim %q: %w", desired.Name, err)
		}
		return desired, "", nil
	case err != nil:
		return nil, "", fmt.Errorf("reading PersistentVolumeClaim %q: %w", desired.Name, err)
	}
	controlled := metav1.IsControlledBy(existing, obj)
	unowned := metav1.GetControllerOf(existing) == nil
	retained := unowned && existing.Annotations[servingv1alpha1.AnnotationRetainedBy] == retainedBy(obj)
	switch {
	case controlled || retained:
	case unowned && spec.ClaimName != "":
		// Handed over by name: the user's claim, used as it is.
		if !existing.DeletionTimestamp.IsZero() {
			return existing, errClaimDeleting, nil
		}
		return existing, claimMismatch(existing, spec), nil
	default:
		return nil, "", &foreignChildError{kind: "PersistentVolumeClaim", name: desired.Name, hint: foreignClaimHint(existing, obj)}
	}
	if !existing.DeletionTimestamp.IsZero() {
		return existing, errClaimDeleting, nil
	}
	changed := syncLabels(existing, desired)
	switch {
	case cacheRetained(spec) && controlled:
		existing.OwnerReferences = slices.DeleteFunc(existing.OwnerReferences, func(o metav1.OwnerReference) bool { return o.UID == obj.UID })
		changed = true
	case !cacheRetained(spec) && !controlled:
		if err := controllerutil.SetControllerReference(obj, existing, r.Scheme()); err != nil {
			return nil, "", fmt.Errorf("setting the owner of PersistentVolumeClaim %q: %w", desired.Name, err)
		}
		changed = true
	}
	if want := retainedBy(obj); cacheRetained(spec) && existing.Annotations[servingv1alpha1.AnnotationRetainedBy] != want {
		metav1.SetMetaDataAnnotation(&existing.ObjectMeta, servingv1alpha1.AnnotationRetainedBy, want)
		changed = true
	} else if _, ok := existing.Annotations[servingv1alpha1.AnnotationRetainedBy]; !cacheRetained(spec) && ok {
		// Owned again: the owner reference, not the annotation, decides its fate.
		delete(existing.Annotations, servingv1alpha1.AnnotationRetainedBy)
		changed = true
	}
	if mismatch := claimMismatch(existing, spec); mismatch != "" {
		if changed {
			if err := r.Update(ctx, existing); err != nil {
				return nil, "", fmt.Errorf("updating PersistentVolumeClaim %q: %w", desired.Name, err)
			}
		}
		return existing, mismatch, nil
	}
	have := existing.Spec.Resources.Requests[corev1.ResourceStorage]
	grow := spec.Size.Cmp(have) > 0
	if grow {
		if existing.Spec.Resources.Requests == nil {
			existing.Spec.Resources.Requests = corev1.ResourceList{}
		}
		existing.Spec.Resources.Requests[corev1.ResourceStorage] = spec.Size.DeepCopy()
		changed = true
	}
	if !changed {
		return existing, "", nil
	}
	if err := r.Update(ctx, existing); err != nil {
		if grow && (apierrors.IsForbidden(err) || apierrors.IsInvalid(err)) {
			return existing, fmt.Sprintf("PersistentVolumeClaim %s cannot grow from %s to %s: %v. Use a storage class with allowVolumeExpansion, or remove model.cache and add it back to start over with a new claim.",
				desired.Name, have.String(), spec.Size.String(), err), nil
		}
		return nil, "", fmt.Errorf("updating PersistentVolumeClaim %q: %w", desired.Name, err)
	}
	return existing, "", nil
}

// foreignClaimHint says how to hand an existing claim to obj: the operator takes over no
// claim by its labels alone, since anyone who may label a claim could set them.
func foreignClaimHint(claim *corev1.PersistentVolumeClaim, obj *servingv1alpha1.MixtralDeployment) string {
	if metav1.GetControllerOf(claim) != nil {
		return "it belongs to another object, which may delete it"
	}
	return fmt.Sprintf("to use it as this cache, set model.cache.claimName: %s (the operator then never deletes or changes it), "+
		"or mark it as retained for this MixtralDeployment (kubectl annotate pvc -n %s %s %s=%s)",
		claim.Name, claim.Namespace, claim.Name, servingv1alpha1.AnnotationRetainedBy, retainedBy(obj))
}

// errClaimDeleting is applyCacheClaim's mismatch for a claim on its way out: the pull waits
// for it to go, then starts on a new one.
const errClaimDeleting = "deleting"

// claimMismatch says how an existing claim differs from spec.model.cache in what a claim
// cannot change: its storage class (when the spec names one) and access mode.
func claimMismatch(claim *corev1.PersistentVolumeClaim, spec *servingv1alpha1.ModelCacheSpec) string {
	var diffs []string
	if want := spec.StorageClassName; want != nil {
		have := "(none)"
		if claim.Spec.StorageClassName != nil {
			have = *claim.Spec.StorageClassName
		}
		if have != *want {
			diffs = append(diffs, fmt.Sprintf("storage class %s, not %s", have, *want))
		}
	}
	if mode := cacheAccessMode(spec); !slices.Contains(claim.Spec.AccessModes, mode) {
		diffs = append(diffs, fmt.Sprintf("access modes %v, not %s", claim.Spec.AccessModes, mode))
	}
	if len(diffs) == 0 {
		return ""
	}
	return fmt.Sprintf("PersistentVolumeClaim %s has %s, which a claim cannot change. Delete it (kubectl delete pvc -n %s %s) and the operator creates it as model.cache says, then pulls the model again.",
		claim.Name, strings.Join(diffs, " and "), claim.Namespace, claim.Name)
}

// applyLoaderJob creates the loader Job for the current spec unless it exists. A Job is
// never updated: a different pull has a different name. It reports whether it created it.
func (r *MixtralDeploymentReconciler) applyLoaderJob(ctx context.Context, obj *servingv1alpha1.MixtralDeployment, w workload) (*batchv1.Job, bool, error) {
	desired := desiredLoaderJob(w)
	if err := controllerutil.SetControllerReference(obj, desired, r.Scheme()); err != nil {
		return nil, false, fmt.Errorf("setting the owner of Job %q: %w", desired.Name, err)
	}
	existing := &batchv1.Job{}
	err := r.Get(ctx, client.ObjectKeyFromObject(desired), existing)
	switch {
	case apierrors.IsNotFound(err):
		if err := r.Create(ctx, desired); err != nil {
			return nil, false, fmt.Errorf("creating Job %q: %w", desired.Name, err)
		}
		return desired, true, nil
	case err != nil:
		return nil, false, fmt.Errorf("reading Job %q: %w", desired.Name, err)
	case !metav1.IsControlledBy(existing, obj):
		return nil, false, &foreignChildError{kind: "Job", name: desired.Name}
	}
	return existing, false, nil
}

// deleteLoaderJobs deletes this MixtralDeployment's loader Jobs other than keep (all of them
// when keep is empty), with their pods. An interrupted pull leaves its partial files for
// the next one to resume.
func (r *MixtralDeploymentReconciler) deleteLoaderJobs(ctx context.Context, obj *servingv1alpha1.MixtralDeployment, keep string) error {
	jobs := &batchv1.JobList{}
	if err := r.List(ctx, jobs, client.InNamespace(obj.Namespace), client.MatchingLabels{servingv1alpha1.LabelModelCache: obj.Name}); err != nil {
		return fmt.Errorf("listing loader Jobs: %w", err)
	}
	for i := range jobs.Items {
		job := &jobs.Items[i]
		if job.Name == keep || !metav1.IsControlledBy(job, obj) || !job.DeletionTimestamp.IsZero() {
			continue
		}
		if err := r.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting loader Job %q: %w", job.Name, err)
		}
	}
	return nil
}

// removeModelCache undoes the cache once spec.model.cache is gone: the loader Jobs go, and
// the claim too unless it is retained (it then has no owner reference). Only objects this
// MixtralDeployment controls are deleted: RBAC lets the operator delete any claim or Job,
// so the owner reference is checked here, before each delete. Pods still using
// the claim keep it until they stop (the claim's protection finalizer).
func (r *MixtralDeploymentReconciler) removeModelCache(ctx context.Context, obj *servingv1alpha1.MixtralDeployment, claimName string) error {
	if err := r.deleteLoaderJobs(ctx, obj, ""); err != nil {
		return err
	}
	claim := &corev1.PersistentVolumeClaim{}
	err := r.Get(ctx, client.ObjectKey{Namespace: obj.Namespace, Name: claimName}, claim)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return fmt.Errorf("reading PersistentVolumeClaim %q: %w", claim.Name, err)
	case !metav1.IsControlledBy(claim, obj) || !claim.DeletionTimestamp.IsZero():
		return nil
	}
	if err := r.Delete(ctx, claim); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("deleting PersistentVolumeClaim %q: %w", claim.Name, err)
	}
	return nil
}

// loaderPods lists the Job's pods, newest first. It reads through PodReader, so the
// manager needs no pod informer.
func (r *MixtralDeploymentReconciler) loaderPods(ctx context.Context, job *batchv1.Job) ([]corev1.Pod, error) {
	if job.Spec.Selector == nil {
		return nil, nil
	}
	selector, err := metav1.LabelSelectorAsSelector(job.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("the selector of Job %q: %w", job.Name, err)
	}
	pods := &corev1.PodList{}
	if err := r.podReader().List(ctx, pods, client.InNamespace(job.Namespace), client.MatchingLabelsSelector{Selector: selector}); err != nil {
		return nil, fmt.Errorf("listing the pods of Job %q: %w", job.Name, err)
	}
	sort.SliceStable(pods.Items, func(i, j int) bool {
		a, b := pods.Items[i], pods.Items[j]
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return b.CreationTimestamp.Before(&a.CreationTimestamp)
		}
		return a.Name > b.Name
	})
	return pods.Items, nil
}

func newestPod(pods []corev1.Pod) *corev1.Pod {
	if len(pods) == 0 {
		return nil
	}
	return &pods[0]
}

// cacheObservation is everything assessCache reads: the state of the claim, the loader
// Job and its pods, and the pull's last report.
type cacheObservation struct {
	uri, claimName, namespace string
	tokenRef                  *corev1.SecretKeySelector
	backoffLimit              int32
	claim                     *corev1.PersistentVolumeClaim
	// mismatch, when set, says why the claim cannot be used; there is no Job then.
	mismatch string
	job      *batchv1.Job
	// pods are the Job's pods, newest first.
	pods []corev1.Pod
	// latest is the last event the newest pod printed, when it is running.
	latest *PullEvent
	// prev is status.modelCache as the pass found it.
	prev *servingv1alpha1.ModelCacheStatus
}

// cacheReport is the ModelCached condition and status.modelCache.
type cacheReport struct {
	status          metav1.ConditionStatus
	reason, message string
	// ready: the pull for the current spec completed. failed: it cannot complete
	// without a change (a failed Job, an unusable claim).
	ready, failed bool
	progress      servingv1alpha1.ModelCacheStatus
}

// assessCache turns what the phase observed into the ModelCached condition and progress.
// It is pure, so every outcome is table-tested.
func assessCache(o cacheObservation) cacheReport {
	rep := cacheReport{status: metav1.ConditionFalse}
	p := &rep.progress
	p.ClaimName = o.claimName
	switch {
	case o.mismatch == errClaimDeleting:
		rep.reason = servingv1alpha1.ReasonLoaderPending
		rep.message = fmt.Sprintf("PersistentVolumeClaim %s is being deleted (pods that still use it hold it); a new one is created once it is gone.", o.claimName)
		return rep
	case o.mismatch != "":
		if o.prev != nil {
			*p = *o.prev.DeepCopy()
			p.ClaimName = o.claimName
		}
		rep.reason, rep.message, rep.failed = servingv1alpha1.ReasonCacheClaimMismatch, o.mismatch, true
		return rep
	case o.job == nil:
		rep.reason, rep.message = servingv1alpha1.ReasonPulling, "Creating the loader Job."
		return rep
	}
	job := o.job
	p.JobName = job.Name
	if o.prev != nil && o.prev.JobName == job.Name {
		*p = *o.prev.DeepCopy()
		p.ClaimName = o.claimName
	}
	newest := newestPod(o.pods)

	switch {
	case jobConditionTrue(job, batchv1.JobComplete):
		if pod := lastPodIn(o.pods, corev1.PodSucceeded); pod != nil {
			if e, ok := terminationEvent(pod); ok {
				applyPullEvent(p, e)
			}
		}
		p.BytesDone, p.Percent, p.BytesPerSecond, p.ETASeconds = max(p.BytesDone, p.BytesTotal), 100, 0, 0
		rep.status, rep.reason, rep.ready = metav1.ConditionTrue, servingv1alpha1.ReasonCached, true
		rep.message = fmt.Sprintf("%s is cached in PersistentVolumeClaim %s", o.uri, o.claimName)
		if p.BytesTotal > 0 {
			rep.message += fmt.Sprintf(": %s in %d files, %s of it downloaded by Job %s.", humanBytes(p.BytesTotal), p.FilesTotal, humanBytes(p.BytesDownloaded), job.Name)
		} else {
			rep.message += fmt.Sprintf(" (Job %s completed).", job.Name)
		}
		return rep

	case jobConditionTrue(job, batchv1.JobFailed):
		code, text := podFailure(lastPodIn(o.pods, corev1.PodFailed))
		if text == "" {
			text = jobConditionMessage(job, batchv1.JobFailed)
		}
		p.BytesPerSecond, p.ETASeconds = 0, 0
		rep.failed = true
		rep.reason = pullFailureReason(code)
		rep.message = pullFailureMessage(rep.reason, code, text, o, job)
		return rep
	}

	rep.reason = servingv1alpha1.ReasonPulling
	switch {
	case newest == nil:
		rep.message = fmt.Sprintf("Job %s is creating the loader pod.", job.Name)
	case newest.Status.Phase == corev1.PodPending:
		if problem := pendingProblem(newest, o.claim); problem != "" {
			rep.reason = servingv1alpha1.ReasonLoaderPending
			rep.message = fmt.Sprintf("The loader pod %s cannot start: %s.", newest.Name, problem)
		} else {
			rep.message = fmt.Sprintf("The loader pod %s is starting.", newest.Name)
		}
	case newest.Status.Phase == corev1.PodRunning:
		if o.latest != nil {
			applyPullEvent(p, *o.latest)
		}
		rep.message = pullingMessage(o.uri, o.claimName, p)
	default:
		// The newest pod ended, and the Job has not yet acted on it.
		code, text := podFailure(newest)
		rep.message = fmt.Sprintf("The loader pod %s failed (%s); the Job retries it.", newest.Name, failureSummary(code, text))
	}
	if failed := job.Status.Failed; failed > 0 && newest != nil && newest.Status.Phase != corev1.PodFailed {
		code, text := podFailure(lastPodIn(o.pods, corev1.PodFailed))
		rep.message += fmt.Sprintf(" This is attempt %d of %d; the last one failed (%s).", failed+1, o.backoffLimit+1, failureSummary(code, text))
	}
	return rep
}

// applyPullEvent copies a pull event's numbers into the progress. An "error" event carries
// none; it only ends the rate.
func applyPullEvent(p *servingv1alpha1.ModelCacheStatus, e PullEvent) {
	p.LastUpdateTime = &metav1.Time{Time: e.Time.UTC().Truncate(time.Second)}
	p.BytesPerSecond, p.ETASeconds = 0, 0
	if e.Event == "error" {
		return
	}
	p.BytesDone, p.BytesTotal, p.BytesDownloaded = e.Bytes, e.Total, e.Downloaded
	p.FilesDone, p.FilesTotal = int32(e.Files), int32(e.FilesTotal)
	p.Percent = 0
	if e.Total > 0 {
		p.Percent = int32(min(100, e.Bytes*100/e.Total))
	}
	if e.Event == "done" {
		p.Percent = 100
		return
	}
	p.BytesPerSecond, p.ETASeconds = int64(e.Rate+0.5), int64(e.ETA+0.5)
}

func pullingMessage(uri, claim string, p *servingv1alpha1.ModelCacheStatus) string {
	if p.BytesTotal == 0 {
		return fmt.Sprintf("Pulling %s into PersistentVolumeClaim %s: listing the model's files.", uri, claim)
	}
	msg := fmt.Sprintf("Pulling %s into PersistentVolumeClaim %s: %s of %s (%d%%), %d of %d files",
		uri, claim, humanBytes(p.BytesDone), humanBytes(p.BytesTotal), p.Percent, p.FilesDone, p.FilesTotal)
	if p.BytesPerSecond > 0 {
		msg += fmt.Sprintf(", %s/s", humanBytes(p.BytesPerSecond))
	}
	if p.ETASeconds > 0 {
		msg += fmt.Sprintf(", about %s left", (time.Duration(p.ETASeconds) * time.Second).String())
	}
	return msg + "."
}

// pullFailureReason maps a `moe pull` exit code to the ModelCached reason.
func pullFailureReason(code int) string {
	switch code {
	case pullExitUsage:
		return servingv1alpha1.ReasonInvalidSource
	case pullExitAuth:
		return servingv1alpha1.ReasonTokenRejected
	case pullExitNotFound:
		return servingv1alpha1.ReasonModelNotFound
	case pullExitChecksum:
		return servingv1alpha1.ReasonChecksumMismatch
	case pullExitUnavailable:
		return servingv1alpha1.ReasonSourceUnavailable
	case pullExitStorage:
		return servingv1alpha1.ReasonCacheStorageError
	}
	return servingv1alpha1.ReasonPullFailed
}

// pullFailureMessage says what failed and what the user does about it.
func pullFailureMessage(reason string, code int, text string, o cacheObservation, job *batchv1.Job) string {
	msg := "The model pull failed"
	if code != 0 {
		msg += fmt.Sprintf(" (exit code %d)", code)
	}
	if text != "" {
		msg += ": " + strings.TrimSuffix(text, ".")
	}
	msg += ". "
	retry := fmt.Sprintf("delete Job %s (kubectl delete job -n %s %s) to pull again", job.Name, o.namespace, job.Name)
	switch reason {
	case servingv1alpha1.ReasonTokenRejected:
		if o.tokenRef == nil {
			msg += "Set model.tokenSecretRef to a Secret key holding a Hugging Face token that can read the model; a new pull starts when the spec changes."
		} else {
			msg += fmt.Sprintf("Put a token that can read the model into key %s of Secret %s (gated repositories also need their conditions accepted on the model page), then %s.", o.tokenRef.Key, o.tokenRef.Name, retry)
		}
	case servingv1alpha1.ReasonModelNotFound:
		msg += "Fix model.uri (the repository, @revision or file), which starts a new pull, or " + retry + " once the source has it."
	case servingv1alpha1.ReasonChecksumMismatch:
		msg += "The bytes were refused. To try again, " + retry + "; if it recurs, a mirror (HF_ENDPOINT) or a proxy is altering the files."
	case servingv1alpha1.ReasonSourceUnavailable:
		msg += fmt.Sprintf("The Job gave up after %d attempts. To retry, %s (it resumes where it stopped), or set HF_ENDPOINT in engine.env to a mirror.", o.backoffLimit+1, retry)
	case servingv1alpha1.ReasonCacheStorageError:
		msg += fmt.Sprintf("PersistentVolumeClaim %s is full or not writable: grow model.cache.size, which starts a new pull, or check that group %d can write to the volume.", o.claimName, engineUID)
	case servingv1alpha1.ReasonInvalidSource:
		msg += "Fix model.uri."
	default:
		msg += fmt.Sprintf("See kubectl logs -n %s job/%s; then %s.", o.namespace, job.Name, retry)
	}
	return msg
}

// failureSummary is a short account of a failed attempt for progress messages.
func failureSummary(code int, text string) string {
	s := pullFailureReason(code)
	if code != 0 {
		s += fmt.Sprintf(", exit code %d", code)
	}
	if text != "" {
		s += ": " + strings.TrimSuffix(text, ".")
	}
	return s
}

// podFailure reads a failed loader pod's exit code and error: from the error event `moe
// pull` wrote as its termination message, else from the container's exit.
func podFailure(pod *corev1.Pod) (code int, text string) {
	t := loaderTerminated(pod)
	if t == nil {
		return 0, ""
	}
	code = int(t.ExitCode)
	if t.Reason != "Error" && t.Reason != "Completed" {
		text = t.Reason // OOMKilled, ContainerCannotRun, ...
	}
	if e, ok := ParsePullLog([]byte(t.Message)); ok && e.Event == "error" {
		if e.Code != 0 {
			code = e.Code
		}
		text = e.Error
	} else if msg := strings.TrimSpace(t.Message); msg != "" {
		text = lastLine(msg)
	}
	return code, text
}

// terminationEvent is the final event a finished loader pod wrote.
func terminationEvent(pod *corev1.Pod) (PullEvent, bool) {
	t := loaderTerminated(pod)
	if t == nil {
		return PullEvent{}, false
	}
	return ParsePullLog([]byte(t.Message))
}

func loaderTerminated(pod *corev1.Pod) *corev1.ContainerStateTerminated {
	if pod == nil {
		return nil
	}
	for _, c := range pod.Status.ContainerStatuses {
		if c.Name == loaderContainerName && c.State.Terminated != nil {
			return c.State.Terminated
		}
	}
	return nil
}

// lastPodIn is the newest pod in phase.
func lastPodIn(pods []corev1.Pod, phase corev1.PodPhase) *corev1.Pod {
	for i := range pods {
		if pods[i].Status.Phase == phase {
			return &pods[i]
		}
	}
	return nil
}

// pendingProblem says why a pending loader pod cannot start, or "" while it is merely
// starting: a container waiting on something other than its creation (an image pull
// failure, a missing token Secret), or no node to run on.
func pendingProblem(pod *corev1.Pod, claim *corev1.PersistentVolumeClaim) string {
	for _, c := range pod.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil && w.Reason != "" && w.Reason != "ContainerCreating" && w.Reason != "PodInitializing" {
			if w.Message != "" {
				return w.Reason + ": " + strings.TrimSuffix(w.Message, ".")
			}
			return w.Reason
		}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			msg := "it cannot be scheduled"
			if c.Message != "" {
				msg += " (" + strings.TrimSuffix(c.Message, ".") + ")"
			}
			if claim != nil && claim.Status.Phase == corev1.ClaimPending {
				msg += fmt.Sprintf("; PersistentVolumeClaim %s is Pending: check its events and storage class", claim.Name)
			}
			return msg
		}
	}
	return ""
}

func jobConditionTrue(job *batchv1.Job, t batchv1.JobConditionType) bool {
	for _, c := range job.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func jobConditionMessage(job *batchv1.Job, t batchv1.JobConditionType) string {
	for _, c := range job.Status.Conditions {
		if c.Type == t {
			if c.Message != "" {
				return c.Reason + ": " + c.Message
			}
			return c.Reason
		}
	}
	return ""
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[i+1:])
	}
	return s
}

// setModelCacheStatus sets (or, without spec.model.cache, removes) the ModelCached
// condition and status.modelCache. Without a plan this pass (no cache phase ran) both stay
// as they were.
func setModelCacheStatus(s *scope, set func(condType string, status metav1.ConditionStatus, reason, message string)) {
	st := &s.obj.Status
	switch {
	case s.obj.Spec.Model.Cache == nil:
		meta.RemoveStatusCondition(&st.Conditions, servingv1alpha1.ConditionModelCached)
		st.ModelCache = nil
	case s.cache != nil:
		rep := s.cache.report
		set(servingv1alpha1.ConditionModelCached, rep.status, rep.reason, rep.message)
		st.ModelCache = rep.progress.DeepCopy()
	}
}

// recordModelCacheEvents records a Normal event when the cache becomes complete and a
// Warning when the pull fails (once per distinct failure, not on every pass). The start
// of a pull is recorded when its Job is created.
func (r *MixtralDeploymentReconciler) recordModelCacheEvents(s *scope) {
	if r.Recorder == nil || s.cache == nil {
		return
	}
	prev := findCondition(s.before.Status.Conditions, servingv1alpha1.ConditionModelCached)
	cur := findCondition(s.obj.Status.Conditions, servingv1alpha1.ConditionModelCached)
	if cur == nil {
		return
	}
	unchanged := prev != nil && prev.Status == cur.Status && prev.Reason == cur.Reason && prev.Message == cur.Message
	switch {
	case s.cache.report.ready && (prev == nil || prev.Status != metav1.ConditionTrue):
		r.Recorder.Eventf(s.obj, nil, corev1.EventTypeNormal, servingv1alpha1.EventModelCached, "Pull", "%s", cur.Message)
	case s.cache.report.failed && !unchanged:
		r.Recorder.Eventf(s.obj, nil, corev1.EventTypeWarning, servingv1alpha1.EventModelPullFailed, "Pull", "%s", cur.Message)
	}
}
