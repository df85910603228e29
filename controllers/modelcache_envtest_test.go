package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	inferencev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	lwsv1 "sigs.k8s.io/lws/api/leaderworkerset/v1"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/engine/source"
)

// fedOutput is the envtest PullProgressSource: there is no kubelet, so a test says what each
// loader pod printed, as `moe pull --progress json` prints it.
type fedOutput struct {
	mu  sync.Mutex
	out map[types.NamespacedName][]byte
}

var fedPullOutput = &fedOutput{out: map[types.NamespacedName][]byte{}}

func (f *fedOutput) Tail(_ context.Context, pod *corev1.Pod) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out, ok := f.out[client.ObjectKeyFromObject(pod)]
	if !ok {
		return nil, fmt.Errorf("pod %s has no log", pod.Name)
	}
	return append([]byte(nil), out...), nil
}

// print appends events to a pod's output, encoded as `moe pull` encodes them.
func (f *fedOutput) print(pod *corev1.Pod, events ...source.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := client.ObjectKeyFromObject(pod)
	for _, e := range events {
		b, err := json.Marshal(e)
		if err != nil {
			panic(err)
		}
		f.out[key] = append(append(f.out[key], b...), '\n')
	}
}

const tinyHFURI = "hf://test/tiny-mixtral"

// cachedCPU is the tiny CPU sample pulled from hf:// into a 1Gi cache with a token.
func cachedCPU(t *testing.T, ns, name string) *servingv1alpha1.MixtralDeployment {
	obj := loadSample(t, cpuSample, ns)
	obj.Name = name
	obj.Spec.Model.URI = tinyHFURI
	obj.Spec.Model.TokenSecretRef = &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "hf-token"}, Key: "token"}
	obj.Spec.Model.Cache = &servingv1alpha1.ModelCacheSpec{Size: resource.MustParse("1Gi")}
	return obj
}

// loaderJob waits for the one loader Job of the MixtralDeployment (other than old) and
// returns it.
func loaderJob(t *testing.T, ns, name, old string) *batchv1.Job {
	t.Helper()
	var job *batchv1.Job
	eventually(t, func(g Gomega) {
		jobs := &batchv1.JobList{}
		g.Expect(k8sClient.List(context.Background(), jobs, client.InNamespace(ns), client.MatchingLabels{servingv1alpha1.LabelModelCache: name})).To(Succeed())
		var live []batchv1.Job
		for _, j := range jobs.Items {
			if j.Name != old && j.DeletionTimestamp.IsZero() {
				live = append(live, j)
			}
		}
		g.Expect(live).To(HaveLen(1))
		job = &live[0]
	})
	return job
}

// loaderPod creates the pod the Job controller would create for job.
func loaderPod(t *testing.T, job *batchv1.Job, suffix string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: job.Name + "-" + suffix, Namespace: job.Namespace, Labels: job.Spec.Template.Labels},
		Spec:       *job.Spec.Template.Spec.DeepCopy(),
	}
	NewWithT(t).Expect(k8sClient.Create(context.Background(), pod)).To(Succeed())
	return pod
}

// setPodStatus writes a loader pod's status as the kubelet would.
func setPodStatus(t *testing.T, pod *corev1.Pod, phase corev1.PodPhase, state corev1.ContainerState, conds ...corev1.PodCondition) {
	t.Helper()
	g := NewWithT(t)
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(pod), pod)).To(Succeed())
	pod.Status = corev1.PodStatus{Phase: phase, Conditions: conds}
	if state != (corev1.ContainerState{}) {
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
			Name: loaderContainerName, Image: pod.Spec.Containers[0].Image, ImageID: "sha256:0", State: state,
			Ready: state.Running != nil, Started: ptr.To(state.Running != nil),
		}}
	}
	g.Expect(k8sClient.Status().Update(context.Background(), pod)).To(Succeed())
}

// terminated is a finished pull container: its exit code and the final event as its
// termination message.
func terminated(code int32, final source.Event) corev1.ContainerState {
	b, _ := json.Marshal(final)
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: code, Reason: map[bool]string{true: "Completed", false: "Error"}[code == 0], Message: string(b),
		StartedAt: metav1.Now(), FinishedAt: metav1.Now(),
	}}
}

// finishJob writes the Job's final status as the Job controller would.
func finishJob(t *testing.T, job *batchv1.Job, complete bool) {
	t.Helper()
	g := NewWithT(t)
	g.Expect(k8sClient.Get(context.Background(), client.ObjectKeyFromObject(job), job)).To(Succeed())
	now := metav1.Now()
	start := metav1.NewTime(now.Add(-time.Minute))
	job.Status.StartTime = &start
	job.Status.Active = 0
	if complete {
		job.Status.Succeeded = 1
		job.Status.CompletionTime = &now
		job.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, Reason: "CompletionsReached", LastProbeTime: now, LastTransitionTime: now},
			{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, Reason: "CompletionsReached", LastProbeTime: now, LastTransitionTime: now},
		}
	} else {
		job.Status.Failed = 1
		msg := "Container pull for pod " + job.Namespace + "/" + job.Name + "-a failed with exit code 3 matching FailJob rule at index 0"
		job.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: "PodFailurePolicy", Message: msg, LastProbeTime: now, LastTransitionTime: now},
			{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: "PodFailurePolicy", Message: msg, LastProbeTime: now, LastTransitionTime: now},
		}
	}
	g.Expect(k8sClient.Status().Update(context.Background(), job)).To(Succeed())
}

