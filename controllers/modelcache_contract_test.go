package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/source"
	"github.com/moe-operator/moe-operator/engine/source/sourcetest"
)

// TestPullEventMatchesSourceEvent holds the operator's copy of the pull's line format to
// engine/source.Event: every field the operator reads has the engine's JSON name, and
// decodes to the engine's value.
func TestPullEventMatchesSourceEvent(t *testing.T) {
	g := NewWithT(t)
	full := source.Event{
		Time: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), Event: "progress", URI: "hf://a/b", File: "f", State: "downloaded",
		Bytes: 1, Total: 2, Downloaded: 3, Resumed: 4, Reused: 5, Files: 6, FilesTotal: 7, Rate: 8.5, ETA: 9.5,
		Attempt: 10, Wait: 11, Path: "/p", Code: 12, Error: "e", Msg: "m",
	}
	data, err := json.Marshal(full)
	g.Expect(err).NotTo(HaveOccurred())
	var engineKeys map[string]any
	g.Expect(json.Unmarshal(data, &engineKeys)).To(Succeed())

	var e PullEvent
	g.Expect(json.Unmarshal(data, &e)).To(Succeed())
	g.Expect(e).To(Equal(PullEvent{
		Time: full.Time, Event: "progress", URI: "hf://a/b", Bytes: 1, Total: 2, Downloaded: 3, Files: 6, FilesTotal: 7,
		Rate: 8.5, ETA: 9.5, Path: "/p", Code: 12, Error: "e", Msg: "m",
	}))
	ours, err := json.Marshal(e)
	g.Expect(err).NotTo(HaveOccurred())
	var operatorKeys map[string]any
	g.Expect(json.Unmarshal(ours, &operatorKeys)).To(Succeed())
	for k := range operatorKeys {
		g.Expect(engineKeys).To(HaveKey(k), "PullEvent field %q is not in source.Event", k)
	}
}

// TestPullExitCodesMatchSource holds the restated exit codes to the engine's, and maps each
// to its own reason.
func TestPullExitCodesMatchSource(t *testing.T) {
	g := NewWithT(t)
	g.Expect([]int{pullExitUsage, pullExitAuth, pullExitNotFound, pullExitChecksum, pullExitUnavailable, pullExitStorage}).To(Equal(
		[]int{source.ExitUsage, source.ExitAuth, source.ExitNotFound, source.ExitChecksum, source.ExitUnavailable, source.ExitStorage}))
	reasons := map[string]int{}
	for _, code := range []int{source.ExitFailure, source.ExitUsage, source.ExitAuth, source.ExitNotFound, source.ExitChecksum, source.ExitUnavailable, source.ExitStorage} {
		reasons[pullFailureReason(code)] = code
	}
	g.Expect(reasons).To(HaveLen(7), "every exit code has a reason of its own")
	g.Expect(pullExitNotRetried).NotTo(ContainElement(int32(source.ExitUnavailable)), "a network failure is worth another pod")
	g.Expect(pullExitNotRetried).NotTo(ContainElement(int32(source.ExitFailure)))
}

// TestPodLogsReadsTheTailThroughTheAPI checks the production progress source's request
// against a stand-in API server: the pull container's last lines, bounded.
func TestPodLogsReadsTheTailThroughTheAPI(t *testing.T) {
	g := NewWithT(t)
	line := `{"time":"2026-05-01T12:00:00Z","event":"progress","uri":"hf://a/b","bytes":5,"total":10,"downloaded":5,"files":0,"filesTotal":2}`
	var got *http.Request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ss\":0}\n" + line + "\n"))
	}))
	defer srv.Close()
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	g.Expect(err).NotTo(HaveOccurred())
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "chat-pull-abc-x7k2p", Namespace: "team-a"}}
	out, err := PodLogs{Pods: cs.CoreV1()}.Tail(context.Background(), pod)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got.Method).To(Equal(http.MethodGet))
	g.Expect(got.URL.Path).To(Equal("/api/v1/namespaces/team-a/pods/chat-pull-abc-x7k2p/log"))
	q := got.URL.Query()
	g.Expect(q.Get("container")).To(Equal("pull"))
	g.Expect(q.Get("tailLines")).To(Equal("8"))
	g.Expect(q.Get("limitBytes")).To(Equal("65536"))
	e, ok := ParsePullLog(out)
	g.Expect(ok).To(BeTrue())
	g.Expect(e.Bytes).To(Equal(int64(5)))
}

// buildMoe builds the engine's command once per test binary.
func buildMoe(t *testing.T) string {
	t.Helper()
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		t.Skipf("no go tool to build moe: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "moe")
	cmd := exec.Command(goTool, "build", "-o", bin, "github.com/moe-operator/moe-operator/cmd/moe")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building moe: %v\n%s", err, out)
	}
	return bin
}

