package controllers

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

var assessTime = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func testJob(conds ...batchv1.JobConditionType) *batchv1.Job {
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "chat-pull-abc", Namespace: "team-a"}}
	for _, c := range conds {
		job.Status.Conditions = append(job.Status.Conditions, batchv1.JobCondition{Type: c, Status: corev1.ConditionTrue, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit"})
	}
	return job
}

func testPod(name string, age int, phase corev1.PodPhase) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(assessTime.Add(time.Duration(age) * time.Minute))},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

// ended gives a pod's pull container a termination: an exit code and a message (an event
// as JSON, or any text).
func ended(p corev1.Pod, code int32, message string) corev1.Pod {
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: loaderContainerName, State: corev1.ContainerState{
		Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: "Error", Message: message},
	}}}
	return p
}

func eventJSON(e PullEvent) string {
	b, _ := json.Marshal(e)
	return string(b)
}

func errorEvent(code int, text string) string {
	return eventJSON(PullEvent{Time: assessTime, Event: "error", URI: "hf://org/repo", Code: code, Error: text})
}

func observation(job *batchv1.Job, pods ...corev1.Pod) cacheObservation {
	return cacheObservation{
		uri: "hf://org/repo", claimName: "chat-model-cache", namespace: "team-a", backoffLimit: 3,
		tokenRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "hf-token"}, Key: "token"},
		job:      job, pods: pods,
	}
}