func pullEvent(kind string, bytes, total int64, files int) source.Event {
	return source.Event{
		Time: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), Event: kind, URI: tinyHFURI,
		Bytes: bytes, Total: total, Downloaded: bytes, Files: files, FilesTotal: 4,
	}
}

// deleteWhenDone removes the MixtralDeployment after the test, so that a pull left running
// does not keep the manager polling.
func deleteWhenDone(t *testing.T, obj *servingv1alpha1.MixtralDeployment) {
	t.Cleanup(func() { _ = k8sClient.Delete(context.Background(), obj) })
}

// TestEnvtestModelCache follows a cached model from the spec to serving replicas: the
// claim and the loader Job appear, no replica starts while the pull runs, progress from
// the loader's lines reaches status, completion starts the replicas with the claim mounted
// read-only, a settled object is reconciled without writes, and a new URI pulls again
// while the running replicas stay as they are.
func TestEnvtestModelCache(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g := NewWithT(t)
	obj := cachedCPU(t, ns, "cached")
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	deleteWhenDone(t, obj)

	// The claim, owned by the MixtralDeployment (deleted with it: whenDeleted Delete).
	claim := &corev1.PersistentVolumeClaim{}
	eventually(t, func(g Gomega) { get(g, ns, "cached-model-cache", claim) })
	g.Expect(claim.Spec.AccessModes).To(Equal([]corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}))
	g.Expect(claim.Spec.Resources.Requests.Storage().String()).To(Equal("1Gi"))
	owner := metav1.GetControllerOf(claim)
	g.Expect(owner).NotTo(BeNil())
	g.Expect(owner.Name).To(Equal("cached"))
	g.Expect(*owner.BlockOwnerDeletion).To(BeTrue())

	// The loader Job.
	job := loaderJob(t, ns, "cached", "")
	g.Expect(metav1.IsControlledBy(job, obj)).To(BeTrue())
	c := job.Spec.Template.Spec.Containers[0]
	g.Expect(c.Args[:2]).To(Equal([]string{"pull", tinyHFURI}))
	g.Expect(flagValue(c.Args, "--dest")).To(Equal("/models/cache"))
	g.Expect(c.Env).To(ContainElement(HaveField("ValueFrom.SecretKeyRef.Name", "hf-token")))
	g.Expect(c.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "model-cache", MountPath: "/models/cache"}))
	g.Expect(job.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("PersistentVolumeClaim.ClaimName", "cached-model-cache")))
	g.Expect(job.Spec.Template.Labels).NotTo(HaveKey(servingv1alpha1.LabelMixtralDeployment))

	// No replica runs while the model is pulled; the Service is there already.
	eventually(t, func(g Gomega) {
		got := get(g, ns, "cached", &servingv1alpha1.MixtralDeployment{})
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		cached := condition(g, got, servingv1alpha1.ConditionModelCached)
		g.Expect(cached.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(cached.Reason).To(Equal(servingv1alpha1.ReasonPulling))
		g.Expect(condition(g, got, servingv1alpha1.ConditionAvailable).Reason).To(Equal(servingv1alpha1.ReasonModelNotCached))
		progressing := condition(g, got, servingv1alpha1.ConditionProgressing)
		g.Expect(progressing.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(progressing.Reason).To(Equal(servingv1alpha1.ReasonCachingModel))
		g.Expect(got.Status.ModelCache.ClaimName).To(Equal("cached-model-cache"))
		g.Expect(got.Status.ModelCache.JobName).To(Equal(job.Name))
		g.Expect(recordedEvents(g, ns, "cached")).To(ContainElement(And(
			HaveField("Reason", servingv1alpha1.EventModelPullStarted),
			HaveField("Note", ContainSubstring(job.Name)),
		)))
	})
	err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "cached"}, &appsv1.Deployment{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "no Deployment before the cache is complete: %v", err)
	get(g, ns, "cached", &corev1.Service{})

	// A loader pod that cannot be scheduled.
	pod := loaderPod(t, job, "a")
	setPodStatus(t, pod, corev1.PodPending, corev1.ContainerState{}, corev1.PodCondition{
		Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
		Message: "0/3 nodes are available: 3 Insufficient memory.", LastTransitionTime: metav1.Now(),
	})
	eventually(t, func(g Gomega) {
		cached := condition(g, get(g, ns, "cached", &servingv1alpha1.MixtralDeployment{}), servingv1alpha1.ConditionModelCached)
		g.Expect(cached.Reason).To(Equal(servingv1alpha1.ReasonLoaderPending))
		g.Expect(cached.Message).To(ContainSubstring("cannot be scheduled (0/3 nodes are available: 3 Insufficient memory)"))
	})

	// Running: the pull's lines are its progress.
	setPodStatus(t, pod, corev1.PodRunning, corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}})
	progress := pullEvent("progress", 300e6, 1e9, 1)
	progress.Rate, progress.ETA = 50e6, 14
	fedPullOutput.print(pod, pullEvent("start", 0, 1e9, 0), pullEvent("file", 200e6, 1e9, 1), progress)
	eventually(t, func(g Gomega) {
		got := get(g, ns, "cached", &servingv1alpha1.MixtralDeployment{})
		g.Expect(got.Status.ModelCache.LastUpdateTime).NotTo(BeNil())
		got.Status.ModelCache.LastUpdateTime.Time = got.Status.ModelCache.LastUpdateTime.UTC()
		g.Expect(got.Status.ModelCache).To(Equal(&servingv1alpha1.ModelCacheStatus{
			ClaimName: "cached-model-cache", JobName: job.Name,
			BytesDone: 300e6, BytesTotal: 1e9, Percent: 30, BytesDownloaded: 300e6, FilesDone: 1, FilesTotal: 4,
			BytesPerSecond: 50e6, ETASeconds: 14, LastUpdateTime: &metav1.Time{Time: progress.Time},
		}))
		cached := condition(g, got, servingv1alpha1.ConditionModelCached)
		g.Expect(cached.Reason).To(Equal(servingv1alpha1.ReasonPulling))
		g.Expect(cached.Message).To(Equal("Pulling hf://test/tiny-mixtral into PersistentVolumeClaim cached-model-cache: 300.0 MB of 1.0 GB (30%), 1 of 4 files, 50.0 MB/s, about 14s left."))
	})
	later := pullEvent("progress", 900e6, 1e9, 3)
	later.Time = later.Time.Add(10 * time.Second)
	fedPullOutput.print(pod, later)
	eventually(t, func(g Gomega) {
		g.Expect(get(g, ns, "cached", &servingv1alpha1.MixtralDeployment{}).Status.ModelCache.Percent).To(Equal(int32(90)))
	})

	// Complete: replicas start with the claim read-only and open the model from it.
	done := pullEvent("done", 1e9, 1e9, 4)
	done.Path = "/models/cache/hf/test/tiny-mixtral/main"
	fedPullOutput.print(pod, done)
	setPodStatus(t, pod, corev1.PodSucceeded, terminated(0, done))
	finishJob(t, job, true)
	var d *appsv1.Deployment
	eventually(t, func(g Gomega) {
		got := get(g, ns, "cached", &servingv1alpha1.MixtralDeployment{})
		cached := condition(g, got, servingv1alpha1.ConditionModelCached)
		g.Expect(cached.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(cached.Reason).To(Equal(servingv1alpha1.ReasonCached))
		g.Expect(cached.Message).To(Equal("hf://test/tiny-mixtral is cached in PersistentVolumeClaim cached-model-cache: 1.0 GB in 4 files, 1.0 GB of it downloaded by Job " + job.Name + "."))
		g.Expect(got.Status.ModelCache.Percent).To(Equal(int32(100)))
		g.Expect(got.Status.ModelCache.BytesPerSecond).To(BeZero())
		d = get(g, ns, "cached", &appsv1.Deployment{})
		g.Expect(recordedEvents(g, ns, "cached")).To(ContainElement(And(
			HaveField("Type", corev1.EventTypeNormal), HaveField("Reason", servingv1alpha1.EventModelCached),
		)))
	})
	g.Expect(*d.Spec.Replicas).To(Equal(int32(1)))
	engine := engineContainer(d)
	g.Expect(flagValue(engine.Args, "--model")).To(Equal(tinyHFURI))
	g.Expect(flagValue(engine.Args, "--model-cache")).To(Equal("/models/cache"))
	g.Expect(engine.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "model-cache", MountPath: "/models/cache", ReadOnly: true}))
	g.Expect(engine.Env).NotTo(ContainElement(HaveField("Name", "HF_TOKEN")))
	g.Expect(d.Spec.Template.Spec.Volumes).To(ContainElement(corev1.Volume{Name: "model-cache", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "cached-model-cache", ReadOnly: true},
	}}))

	// Settled: a further pass sends no write.
	t.Run("a second reconcile writes nothing", func(t *testing.T) {
		expectNoWrites(t, ns, "cached")
	})

	// A new revision: a new Job pulls it, the old Job goes, and the running replicas keep
	// their template until the new pull completes.
	hash := d.Spec.Template.Labels[servingv1alpha1.LabelTemplateHash]
	got := get(g, ns, "cached", &servingv1alpha1.MixtralDeployment{})
	patch := client.MergeFrom(got.DeepCopy())
	got.Spec.Model.URI = tinyHFURI + "@v2"
	g.Expect(k8sClient.Patch(ctx, got, patch)).To(Succeed())
	next := loaderJob(t, ns, "cached", job.Name)
	g.Expect(next.Spec.Template.Spec.Containers[0].Args[1]).To(Equal(tinyHFURI + "@v2"))
	eventually(t, func(g Gomega) {
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(job), &batchv1.Job{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "the old loader Job is deleted: %v", err)
		got := get(g, ns, "cached", &servingv1alpha1.MixtralDeployment{})
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		g.Expect(condition(g, got, servingv1alpha1.ConditionModelCached).Reason).To(Equal(servingv1alpha1.ReasonPulling))
		g.Expect(got.Status.ModelCache.JobName).To(Equal(next.Name))
		g.Expect(got.Status.ModelCache.Percent).To(BeZero(), "a new pull starts from its own numbers")
	})
	g.Expect(get(g, ns, "cached", &appsv1.Deployment{}).Spec.Template.Labels[servingv1alpha1.LabelTemplateHash]).To(Equal(hash))
	finishJob(t, next, true)
	eventually(t, func(g Gomega) {
		d := get(g, ns, "cached", &appsv1.Deployment{})
		g.Expect(flagValue(engineContainer(d).Args, "--model")).To(Equal(tinyHFURI + "@v2"))
		got := get(g, ns, "cached", &servingv1alpha1.MixtralDeployment{})
		g.Expect(condition(g, got, servingv1alpha1.ConditionModelCached).Message).To(Equal(
			"hf://test/tiny-mixtral@v2 is cached in PersistentVolumeClaim cached-model-cache (Job " + next.Name + " completed)."))
	})
}