// loaderRun runs the loader container of job as the kubelet would, on this machine: the
// real `moe pull` with the Job's arguments and environment (the token Secret resolved to
// token), except that the claim's mount and the termination log are temporary paths.
func loaderRun(t *testing.T, bin string, job *batchv1.Job, dest, token string) (stdout []byte, termination []byte, code int) {
	t.Helper()
	c := job.Spec.Template.Spec.Containers[0]
	termLog := filepath.Join(t.TempDir(), "termination-log")
	args := append([]string(nil), c.Args...)
	for i := range args {
		switch args[i] {
		case modelCacheMountPath:
			args[i] = dest
		case c.TerminationMessagePath:
			args[i] = termLog
		}
	}
	env := []string{"PATH=" + os.Getenv("PATH")}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			env = append(env, e.Name+"="+token)
		case e.Value == modelCacheMountPath:
			env = append(env, e.Name+"="+dest)
		case e.Name == "HOME":
			env = append(env, "HOME="+t.TempDir())
		default:
			env = append(env, e.Name+"="+e.Value)
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("running moe pull: %v", err)
	}
	termination, _ = os.ReadFile(termLog)
	// What the kubelet shows as the pod's log: stdout and stderr together.
	return append(out.Bytes(), errOut.Bytes()...), termination, code
}

// finishedPod is a loader pod as the kubelet reports it once the pull exited.
func finishedPod(code int, termination []byte) corev1.Pod {
	phase := corev1.PodSucceeded
	if code != 0 {
		phase = corev1.PodFailed
	}
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "loader"},
		Status: corev1.PodStatus{Phase: phase, ContainerStatuses: []corev1.ContainerStatus{{
			Name: loaderContainerName, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: int32(code), Reason: "Error", Message: string(termination),
			}},
		}}},
	}
}