func TestAssessCache(t *testing.T) {
	retry := "delete Job chat-pull-abc (kubectl delete job -n team-a chat-pull-abc) to pull again"
	tests := []struct {
		name        string
		obs         cacheObservation
		wantStatus  metav1.ConditionStatus
		wantReason  string
		wantMessage string
		ready       bool
		failed      bool
	}{
		{
			name:        "a Job without a pod yet is starting",
			obs:         observation(testJob()),
			wantReason:  servingv1alpha1.ReasonPulling,
			wantMessage: "Job chat-pull-abc is creating the loader pod.",
		},
		{
			name:        "a pending pod on its way is starting",
			obs:         observation(testJob(), testPod("p1", 0, corev1.PodPending)),
			wantReason:  servingv1alpha1.ReasonPulling,
			wantMessage: "The loader pod p1 is starting.",
		},
		{
			name: "a missing token Secret keeps the pod from starting",
			obs: func() cacheObservation {
				p := testPod("p1", 0, corev1.PodPending)
				p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "pull", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
					Reason: "CreateContainerConfigError", Message: `secret "hf-token" not found`,
				}}}}
				return observation(testJob(), p)
			}(),
			wantReason:  servingv1alpha1.ReasonLoaderPending,
			wantMessage: `The loader pod p1 cannot start: CreateContainerConfigError: secret "hf-token" not found.`,
		},
		{
			name: "an unschedulable pod with an unbound claim",
			obs: func() cacheObservation {
				p := testPod("p1", 0, corev1.PodPending)
				p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Message: "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims."}}
				o := observation(testJob(), p)
				o.claim = &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "chat-model-cache"}, Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending}}
				return o
			}(),
			wantReason:  servingv1alpha1.ReasonLoaderPending,
			wantMessage: "The loader pod p1 cannot start: it cannot be scheduled (0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims); PersistentVolumeClaim chat-model-cache is Pending: check its events and storage class.",
		},
		{
			name:        "a running pod that has printed nothing yet is listing files",
			obs:         observation(testJob(), testPod("p1", 0, corev1.PodRunning)),
			wantReason:  servingv1alpha1.ReasonPulling,
			wantMessage: "Pulling hf://org/repo into PersistentVolumeClaim chat-model-cache: listing the model's files.",
		},
		{
			name: "a running pod's last line is the progress",
			obs: func() cacheObservation {
				o := observation(testJob(), testPod("p1", 0, corev1.PodRunning))
				o.latest = &PullEvent{Time: assessTime, Event: "progress", Bytes: 47e9, Total: 94e9, Downloaded: 40e9, Files: 9, FilesTotal: 23, Rate: 312.6e6, ETA: 150.4}
				return o
			}(),
			wantReason:  servingv1alpha1.ReasonPulling,
			wantMessage: "Pulling hf://org/repo into PersistentVolumeClaim chat-model-cache: 47.0 GB of 94.0 GB (50%), 9 of 23 files, 312.6 MB/s, about 2m30s left.",
		},
		{
			name: "a retry after a failed attempt says so",
			obs: func() cacheObservation {
				job := testJob()
				job.Status.Failed = 1
				o := observation(job, testPod("p2", 1, corev1.PodRunning),
					ended(testPod("p1", 0, corev1.PodFailed), 6, errorEvent(6, "hf://org/repo (model-00001.safetensors): 503 Service Unavailable — the server kept failing")))
				return o
			}(),
			wantReason: servingv1alpha1.ReasonPulling,
			wantMessage: "Pulling hf://org/repo into PersistentVolumeClaim chat-model-cache: listing the model's files. " +
				"This is attempt 2 of 4; the last one failed (SourceUnavailable, exit code 6: hf://org/repo (model-00001.safetensors): 503 Service Unavailable — the server kept failing).",
		},
		{
			name:        "a failed pod the Job has not replaced yet",
			obs:         observation(testJob(), ended(testPod("p1", 0, corev1.PodFailed), 1, "panic: boom\ngoroutine 1 [running]:")),
			wantReason:  servingv1alpha1.ReasonPulling,
			wantMessage: "The loader pod p1 failed (PullFailed, exit code 1: goroutine 1 [running]:); the Job retries it.",
		},
		{
			name: "a completed Job: the done line gives the totals",
			obs: observation(testJob(batchv1.JobSuccessCriteriaMet, batchv1.JobComplete),
				ended(testPod("p1", 0, corev1.PodSucceeded), 0, eventJSON(PullEvent{Time: assessTime, Event: "done", Bytes: 94e9, Total: 94e9, Downloaded: 12e9, Files: 23, FilesTotal: 23, Rate: 1e8}))),
			wantStatus:  metav1.ConditionTrue,
			wantReason:  servingv1alpha1.ReasonCached,
			wantMessage: "hf://org/repo is cached in PersistentVolumeClaim chat-model-cache: 94.0 GB in 23 files, 12.0 GB of it downloaded by Job chat-pull-abc.",
			ready:       true,
		},
		{
			name:        "a completed Job whose pods are gone",
			obs:         observation(testJob(batchv1.JobComplete)),
			wantStatus:  metav1.ConditionTrue,
			wantReason:  servingv1alpha1.ReasonCached,
			wantMessage: "hf://org/repo is cached in PersistentVolumeClaim chat-model-cache (Job chat-pull-abc completed).",
			ready:       true,
		},
		{
			name:       "exit 2: the URI is refused",
			obs:        observation(testJob(batchv1.JobFailed), ended(testPod("p1", 0, corev1.PodFailed), 2, errorEvent(2, "source: invalid model URI"))),
			wantReason: servingv1alpha1.ReasonInvalidSource, failed: true,
			wantMessage: "The model pull failed (exit code 2): source: invalid model URI. Fix model.uri.",
		},
		{
			name:       "exit 3: the token is rejected",
			obs:        observation(testJob(batchv1.JobFailed), ended(testPod("p1", 0, corev1.PodFailed), 3, errorEvent(3, "hf://org/repo: 403 Forbidden — org/repo is gated: accept its conditions"))),
			wantReason: servingv1alpha1.ReasonTokenRejected, failed: true,
			wantMessage: "The model pull failed (exit code 3): hf://org/repo: 403 Forbidden — org/repo is gated: accept its conditions. " +
				"Put a token that can read the model into key token of Secret hf-token (gated repositories also need their conditions accepted on the model page), then " + retry + ".",
		},
		{
			name: "exit 3 without a token: set one",
			obs: func() cacheObservation {
				o := observation(testJob(batchv1.JobFailed), ended(testPod("p1", 0, corev1.PodFailed), 3, errorEvent(3, "hf://org/repo: 401 Unauthorized")))
				o.tokenRef = nil
				return o
			}(),
			wantReason: servingv1alpha1.ReasonTokenRejected, failed: true,
			wantMessage: "The model pull failed (exit code 3): hf://org/repo: 401 Unauthorized. Set model.tokenSecretRef to a Secret key holding a Hugging Face token that can read the model; a new pull starts when the spec changes.",
		},
		{
			name:       "exit 4: not found",
			obs:        observation(testJob(batchv1.JobFailed), ended(testPod("p1", 0, corev1.PodFailed), 4, errorEvent(4, "hf://org/repo: 404 Not Found — repository org/repo was not found"))),
			wantReason: servingv1alpha1.ReasonModelNotFound, failed: true,
			wantMessage: "The model pull failed (exit code 4): hf://org/repo: 404 Not Found — repository org/repo was not found. Fix model.uri (the repository, @revision or file), which starts a new pull, or " + retry + " once the source has it.",
		},
		{
			name:       "exit 5: checksum mismatch",
			obs:        observation(testJob(batchv1.JobFailed), ended(testPod("p1", 0, corev1.PodFailed), 5, errorEvent(5, "hf://org/repo (a.safetensors): sha256 mismatch"))),
			wantReason: servingv1alpha1.ReasonChecksumMismatch, failed: true,
			wantMessage: "The model pull failed (exit code 5): hf://org/repo (a.safetensors): sha256 mismatch. The bytes were refused. To try again, " + retry + "; if it recurs, a mirror (HF_ENDPOINT) or a proxy is altering the files.",
		},
		{
			name:       "exit 6: the source stayed unavailable through every retry",
			obs:        observation(testJob(batchv1.JobFailed), ended(testPod("p4", 3, corev1.PodFailed), 6, errorEvent(6, "hf://org/repo: 503 Service Unavailable")), ended(testPod("p1", 0, corev1.PodFailed), 1, "old")),
			wantReason: servingv1alpha1.ReasonSourceUnavailable, failed: true,
			wantMessage: "The model pull failed (exit code 6): hf://org/repo: 503 Service Unavailable. The Job gave up after 4 attempts. To retry, " + retry + " (it resumes where it stopped), or set HF_ENDPOINT in engine.env to a mirror.",
		},
		{
			name:       "exit 7: the claim is full",
			obs:        observation(testJob(batchv1.JobFailed), ended(testPod("p1", 0, corev1.PodFailed), 7, errorEvent(7, "no space left on device"))),
			wantReason: servingv1alpha1.ReasonCacheStorageError, failed: true,
			wantMessage: "The model pull failed (exit code 7): no space left on device. PersistentVolumeClaim chat-model-cache is full or not writable: grow model.cache.size, which starts a new pull, or check that group 65532 can write to the volume.",
		},
		{
			name:       "an exit code without a termination message: the Job's condition tells the rest",
			obs:        observation(testJob(batchv1.JobFailed), ended(testPod("p1", 0, corev1.PodFailed), 4, "")),
			wantReason: servingv1alpha1.ReasonModelNotFound, failed: true,
			wantMessage: "The model pull failed (exit code 4): BackoffLimitExceeded: Job has reached the specified backoff limit. Fix model.uri (the repository, @revision or file), which starts a new pull, or " + retry + " once the source has it.",
		},
		{
			name: "a loader killed for memory",
			obs: func() cacheObservation {
				p := ended(testPod("p1", 0, corev1.PodFailed), 137, "")
				p.Status.ContainerStatuses[0].State.Terminated.Reason = "OOMKilled"
				return observation(testJob(batchv1.JobFailed), p)
			}(),
			wantReason: servingv1alpha1.ReasonPullFailed, failed: true,
			wantMessage: "The model pull failed (exit code 137): OOMKilled. See kubectl logs -n team-a job/chat-pull-abc; then " + retry + ".",
		},
		{
			name:       "a failed Job whose pods are gone",
			obs:        observation(testJob(batchv1.JobFailed)),
			wantReason: servingv1alpha1.ReasonPullFailed, failed: true,
			wantMessage: "The model pull failed: BackoffLimitExceeded: Job has reached the specified backoff limit. See kubectl logs -n team-a job/chat-pull-abc; then " + retry + ".",
		},
		{
			name: "a claim that does not match the spec",
			obs: func() cacheObservation {
				o := observation(nil)
				o.mismatch = "PersistentVolumeClaim chat-model-cache has access modes [ReadWriteOnce], not ReadWriteMany."
				return o
			}(),
			wantReason: servingv1alpha1.ReasonCacheClaimMismatch, failed: true,
			wantMessage: "PersistentVolumeClaim chat-model-cache has access modes [ReadWriteOnce], not ReadWriteMany.",
		},
		{
			name: "a claim on its way out",
			obs: func() cacheObservation {
				o := observation(nil)
				o.mismatch = errClaimDeleting
				return o
			}(),
			wantReason:  servingv1alpha1.ReasonLoaderPending,
			wantMessage: "PersistentVolumeClaim chat-model-cache is being deleted (pods that still use it hold it); a new one is created once it is gone.",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			rep := assessCache(tt.obs)
			want := tt.wantStatus
			if want == "" {
				want = metav1.ConditionFalse
			}
			g.Expect(rep.status).To(Equal(want))
			g.Expect(rep.reason).To(Equal(tt.wantReason))
			g.Expect(rep.message).To(Equal(tt.wantMessage))
			g.Expect(rep.ready).To(Equal(tt.ready))
			g.Expect(rep.failed).To(Equal(tt.failed))
			g.Expect(rep.progress.ClaimName).To(Equal("chat-model-cache"))
		})
	}
}