// expectNoWrites reconciles the settled MixtralDeployment name twice through a client that
// records every write, and expects none.
func expectNoWrites(t *testing.T, ns, name string) {
	t.Helper()
	g := NewWithT(t)
	counting, writes := writeRecordingClient(g)
	r := &MixtralDeploymentReconciler{Client: counting, EngineImage: envtestImage, EngineGPUImage: envtestGPUImage, Progress: fedPullOutput, PodReader: counting}
	// The manager may still be finishing its own pass; wait until a pass finds nothing to do.
	eventually(t, func(g Gomega) {
		*writes = nil
		_, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(*writes).To(BeEmpty())
	})
	for range 2 {
		res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(res).To(Equal(ctrl.Result{}), "a cached model needs no polling")
		g.Expect(*writes).To(BeEmpty(), "a pass over a settled object sends no write")
	}
}

// TestEnvtestModelCacheFailure: a pull the source refuses fails the Job at once; the
// condition names the cause and the fix, Degraded says so, a Warning event is recorded once,
// no replica starts, and nothing is retried until the Job is deleted.
func TestEnvtestModelCacheFailure(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g := NewWithT(t)
	// An accelerator no other reconciled test uses, so that its planner calls count this
	// object's passes alone.
	obj := loadSample(t, h100Sample, ns)
	obj.Name = "refused"
	obj.Spec.Accelerator.Type = servingv1alpha1.AcceleratorL40S
	obj.Spec.Targets = servingv1alpha1.TargetsSpec{}
	obj.Spec.Model.Cache = &servingv1alpha1.ModelCacheSpec{Size: resource.MustParse("200Gi")}
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	deleteWhenDone(t, obj)
	job := loaderJob(t, ns, "refused", "")

	pod := loaderPod(t, job, "a")
	fail := source.Event{
		Time: time.Now().UTC(), Event: "error", URI: "hf://mistralai/Mixtral-8x7B-Instruct-v0.1", Code: source.ExitAuth,
		Error: "hf://mistralai/Mixtral-8x7B-Instruct-v0.1: 401 Unauthorized — the token in HF_TOKEN (or spec.model.tokenSecretRef) was rejected: it is invalid or expired, or the repository does not exist",
	}
	setPodStatus(t, pod, corev1.PodFailed, terminated(int32(source.ExitAuth), fail))
	finishJob(t, job, false)

	var cached metav1.Condition
	eventually(t, func(g Gomega) {
		got := get(g, ns, "refused", &servingv1alpha1.MixtralDeployment{})
		cached = condition(g, got, servingv1alpha1.ConditionModelCached)
		g.Expect(cached.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(cached.Reason).To(Equal(servingv1alpha1.ReasonTokenRejected))
		degraded := condition(g, got, servingv1alpha1.ConditionDegraded)
		g.Expect(degraded.Status).To(Equal(metav1.ConditionTrue))
		g.Expect(degraded.Reason).To(Equal(servingv1alpha1.ReasonModelCacheFailed))
		g.Expect(condition(g, got, servingv1alpha1.ConditionProgressing).Reason).To(Equal(servingv1alpha1.ReasonModelNotCached))
		g.Expect(condition(g, got, servingv1alpha1.ConditionAvailable).Reason).To(Equal(servingv1alpha1.ReasonModelNotCached))
	})
	g.Expect(cached.Message).To(Equal("The model pull failed (exit code 3): " + fail.Error +
		". Put a token that can read the model into key token of Secret hf-token (gated repositories also need their conditions accepted on the model page), then delete Job " +
		job.Name + " (kubectl delete job -n " + ns + " " + job.Name + ") to pull again."))
	eventually(t, func(g Gomega) {
		g.Expect(recordedEvents(g, ns, "refused")).To(ContainElement(And(
			HaveField("Type", corev1.EventTypeWarning), HaveField("Reason", servingv1alpha1.EventModelPullFailed), HaveField("Note", cached.Message),
		)))
	})
	err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "refused"}, &appsv1.Deployment{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue())

	t.Run("is not retried", func(t *testing.T) {
		g := NewWithT(t)
		calls := solveCount("l40s")
		rv := get(g, ns, "refused", &servingv1alpha1.MixtralDeployment{}).ResourceVersion
		g.Consistently(func(g Gomega) {
			g.Expect(solveCount("l40s")).To(Equal(calls))
			g.Expect(get(g, ns, "refused", &servingv1alpha1.MixtralDeployment{}).ResourceVersion).To(Equal(rv))
		}).WithTimeout(2 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
		events := 0
		for _, e := range recordedEvents(g, ns, "refused") {
			if e.Reason == servingv1alpha1.EventModelPullFailed {
				events++
			}
		}
		g.Expect(events).To(Equal(1))
	})

	t.Run("deleting the Job pulls again", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(k8sClient.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))).To(Succeed())
		eventually(t, func(g Gomega) {
			again := get(g, ns, job.Name, &batchv1.Job{})
			g.Expect(again.UID).NotTo(Equal(job.UID))
			g.Expect(condition(g, get(g, ns, "refused", &servingv1alpha1.MixtralDeployment{}), servingv1alpha1.ConditionModelCached).Reason).
				To(Equal(servingv1alpha1.ReasonPulling))
		})
	})
}