// TestPullContract builds the loader Job for a model on a loopback Hugging Face Hub, runs
// its container's command line (the real `moe pull`), and feeds what it printed through
// the operator's parser and status logic: every tail of its output is a valid progress
// report, its termination message completes the cache, the result opens offline from
// the cache as the replicas open it, a second pull transfers nothing, and refusals map to
// their reasons.
func TestPullContract(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs moe")
	}
	g := NewWithT(t)
	dir := t.TempDir()
	cfg, err := modelgen.Preset("tiny")
	g.Expect(err).NotTo(HaveOccurred())
	gguf := filepath.Join(dir, "tiny.gguf")
	g.Expect(modelgen.Write(gguf, cfg)).To(Succeed())
	g.Expect(modelgen.ExportHF(gguf, filepath.Join(dir, "hf"), modelgen.HFOptions{MaxShardBytes: 300 << 10})).To(Succeed())
	hub := sourcetest.NewHub()
	defer hub.Close()
	hub.SetToken("hf_operator_test")
	hub.AddRepo("test/tiny", filepath.Join(dir, "hf"), nil)

	obj := tinyCPU()
	obj.Spec.Model.URI = "hf://test/tiny"
	obj.Spec.Model.TokenSecretRef = &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "hf-token"}, Key: "token"}
	obj.Spec.Model.Cache = &servingv1alpha1.ModelCacheSpec{Size: resource.MustParse("1Gi")}
	// A mirror is set the way users set one: in engine.env, which the loader inherits.
	obj.Spec.Engine.Env = []corev1.EnvVar{{Name: "HF_ENDPOINT", Value: hub.URL()}}
	w := plannedWorkload(t, obj)
	job := desiredLoaderJob(w)
	job.Name = "tiny-pull"
	bin := buildMoe(t)
	dest := t.TempDir()

	out, termination, code := loaderRun(t, bin, job, dest, hub.Token())
	g.Expect(code).To(BeZero(), "moe pull: %s", out)

	// Every tail of the output (what pods/log returns while the pull runs) parses to the
	// latest event, and makes a progress report with sane numbers.
	lines := strings.SplitAfter(strings.TrimRight(string(out), "\n"), "\n")
	g.Expect(len(lines)).To(BeNumerically(">=", 3), "start, files, done")
	seen := map[string]bool{}
	var last servingv1alpha1.ModelCacheStatus
	for i := range lines {
		tail := strings.Join(lines[max(0, i-pullLogTailLines+1):i+1], "")
		e, ok := ParsePullLog([]byte(tail))
		g.Expect(ok).To(BeTrue(), "line %d: %q", i, lines[i])
		seen[e.Event] = true
		obs := observation(job, corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "loader"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}})
		obs.uri, obs.claimName, obs.latest, obs.prev = "hf://test/tiny", "tiny-model-cache", &e, &last
		rep := assessCache(obs)
		g.Expect(rep.reason).To(Equal(servingv1alpha1.ReasonPulling))
		p := rep.progress
		g.Expect(p.BytesDone).To(BeNumerically("<=", p.BytesTotal))
		g.Expect(p.BytesDone).To(BeNumerically(">=", last.BytesDone), "progress never goes back")
		g.Expect(p.Percent).To(BeNumerically("<=", 100))
		if p.BytesTotal > 0 {
			g.Expect(rep.message).To(ContainSubstring("of %s (", humanBytes(p.BytesTotal)))
		}
		last = p
	}
	g.Expect(seen).To(HaveKey("start"))
	g.Expect(seen).To(HaveKey("file"))
	g.Expect(seen).To(HaveKey("done"))

	// The termination message completes the cache.
	complete := observation(&batchv1.Job{ObjectMeta: job.ObjectMeta, Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{
		{Type: batchv1.JobComplete, Status: corev1.ConditionTrue},
	}}}, finishedPod(0, termination))
	complete.uri, complete.claimName = "hf://test/tiny", "tiny-model-cache"
	rep := assessCache(complete)
	g.Expect(rep.ready).To(BeTrue())
	g.Expect(rep.progress.BytesTotal).To(BeNumerically(">", 0))
	g.Expect(rep.progress.BytesDownloaded).To(Equal(rep.progress.BytesTotal), "a cold cache downloads everything")
	g.Expect(rep.progress.FilesDone).To(Equal(rep.progress.FilesTotal))
	g.Expect(rep.progress.Percent).To(Equal(int32(100)))
	done, ok := ParsePullLog(termination)
	g.Expect(ok).To(BeTrue())
	u, err := source.Parse("hf://test/tiny")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(done.Path).To(Equal(u.ModelPath(dest)))

	// The replicas open it as `moe serve --model URI --model-cache DIR` does: from the
	// cache alone, with no network (the Hub is gone) and a read-only volume.
	hub.SetFault("api", &sourcetest.Fault{Status: http.StatusServiceUnavailable, Times: -1})
	readOnly(t, dest)
	res, err := source.Cached("hf://test/tiny", source.Options{Dest: dest})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(res.Path).To(Equal(done.Path))
	makeWritable(t, dest)
	hub.SetFault("api", nil)

	// The Job run again (deleted to retry, or a new spec) transfers nothing.
	_, termination, code = loaderRun(t, bin, job, dest, hub.Token())
	g.Expect(code).To(BeZero())
	again, _ := ParsePullLog(termination)
	g.Expect(again.Event).To(Equal("done"))
	g.Expect(again.Downloaded).To(BeZero())

	// Refusals: the exit code and the termination message give the reason and the text.
	tests := []struct {
		name   string
		uri    string
		token  string
		reason string
		say    string
	}{
		{"a rejected token", "hf://test/tiny", "hf_wrong", servingv1alpha1.ReasonTokenRejected, "rejected"},
		{"a repository that does not exist", "hf://test/missing", hub.Token(), servingv1alpha1.ReasonModelNotFound, "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			obj := obj.DeepCopy()
			obj.Spec.Model.URI = tt.uri
			job := desiredLoaderJob(plannedWorkload(t, obj))
			_, termination, code := loaderRun(t, bin, job, t.TempDir(), tt.token)
			g.Expect(code).NotTo(BeZero())
			g.Expect(job.Spec.PodFailurePolicy.Rules[0].OnExitCodes.Values).To(ContainElement(int32(code)), "the Job fails at once, without retries")
			failed := observation(&batchv1.Job{ObjectMeta: job.ObjectMeta, Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{
				{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: "PodFailurePolicy"},
			}}}, finishedPod(code, termination))
			rep := assessCache(failed)
			g.Expect(rep.failed).To(BeTrue())
			g.Expect(rep.reason).To(Equal(tt.reason))
			g.Expect(rep.message).To(ContainSubstring(tt.say))
			g.Expect(rep.message).To(HavePrefix("The model pull failed (exit code %d): %s", code, tt.uri))
		})
	}
}

// readOnly and makeWritable flip the write bits of a tree, as a read-only mount would.
func readOnly(t *testing.T, dir string) { chmodTree(t, dir, 0o555, 0o444) }

func makeWritable(t *testing.T, dir string) { chmodTree(t, dir, 0o755, 0o644) }

func chmodTree(t *testing.T, dir string, dirMode, fileMode os.FileMode) {
	t.Helper()
	if os.Geteuid() == 0 {
		// root writes through permission bits; the check would prove nothing.
		return
	}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.IsDir() {
			return os.Chmod(p, dirMode)
		}
		return os.Chmod(p, fileMode)
	})
	if err != nil {
		t.Fatal(err)
	}
}