func TestAssessCacheProgress(t *testing.T) {
	g := NewWithT(t)
	running := observation(testJob(), testPod("p1", 0, corev1.PodRunning))
	running.latest = &PullEvent{Time: assessTime.Add(1500 * time.Millisecond), Event: "progress", Bytes: 250, Total: 1000, Downloaded: 200, Files: 1, FilesTotal: 3, Rate: 99.6, ETA: 7.5}
	p := assessCache(running).progress
	g.Expect(p).To(Equal(servingv1alpha1.ModelCacheStatus{
		ClaimName: "chat-model-cache", JobName: "chat-pull-abc",
		BytesDone: 250, BytesTotal: 1000, Percent: 25, BytesDownloaded: 200, FilesDone: 1, FilesTotal: 3,
		BytesPerSecond: 100, ETASeconds: 8, LastUpdateTime: &metav1.Time{Time: assessTime.Add(time.Second)},
	}), "times are kept to the second, as the API server stores them")

	// No new line this pass (a log read failed): the last numbers stay.
	quiet := observation(testJob(), testPod("p1", 0, corev1.PodRunning))
	quiet.prev = &p
	g.Expect(assessCache(quiet).progress).To(Equal(p))

	// An error line carries no numbers: they stay, the rate ends.
	failed := observation(testJob(batchv1.JobFailed), ended(testPod("p1", 0, corev1.PodFailed), 6, errorEvent(6, "gone")))
	failed.prev = &p
	got := assessCache(failed).progress
	g.Expect(got.BytesDone).To(Equal(int64(250)))
	g.Expect(got.BytesPerSecond).To(BeZero())
	g.Expect(got.ETASeconds).To(BeZero())

	// A new Job starts from its own numbers.
	other := observation(testJob(), testPod("p1", 0, corev1.PodRunning))
	other.job.Name = "chat-pull-def"
	other.prev = &p
	g.Expect(assessCache(other).progress).To(Equal(servingv1alpha1.ModelCacheStatus{ClaimName: "chat-model-cache", JobName: "chat-pull-def"}))

	// Completion without a done line: everything counts as in place.
	complete := observation(testJob(batchv1.JobComplete))
	complete.prev = &p
	got = assessCache(complete).progress
	g.Expect(got.BytesDone).To(Equal(int64(1000)))
	g.Expect(got.Percent).To(Equal(int32(100)))
	g.Expect(got.BytesPerSecond).To(BeZero())
}