// TestEnvtestModelCacheRetention: whenDeleted Retain leaves the claim without an owner, so
// it outlives the MixtralDeployment and is taken over by the next one of that name; Delete
// gives it a controller reference (the garbage collector, which envtest lacks, then
// deletes it with the MixtralDeployment); removing model.cache removes the Jobs and a
// claim that is not retained. A claim of the name that is not the operator's is left alone,
// and a retained claim that no longer matches the spec is reported.
func TestEnvtestModelCacheRetention(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	g := NewWithT(t)

	obj := cachedCPU(t, ns, "kept")
	obj.Spec.Model.Cache.WhenDeleted = servingv1alpha1.CacheRetain
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	loaderJob(t, ns, "kept", "")
	claim := get(g, ns, "kept-model-cache", &corev1.PersistentVolumeClaim{})
	g.Expect(claim.OwnerReferences).To(BeEmpty(), "a retained claim has no owner")
	g.Expect(claim.Labels).To(HaveKeyWithValue(servingv1alpha1.LabelModelCache, "kept"))
	g.Expect(claim.Annotations).To(HaveKeyWithValue(servingv1alpha1.AnnotationRetainedBy, ns+"/kept"), "it names who retained it")

	g.Expect(k8sClient.Delete(ctx, obj)).To(Succeed())
	eventually(t, func(g Gomega) {
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), &servingv1alpha1.MixtralDeployment{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
	})
	collectGarbage(t, ns, obj.UID)
	get(g, ns, "kept-model-cache", &corev1.PersistentVolumeClaim{})

	// Created again: the claim is taken over, with the Delete policy this time.
	obj = cachedCPU(t, ns, "kept")
	g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
	deleteWhenDone(t, obj)
	eventually(t, func(g Gomega) {
		claim := get(g, ns, "kept-model-cache", &corev1.PersistentVolumeClaim{})
		owner := metav1.GetControllerOf(claim)
		g.Expect(owner).NotTo(BeNil())
		g.Expect(owner.UID).To(Equal(obj.UID))
		got := get(g, ns, "kept", &servingv1alpha1.MixtralDeployment{})
		g.Expect(condition(g, got, servingv1alpha1.ConditionDegraded).Status).To(Equal(metav1.ConditionFalse))
		g.Expect(condition(g, got, servingv1alpha1.ConditionModelCached).Reason).To(Equal(servingv1alpha1.ReasonPulling))
	})
	job := loaderJob(t, ns, "kept", "")

	// Switched to Retain: the owner reference goes.
	got := get(g, ns, "kept", &servingv1alpha1.MixtralDeployment{})
	patch := client.MergeFrom(got.DeepCopy())
	got.Spec.Model.Cache.WhenDeleted = servingv1alpha1.CacheRetain
	g.Expect(k8sClient.Patch(ctx, got, patch)).To(Succeed())
	eventually(t, func(g Gomega) {
		g.Expect(get(g, ns, "kept-model-cache", &corev1.PersistentVolumeClaim{}).OwnerReferences).To(BeEmpty())
	})
	g.Expect(get(g, ns, job.Name, &batchv1.Job{}).UID).To(Equal(job.UID), "the retention policy is no part of the pull")

	// model.cache removed while retained: the Job goes, the claim stays, the condition too.
	got = get(g, ns, "kept", &servingv1alpha1.MixtralDeployment{})
	patch = client.MergeFrom(got.DeepCopy())
	got.Spec.Model.Cache = nil
	g.Expect(k8sClient.Patch(ctx, got, patch)).To(Succeed())
	eventually(t, func(g Gomega) {
		err := k8sClient.Get(ctx, client.ObjectKeyFromObject(job), &batchv1.Job{})
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue())
		got := get(g, ns, "kept", &servingv1alpha1.MixtralDeployment{})
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		g.Expect(got.Status.ModelCache).To(BeNil())
		g.Expect(findCondition(got.Status.Conditions, servingv1alpha1.ConditionModelCached)).To(BeNil())
		d := get(g, ns, "kept", &appsv1.Deployment{})
		g.Expect(d.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("EmptyDir", Not(BeNil()))), "replicas download again, each into its own emptyDir")
	})
	get(g, ns, "kept-model-cache", &corev1.PersistentVolumeClaim{})

	// Back with a ReadWriteMany cache: the retained ReadWriteOnce claim does not match.
	got = get(g, ns, "kept", &servingv1alpha1.MixtralDeployment{})
	patch = client.MergeFrom(got.DeepCopy())
	got.Spec.Model.Cache = &servingv1alpha1.ModelCacheSpec{Size: resource.MustParse("1Gi"), AccessMode: corev1.ReadWriteMany}
	g.Expect(k8sClient.Patch(ctx, got, patch)).To(Succeed())
	eventually(t, func(g Gomega) {
		got := get(g, ns, "kept", &servingv1alpha1.MixtralDeployment{})
		cached := condition(g, got, servingv1alpha1.ConditionModelCached)
		g.Expect(cached.Reason).To(Equal(servingv1alpha1.ReasonCacheClaimMismatch))
		g.Expect(cached.Message).To(Equal("PersistentVolumeClaim kept-model-cache has access modes [ReadWriteOnce], not ReadWriteMany, which a claim cannot change. Delete it (kubectl delete pvc -n " + ns + " kept-model-cache) and the operator creates it as model.cache says, then pulls the model again."))
		g.Expect(condition(g, got, servingv1alpha1.ConditionDegraded).Reason).To(Equal(servingv1alpha1.ReasonModelCacheFailed))
	})

	// The user deletes the claim, as the message says. While it is going (pods using it
	// hold it), the pull waits; then a claim as specified is created.
	claim = get(g, ns, "kept-model-cache", &corev1.PersistentVolumeClaim{})
	g.Expect(k8sClient.Delete(ctx, claim)).To(Succeed())
	claim = get(g, ns, "kept-model-cache", &corev1.PersistentVolumeClaim{})
	if len(claim.Finalizers) > 0 {
		eventually(t, func(g Gomega) {
			cached := condition(g, get(g, ns, "kept", &servingv1alpha1.MixtralDeployment{}), servingv1alpha1.ConditionModelCached)
			g.Expect(cached.Reason).To(Equal(servingv1alpha1.ReasonLoaderPending))
			g.Expect(cached.Message).To(Equal("PersistentVolumeClaim kept-model-cache is being deleted (pods that still use it hold it); a new one is created once it is gone."))
		})
		// The claim-protection controller lifts its finalizer once no pod uses the claim.
		claim.Finalizers = nil
		g.Expect(k8sClient.Update(ctx, claim)).To(Succeed())
	}
	eventually(t, func(g Gomega) {
		claim := get(g, ns, "kept-model-cache", &corev1.PersistentVolumeClaim{})
		g.Expect(claim.Spec.AccessModes).To(Equal([]corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}))
		g.Expect(metav1.GetControllerOf(claim)).NotTo(BeNil())
		cached := condition(g, get(g, ns, "kept", &servingv1alpha1.MixtralDeployment{}), servingv1alpha1.ConditionModelCached)
		g.Expect(cached.Reason).To(Equal(servingv1alpha1.ReasonPulling))
	})

	// Removed with the Delete policy: the claim is deleted too (its protection finalizer
	// keeps it while pods use it).
	got = get(g, ns, "kept", &servingv1alpha1.MixtralDeployment{})
	patch = client.MergeFrom(got.DeepCopy())
	got.Spec.Model.Cache = nil
	g.Expect(k8sClient.Patch(ctx, got, patch)).To(Succeed())
	eventually(t, func(g Gomega) {
		claim := &corev1.PersistentVolumeClaim{}
		err := k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: "kept-model-cache"}, claim)
		g.Expect(apierrors.IsNotFound(err) || !claim.DeletionTimestamp.IsZero()).To(BeTrue(), "the claim is deleted")
	})

	t.Run("a claim that is not the operator's", func(t *testing.T) {
		g := NewWithT(t)
		foreign := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "other-model-cache", Namespace: ns},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		}
		g.Expect(k8sClient.Create(ctx, foreign)).To(Succeed())
		obj := cachedCPU(t, ns, "other")
		g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		deleteWhenDone(t, obj)
		eventually(t, func(g Gomega) {
			degraded := condition(g, get(g, ns, "other", &servingv1alpha1.MixtralDeployment{}), servingv1alpha1.ConditionDegraded)
			g.Expect(degraded.Reason).To(Equal(servingv1alpha1.ReasonChildConflict))
			g.Expect(degraded.Message).To(ContainSubstring(`PersistentVolumeClaim named "other-model-cache"`))
		})
		g.Expect(get(g, ns, "other-model-cache", &corev1.PersistentVolumeClaim{}).OwnerReferences).To(BeEmpty())
	})
}

// collectGarbage does what the garbage collector (absent from envtest) does once an owner
// is deleted: it deletes the objects in ns that owner controls.
func collectGarbage(t *testing.T, ns string, owner types.UID) {
	t.Helper()
	g := NewWithT(t)
	lists := []client.ObjectList{&appsv1.DeploymentList{}, &corev1.ServiceList{}, &policyv1.PodDisruptionBudgetList{}, &batchv1.JobList{}, &corev1.PersistentVolumeClaimList{},
		&lwsv1.LeaderWorkerSetList{}, &inferencev1.InferencePoolList{}}
	for _, list := range lists {
		if err := k8sClient.List(context.Background(), list, client.InNamespace(ns)); meta.IsNoMatchError(err) {
			continue // a CRD another test installs, not installed yet
		} else {
			g.Expect(err).NotTo(HaveOccurred())
		}
		g.Expect(meta.EachListItem(list, func(o runtime.Object) error {
			obj := o.(client.Object)
			if c := metav1.GetControllerOf(obj); c != nil && c.UID == owner {
				return client.IgnoreNotFound(k8sClient.Delete(context.Background(), obj, client.PropagationPolicy(metav1.DeletePropagationBackground)))
			}
			return nil
		})).To(Succeed())
	}
}

// userClaim creates an unowned claim in ns, as a user (or an earlier operator that set
// only labels) would.
func userClaim(t *testing.T, ns, name string, labels, annotations map[string]string) *corev1.PersistentVolumeClaim {
	t.Helper()
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: annotations},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	NewWithT(t).Expect(k8sClient.Create(context.Background(), claim)).To(Succeed())
	return claim
}