func TestParsePullLog(t *testing.T) {
	progress := eventJSON(PullEvent{Time: assessTime, Event: "progress", Bytes: 5, Total: 10})
	tests := []struct {
		name  string
		out   string
		event string
		bytes int64
	}{
		{"nothing printed", "", "", 0},
		{"one line without a newline", progress, "progress", 5},
		{"the last of several lines", eventJSON(PullEvent{Event: "start", Total: 10}) + "\n" + progress + "\n", "progress", 5},
		{"a tail that starts mid-line", progress[10:] + "\n" + progress + "\n", "progress", 5},
		{"a line cut off at the end falls back to the one before", progress + "\n" + progress[:20], "progress", 5},
		{"stderr text after the last event", progress + "\nwarning: slow disk\n\n", "progress", 5},
		{"CRLF line ends", progress + "\r\n", "progress", 5},
		{"JSON that is not a pull event", `{"level":"info","msg":"x"}` + "\n", "", 0},
		{"a termination message that is the log's tail", "panic: x\n" + eventJSON(PullEvent{Event: "error", Code: 6, Error: "gone"}), "error", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok := ParsePullLog([]byte(tt.out))
			if ok != (tt.event != "") || e.Event != tt.event || e.Bytes != tt.bytes {
				t.Errorf("ParsePullLog(%q) = %+v, %v; want event %q with %d bytes", tt.out, e, ok, tt.event, tt.bytes)
			}
		})
	}
}

// FuzzParsePullLog: any log tail parses without a panic, and a found event is one of the
// pull's kinds.
func FuzzParsePullLog(f *testing.F) {
	f.Add([]byte(eventJSON(PullEvent{Event: "progress", Bytes: 1, Total: 2}) + "\n"))
	f.Add([]byte("\n\n{\n}"))
	f.Add([]byte(strings.Repeat("{", 100)))
	f.Fuzz(func(t *testing.T, out []byte) {
		if e, ok := ParsePullLog(out); ok && !pullEventKinds[e.Event] {
			t.Errorf("event %q", e.Event)
		}
	})
}