// TestEnvtestModelCacheAdoption: an unowned claim is taken over only when its retained-by
// annotation names this MixtralDeployment, or when model.cache.claimName names it; a label
// alone is not enough. A claim handed over by name is used but never owned, changed or
// deleted, and nothing the operator does not control (claims, loader Jobs) is deleted when
// model.cache goes.
func TestEnvtestModelCacheAdoption(t *testing.T) {
	requireEnvtest(t)
	ctx := context.Background()
	ns := newNamespace(t)
	cacheLabel := func(name string) map[string]string { return map[string]string{servingv1alpha1.LabelModelCache: name} }

	t.Run("a labelled claim without the annotation is not taken over", func(t *testing.T) {
		g := NewWithT(t)
		before := userClaim(t, ns, "labelled-model-cache", cacheLabel("labelled"), nil)
		obj := cachedCPU(t, ns, "labelled")
		g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		deleteWhenDone(t, obj)
		eventually(t, func(g Gomega) {
			degraded := condition(g, get(g, ns, "labelled", &servingv1alpha1.MixtralDeployment{}), servingv1alpha1.ConditionDegraded)
			g.Expect(degraded.Reason).To(Equal(servingv1alpha1.ReasonChildConflict))
			g.Expect(degraded.Message).To(ContainSubstring("set model.cache.claimName: labelled-model-cache"))
			g.Expect(degraded.Message).To(ContainSubstring("kubectl annotate pvc -n " + ns + " labelled-model-cache serving.moe-operator.io/retained-by=" + ns + "/labelled"))
		})
		after := get(g, ns, "labelled-model-cache", &corev1.PersistentVolumeClaim{})
		g.Expect(after.ResourceVersion).To(Equal(before.ResourceVersion), "the claim is not touched")
	})

	t.Run("a claim retained by another MixtralDeployment is not taken over", func(t *testing.T) {
		g := NewWithT(t)
		userClaim(t, ns, "heir-model-cache", cacheLabel("heir"), map[string]string{servingv1alpha1.AnnotationRetainedBy: "elsewhere/heir"})
		obj := cachedCPU(t, ns, "heir")
		g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		deleteWhenDone(t, obj)
		eventually(t, func(g Gomega) {
			degraded := condition(g, get(g, ns, "heir", &servingv1alpha1.MixtralDeployment{}), servingv1alpha1.ConditionDegraded)
			g.Expect(degraded.Reason).To(Equal(servingv1alpha1.ReasonChildConflict))
		})
		g.Expect(metav1.GetControllerOf(get(g, ns, "heir-model-cache", &corev1.PersistentVolumeClaim{}))).To(BeNil())
	})

	t.Run("a claim retained for this name is taken over", func(t *testing.T) {
		g := NewWithT(t)
		userClaim(t, ns, "back-model-cache", cacheLabel("back"), map[string]string{servingv1alpha1.AnnotationRetainedBy: ns + "/back"})
		obj := cachedCPU(t, ns, "back")
		obj.Spec.Model.Cache.WhenDeleted = servingv1alpha1.CacheRetain
		g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		deleteWhenDone(t, obj)
		job := loaderJob(t, ns, "back", "")
		g.Expect(job.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("PersistentVolumeClaim.ClaimName", "back-model-cache")))
		claim := get(g, ns, "back-model-cache", &corev1.PersistentVolumeClaim{})
		g.Expect(claim.OwnerReferences).To(BeEmpty(), "still retained")
	})

	t.Run("a claim named in claimName is used, never owned, changed or deleted", func(t *testing.T) {
		g := NewWithT(t)
		before := userClaim(t, ns, "shared-models", map[string]string{"team": "ml"}, nil)
		obj := cachedCPU(t, ns, "named")
		obj.Spec.Model.Cache.ClaimName = "shared-models"
		obj.Spec.Model.Cache.Size = resource.MustParse("2Gi") // bigger than the claim: not applied to a claim that is the user's
		g.Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		deleteWhenDone(t, obj)
		job := loaderJob(t, ns, "named", "")
		g.Expect(job.Spec.Template.Spec.Volumes).To(ContainElement(HaveField("PersistentVolumeClaim.ClaimName", "shared-models")))
		eventually(t, func(g Gomega) {
			got := get(g, ns, "named", &servingv1alpha1.MixtralDeployment{})
			g.Expect(got.Status.ModelCache).NotTo(BeNil())
			g.Expect(got.Status.ModelCache.ClaimName).To(Equal("shared-models"))
			g.Expect(condition(g, got, servingv1alpha1.ConditionDegraded).Status).To(Equal(metav1.ConditionFalse))
		})
		g.Expect(get(g, ns, "shared-models", &corev1.PersistentVolumeClaim{}).ResourceVersion).To(Equal(before.ResourceVersion))
		_, err := getClaim(ns, "named-model-cache")
		g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "no claim of the default name is made")

		// A Job the operator does not control, with the loader's label, survives too.
		stray := job.DeepCopy()
		stray.ObjectMeta = metav1.ObjectMeta{Name: "named-pull-by-hand", Namespace: ns, Labels: job.Labels}
		stray.Spec.Selector = nil
		stray.Spec.ManualSelector = nil
		delete(stray.Spec.Template.Labels, "batch.kubernetes.io/controller-uid")
		delete(stray.Spec.Template.Labels, "controller-uid")
		delete(stray.Spec.Template.Labels, "batch.kubernetes.io/job-name")
		delete(stray.Spec.Template.Labels, "job-name")
		g.Expect(k8sClient.Create(ctx, stray)).To(Succeed())

		got := get(g, ns, "named", &servingv1alpha1.MixtralDeployment{})
		patch := client.MergeFrom(got.DeepCopy())
		got.Spec.Model.Cache = nil
		g.Expect(k8sClient.Patch(ctx, got, patch)).To(Succeed())
		eventually(t, func(g Gomega) {
			err := k8sClient.Get(ctx, client.ObjectKeyFromObject(job), &batchv1.Job{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "its own loader Job goes")
			got := get(g, ns, "named", &servingv1alpha1.MixtralDeployment{})
			g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
		})
		claim := get(g, ns, "shared-models", &corev1.PersistentVolumeClaim{})
		g.Expect(claim.DeletionTimestamp.IsZero()).To(BeTrue(), "the user's claim is not deleted")
		g.Expect(claim.ResourceVersion).To(Equal(before.ResourceVersion))
		g.Expect(get(g, ns, "named-pull-by-hand", &batchv1.Job{}).DeletionTimestamp.IsZero()).To(BeTrue(), "a Job it does not control is not deleted")

		// Deleted: the garbage collector takes only what the object controlled.
		g.Expect(k8sClient.Delete(ctx, got)).To(Succeed())
		collectGarbage(t, ns, got.UID)
		get(g, ns, "shared-models", &corev1.PersistentVolumeClaim{})
	})
}

func getClaim(ns, name string) (*corev1.PersistentVolumeClaim, error) {
	claim := &corev1.PersistentVolumeClaim{}
	return claim, k8sClient.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, claim)
}
