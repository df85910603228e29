package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/source/sourcetest"
)

// TestMain doubles as a puller process for the tests that need real,
// separate processes (killed halfway, or racing on one cache): with
// MOE_SOURCE_TEST_PULL set it pulls that URI and prints the Result.
func TestMain(m *testing.M) {
	if uri := os.Getenv("MOE_SOURCE_TEST_PULL"); uri != "" {
		res, err := Fetch(context.Background(), uri, Options{Dest: os.Getenv("MOE_SOURCE_TEST_DEST"), Backoff: time.Millisecond})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(ExitCode(err))
		}
		json.NewEncoder(os.Stdout).Encode(res)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// pullProcess starts a separate process that pulls uri into dest.
func pullProcess(t *testing.T, hub *sourcetest.Hub, uri, dest string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MOE_SOURCE_TEST_PULL="+uri, "MOE_SOURCE_TEST_DEST="+dest, "HF_ENDPOINT="+hub.URL(), "HF_TOKEN="+hub.Token())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

// recorder collects events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) report(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) kinds(kind string) []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Event
	for _, e := range r.events {
		if e.Event == kind {
			out = append(out, e)
		}
	}
	return out
}

func hubOptions(h *sourcetest.Hub, dest string, rec *recorder) Options {
	o := Options{Dest: dest, Endpoint: h.URL(), Token: h.Token(), Backoff: time.Millisecond, Retries: 3, ProgressInterval: 10 * time.Millisecond}
	if rec != nil {
		o.Report = rec.report
	}
	return o
}

// sameFiles checks that the pulled directory holds exactly the model's
// files of the source repository, byte for byte.
func sameFiles(t *testing.T, repoDir, pulled string) {
	t.Helper()
	want, _ := filepath.Glob(filepath.Join(repoDir, "*"))
	for _, p := range want {
		a, _ := os.ReadFile(p)
		b, err := os.ReadFile(filepath.Join(pulled, filepath.Base(p)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs from the repository's (err %v)", filepath.Base(p), err)
		}
	}
}

func TestFullPullFromTheHub(t *testing.T) {
	repoDir := generatedRepo(t)
	hub := newHub(t)
	hub.SetToken("hf_test")
	hub.AddRepo("mistralai/Tiny-MoE", repoDir, map[string][]byte{
		"consolidated.safetensors": []byte("Mistral's own layout: must not be downloaded"),
		"README.md":                []byte("# card"),
		"original/params.json":     []byte("{}"),
	})
	dest := t.TempDir()
	rec := &recorder{}
	res, err := Fetch(context.Background(), "hf://mistralai/Tiny-MoE", hubOptions(hub, dest, rec))
	if err != nil {
		t.Fatal(err)
	}
	if res.Path != filepath.Join(dest, "hf", "mistralai", "Tiny-MoE", "main") || res.Commit == "" {
		t.Errorf("path %s commit %q", res.Path, res.Commit)
	}
	sameFiles(t, repoDir, res.Path)
	for _, skipped := range []string{"consolidated.safetensors", "README.md", "original/params.json"} {
		if _, err := os.Stat(filepath.Join(res.Path, skipped)); err == nil {
			t.Errorf("%s was downloaded", skipped)
		}
	}
	if res.Downloaded != res.Total || res.Total == 0 || res.Reused != 0 || res.Resumed != 0 {
		t.Errorf("downloaded %d of %d (reused %d, resumed %d)", res.Downloaded, res.Total, res.Reused, res.Resumed)
	}
	// The token goes to the Hub and never to the CDN it redirects to.
	for _, r := range hub.Requests() {
		if r.Server == "cdn" && r.Auth != "" || r.Server == "hub" && r.Auth != "Bearer hf_test" {
			t.Errorf("%s %s carried Authorization %q", r.Server, r.Path, r.Auth)
		}
	}
	if len(rec.kinds("start")) != 1 || len(rec.kinds("file")) != len(res.Files) || len(rec.kinds("progress")) == 0 {
		t.Errorf("events: %d start, %d file (of %d), %d progress", len(rec.kinds("start")), len(rec.kinds("file")), len(res.Files), len(rec.kinds("progress")))
	}

	// The pulled checkpoint loads and runs like the repository it came from.
	m, err := model.Open(res.Path, model.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()

	// Pulling again transfers nothing: only the file list is fetched.
	before := len(hub.Requests())
	again, err := Fetch(context.Background(), "hf://mistralai/Tiny-MoE", hubOptions(hub, dest, nil))
	if err != nil {
		t.Fatal(err)
	}
	if again.Downloaded != 0 || again.Reused != again.Total {
		t.Errorf("second pull downloaded %d, reused %d of %d", again.Downloaded, again.Reused, again.Total)
	}
	if n := len(hub.Requests()) - before; n != 1 {
		t.Errorf("second pull made %d requests, want 1 (the file list)", n)
	}
	// And a server starting from the cache needs no network at all.
	before = len(hub.Requests())
	off, err := Cached("hf://mistralai/Tiny-MoE", Options{Dest: dest})
	if err != nil || off.Path != res.Path || len(hub.Requests()) != before {
		t.Errorf("offline resolve: %v, path %v, %d requests", err, off, len(hub.Requests())-before)
	}
	if _, err := Cached("hf://mistralai/Other", Options{Dest: dest}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "moe pull") {
		t.Errorf("uncached model: %v", err)
	}
}

func TestAPullKilledHalfwayResumes(t *testing.T) {
	repoDir := generatedRepo(t)
	hub := newHub(t)
	hub.AddRepo("mistralai/Tiny-MoE", repoDir, nil)
	dest := t.TempDir()
	shards, _ := filepath.Glob(filepath.Join(repoDir, "model-*.safetensors"))
	big := filepath.Base(shards[0])
	st, _ := os.Stat(shards[0])
	half := st.Size() / 2
	f := &sourcetest.Fault{Times: 1, PauseAt: half, Release: make(chan struct{}), Reached: make(chan struct{})}
	hub.SetFault(big, f)

	cmd, out := pullProcess(t, hub, "hf://mistralai/Tiny-MoE", dest)
	select {
	case <-f.Reached:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("the pull never reached the middle of %s: %s", big, out)
	}
	// The partial file holds the first half once the writes land; then kill -9.
	partial := filepath.Join(dest, "hf", "mistralai", "Tiny-MoE", "main", metaDir, big+".partial")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if st, err := os.Stat(partial); err == nil && st.Size() == half {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("partial file never reached %d bytes", half)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	close(f.Release)

	rec := &recorder{}
	res, err := Fetch(context.Background(), "hf://mistralai/Tiny-MoE", hubOptions(hub, dest, rec))
	if err != nil {
		t.Fatal(err)
	}
	sameFiles(t, repoDir, res.Path)
	var shard FileResult
	for _, fr := range res.Files {
		if fr.Name == big {
			shard = fr
		}
	}
	if shard.State != StateResumed || shard.Resumed != half || shard.Downloaded != st.Size()-half {
		t.Errorf("%s: state %s, resumed %d, downloaded %d; want resumed %d, downloaded %d", big, shard.State, shard.Resumed, shard.Downloaded, half, st.Size()-half)
	}
	// Other files the killed pull had started resume as well.
	var resumed int64
	var sawBig bool
	for _, e := range rec.kinds("resume") {
		resumed += e.Resumed
		sawBig = sawBig || e.File == big && e.Resumed == half
	}
	if !sawBig || res.Resumed != resumed {
		t.Errorf("resume events %+v; result resumed %d", rec.kinds("resume"), res.Resumed)
	}
	if res.Downloaded+res.Resumed+res.Reused != res.Total {
		t.Errorf("totals: downloaded %d + resumed %d + reused %d != %d", res.Downloaded, res.Resumed, res.Reused, res.Total)
	}
	var ranged bool
	for _, r := range hub.Requests() {
		if r.File == big && r.Range == fmt.Sprintf("bytes=%d-", half) {
			ranged = true
		}
	}
	if !ranged {
		t.Errorf("no Range request for %s from byte %d", big, half)
	}
	t.Logf("killed at byte %d of %d; resumed pull transferred %d bytes, kept %d, reused %d of %d",
		half, st.Size(), res.Downloaded, res.Resumed, res.Reused, res.Total)
}

func TestChecksumMismatchIsRefused(t *testing.T) {
	repoDir := generatedRepo(t)
	hub := newHub(t)
	hub.AddRepo("mistralai/Tiny-MoE", repoDir, nil)
	shards, _ := filepath.Glob(filepath.Join(repoDir, "model-*.safetensors"))
	bad := filepath.Base(shards[1])
	hub.SetFault(bad, &sourcetest.Fault{Times: -1, Corrupt: true})
	dest := t.TempDir()
	_, err := Fetch(context.Background(), "hf://mistralai/Tiny-MoE", hubOptions(hub, dest, nil))
	if !errors.Is(err, ErrChecksum) || ExitCode(err) != ExitChecksum || !strings.Contains(err.Error(), "sha256") || !strings.Contains(err.Error(), bad) {
		t.Fatalf("err %v (exit %d)", err, ExitCode(err))
	}
	dir := filepath.Join(dest, "hf", "mistralai", "Tiny-MoE", "main")
	for _, p := range []string{filepath.Join(dir, bad), filepath.Join(dir, metaDir, bad+".partial")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s was kept", p)
		}
	}
	if _, err := Cached("hf://mistralai/Tiny-MoE", Options{Dest: dest}); err == nil {
		t.Error("a failed pull counts as cached")
	}
	t.Log(err)
}

func TestHTTPFailuresSayWhatToDo(t *testing.T) {
	repoDir := generatedRepo(t)
	tests := []struct {
		name     string
		setup    func(h *sourcetest.Hub)
		uri      string
		token    string
		kind     error
		want     []string
		requests int // Hub requests before giving up (-1: not checked)
	}{
		{"401 without a token", func(h *sourcetest.Hub) { h.SetToken("secret") }, "hf://mistralai/Tiny-MoE", "", ErrAuth,
			[]string{"401 Unauthorized", "set HF_TOKEN", "spec.model.tokenSecretRef"}, 1},
		{"401 with a bad token", func(h *sourcetest.Hub) { h.SetToken("secret") }, "hf://mistralai/Tiny-MoE", "wrong", ErrAuth,
			[]string{"401 Unauthorized", "rejected"}, 1},
		{"403 gated repository", func(h *sourcetest.Hub) { h.AddRepo("mistralai/Tiny-MoE", repoDir, nil).Gated = true }, "hf://mistralai/Tiny-MoE", "tok", ErrAuth,
			[]string{"403 Forbidden", "gated", "accept its conditions"}, 1},
		{"404 repository", nil, "hf://mistralai/Nope", "", ErrNotFound,
			[]string{"404 Not Found", "repository mistralai/Nope was not found"}, 1},
		{"404 revision", nil, "hf://mistralai/Tiny-MoE@v9", "", ErrNotFound,
			[]string{"404 Not Found", `revision "v9"`}, 1},
		{"file not in the repository", nil, "hf://mistralai/Tiny-MoE/nope.gguf", "", ErrNotFound,
			[]string{"has no file nope.gguf"}, 1},
		{"404 on a download", func(h *sourcetest.Hub) { h.SetFault("config.json", &sourcetest.Fault{Times: -1, Status: 404}) }, "hf://mistralai/Tiny-MoE", "", ErrNotFound,
			[]string{"config.json", "404 Not Found"}, 2},
		{"5xx on the API, retried, then failing", func(h *sourcetest.Hub) { h.SetFault("api", &sourcetest.Fault{Times: -1, Status: 503}) }, "hf://mistralai/Tiny-MoE", "", ErrUnavailable,
			[]string{"503 Service Unavailable", "try again later"}, 4},
		{"5xx on a file, retried, then failing", func(h *sourcetest.Hub) { h.SetFault("tokenizer.json", &sourcetest.Fault{Times: -1, Status: 500}) }, "hf://mistralai/Tiny-MoE", "", ErrUnavailable,
			[]string{"tokenizer.json", "500 Internal Server Error", "4 attempts"}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newHub(t)
			hub.AddRepo("mistralai/Tiny-MoE", repoDir, nil)
			if tt.setup != nil {
				tt.setup(hub)
			}
			opts := hubOptions(hub, t.TempDir(), nil)
			opts.Token = tt.token
			_, err := Fetch(context.Background(), tt.uri, opts)
			if !errors.Is(err, tt.kind) {
				t.Fatalf("err %v, want %v", err, tt.kind)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			var hubReqs int
			for _, r := range hub.Requests() {
				if r.Server == "hub" && (strings.HasPrefix(r.Path, "/api/") || r.File == "config.json") {
					hubReqs++
				}
			}
			if tt.requests >= 0 && hubReqs != tt.requests {
				t.Errorf("%d requests, want %d", hubReqs, tt.requests)
			}
			if tt.name == "5xx on a file, retried, then failing" && hub.Gets("tokenizer.json") != 4 {
				t.Errorf("tokenizer.json requested %d times, want 4 (1 + 3 retries)", hub.Gets("tokenizer.json"))
			}
			t.Log(err)
		})
	}
}

func TestTransientFailuresAreRetried(t *testing.T) {
	repoDir := generatedRepo(t)
	hub := newHub(t)
	hub.AddRepo("mistralai/Tiny-MoE", repoDir, nil)
	shards, _ := filepath.Glob(filepath.Join(repoDir, "model-*.safetensors"))
	reset := filepath.Base(shards[0])
	st, _ := os.Stat(shards[0])
	hub.SetFault("api", &sourcetest.Fault{Times: 1, Status: 502})
	hub.SetFault("config.json", &sourcetest.Fault{Times: 2, Status: 503})
	hub.SetFault(reset, &sourcetest.Fault{Times: 2, ResetAfter: st.Size() / 3})
	rec := &recorder{}
	res, err := Fetch(context.Background(), "hf://mistralai/Tiny-MoE", hubOptions(hub, t.TempDir(), rec))
	if err != nil {
		t.Fatal(err)
	}
	sameFiles(t, repoDir, res.Path)
	if n := len(rec.kinds("retry")); n != 5 {
		t.Errorf("%d retry events, want 5 (1 API, 2 config.json, 2 resets)", n)
	}
	// A reset connection resumes from where it broke, not from zero.
	var resumedFrom []string
	for _, r := range hub.Requests() {
		if r.File == reset && r.Server == "cdn" {
			resumedFrom = append(resumedFrom, r.Range)
		}
	}
	if want := []string{"", fmt.Sprintf("bytes=%d-", st.Size()/3), fmt.Sprintf("bytes=%d-", 2*(st.Size()/3))}; !slices.Equal(resumedFrom, want) {
		t.Errorf("requests for %s had ranges %q", reset, resumedFrom)
	}
	if res.Downloaded != res.Total {
		t.Errorf("downloaded %d bytes for %d", res.Downloaded, res.Total)
	}
}

func TestConcurrentPullersShareOneCache(t *testing.T) {
	repoDir := generatedRepo(t)
	hub := newHub(t)
	hub.AddRepo("mistralai/Tiny-MoE", repoDir, nil)
	shards, _ := filepath.Glob(filepath.Join(repoDir, "model-*.safetensors"))
	for _, s := range shards { // slow enough that the pullers overlap
		hub.SetFault(filepath.Base(s), &sourcetest.Fault{Times: -1, Slow: 2 * time.Millisecond})
	}
	dest := t.TempDir()
	const n = 4
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for i := 0; i < n; i++ {
		cmd, out := pullProcess(t, hub, "hf://mistralai/Tiny-MoE", dest)
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	downloaded := int64(0)
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("puller %d: %v\n%s", i, err, outs[i])
		}
		var res Result
		if err := json.Unmarshal(outs[i].Bytes(), &res); err != nil {
			t.Fatalf("puller %d printed %s", i, outs[i])
		}
		downloaded += res.Downloaded
		sameFiles(t, repoDir, res.Path)
	}
	// Every file crossed the network once; the other pullers waited for
	// it and reused it.
	var total int64
	entries, _ := filepath.Glob(filepath.Join(repoDir, "*"))
	for _, e := range entries {
		st, _ := os.Stat(e)
		total += st.Size()
		if g := hub.Gets(filepath.Base(e)); g != 1 {
			t.Errorf("%s was fetched %d times", filepath.Base(e), g)
		}
	}
	if downloaded != total {
		t.Errorf("%d pullers downloaded %d bytes in all for a %d-byte model", n, downloaded, total)
	}
	m, err := model.Open(filepath.Join(dest, "hf", "mistralai", "Tiny-MoE", "main"), model.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
}

func TestGGUFRepositoriesAndPlainURLs(t *testing.T) {
	hub := newHub(t)
	ggufBytes := append([]byte("GGUF"), bytes.Repeat([]byte{7}, 5000)...)
	hub.AddRepo("org/one-gguf", t.TempDir(), map[string][]byte{"model-Q4_0.gguf": ggufBytes, "README.md": []byte("x")})
	hub.AddRepo("org/many-gguf", t.TempDir(), map[string][]byte{"m-Q4_0.gguf": ggufBytes, "m-Q8_0.gguf": ggufBytes})
	dest := t.TempDir()
	res, err := Fetch(context.Background(), "hf://org/one-gguf", hubOptions(hub, dest, nil))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(res.Path) != "model-Q4_0.gguf" || len(res.Files) != 1 {
		t.Errorf("path %s, %d files", res.Path, len(res.Files))
	}
	_, err = Fetch(context.Background(), "hf://org/many-gguf", hubOptions(hub, dest, nil))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "hf://org/many-gguf/m-Q4_0.gguf") {
		t.Errorf("ambiguous repository: %v", err)
	}
	if res, err := Fetch(context.Background(), "hf://org/many-gguf/m-Q8_0.gguf", hubOptions(hub, dest, nil)); err != nil || filepath.Base(res.Path) != "m-Q8_0.gguf" {
		t.Errorf("named file: %v", err)
	}

	// A plain URL, with and without a checksum; the CDN endpoint stands in
	// for any HTTP server.
	sum := sourcetest.SHA256Hex(ggufBytes)
	url := hub.CDNURL() + "/blobs/" + sum + "?name=org/one-gguf/model-Q4_0.gguf"
	res, err = Fetch(context.Background(), url+"#sha256="+sum, hubOptions(hub, dest, nil))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(res.Path); !bytes.Equal(b, ggufBytes) || res.Files[0].SHA256 != sum {
		t.Errorf("url download: %d bytes, sha %s", len(b), res.Files[0].SHA256)
	}
	_, err = Fetch(context.Background(), url+"#sha256="+strings.Repeat("0", 64), hubOptions(hub, t.TempDir(), nil))
	if !errors.Is(err, ErrChecksum) {
		t.Errorf("wrong sha256 fragment: %v", err)
	}
}

func TestLocalURIs(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "models-claim", "mixtral"), 0o755)
	opts := Options{PVCRoot: root}
	res, err := Fetch(context.Background(), "pvc://models-claim/mixtral", opts)
	if err != nil || res.Path != filepath.Join(root, "models-claim", "mixtral") {
		t.Errorf("pvc: %v %v", res, err)
	}
	for uri, want := range map[string]string{
		"pvc://other-claim/mixtral":  "claim other-claim is not mounted at " + filepath.Join(root, "other-claim"),
		"pvc://models-claim/missing": "the claim has no missing",
		"file:///no/such/model.gguf": "/no/such/model.gguf does not exist",
		"relative/missing":           "relative/missing does not exist",
	} {
		_, err := Fetch(context.Background(), uri, opts)
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", uri, err, want)
		}
	}
	if res, err := Fetch(context.Background(), "file://"+root, opts); err != nil || res.Path != root {
		t.Errorf("file: %v %v", res, err)
	}
}

func TestParse(t *testing.T) {
	ok := []struct {
		in   string
		want URI
	}{
		{"hf://mistralai/Mixtral-8x7B-v0.1", URI{Scheme: "hf", Repo: "mistralai/Mixtral-8x7B-v0.1", Revision: "main"}},
		{"hf://mistralai/Mixtral-8x7B-v0.1@a1b2c3", URI{Scheme: "hf", Repo: "mistralai/Mixtral-8x7B-v0.1", Revision: "a1b2c3"}},
		{"hf://TheBloke/Mixtral-8x7B-v0.1-GGUF/mixtral-8x7b-v0.1.Q4_0.gguf", URI{Scheme: "hf", Repo: "TheBloke/Mixtral-8x7B-v0.1-GGUF", Revision: "main", File: "mixtral-8x7b-v0.1.Q4_0.gguf"}},
		{"hf://org/repo@refs%2Fpr%2F1/sub/file.json", URI{Scheme: "hf", Repo: "org/repo", Revision: "refs/pr/1", File: "sub/file.json"}},
		{"https://example.com/m.gguf#sha256=" + strings.Repeat("ab", 32), URI{Scheme: "https", URL: "https://example.com/m.gguf", SHA256: strings.Repeat("ab", 32)}},
		{"http://127.0.0.1:8080/m.gguf", URI{Scheme: "http", URL: "http://127.0.0.1:8080/m.gguf"}},
		{"pvc://models/mixtral/8x7b", URI{Scheme: "pvc", Claim: "models", Path: "mixtral/8x7b"}},
		{"pvc://models", URI{Scheme: "pvc", Claim: "models"}},
		{"file:///models/m.gguf", URI{Scheme: "file", Path: "/models/m.gguf"}},
		{"/models/m.gguf", URI{Path: "/models/m.gguf"}},
		{"models/dir", URI{Path: "models/dir"}},
	}
	for _, tt := range ok {
		got, err := Parse(tt.in)
		tt.want.raw = tt.in
		if err != nil || got != tt.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
	bad := map[string]string{
		"":                                   "empty",
		"hf://mixtral":                       "org/repo",
		"hf://org/../etc":                    "not a Hugging Face repository",
		"hf://org/repo/../../etc/passwd":     "relative",
		"hf://org/repo@/file":                "bad revision",
		"s3://bucket/key":                    `unknown scheme "s3"`,
		"pvc://Bad_Claim/x":                  "not a PersistentVolumeClaim name",
		"pvc://claim/../other":               "relative",
		"file://host/x":                      "file:///absolute/path",
		"https://example.com/m#md5=abc":      "#sha256=",
		"https://user:pw@example.com/m.gguf": "credentials",
	}
	for in, want := range bad {
		_, err := Parse(in)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) || ExitCode(err) != ExitUsage {
			t.Errorf("Parse(%q): %v, want %q", in, err, want)
		}
	}
	if _, err := Fetch(context.Background(), "http://example.com/m.gguf", Options{Dest: t.TempDir()}); !errors.Is(err, ErrInvalid) {
		t.Errorf("plain http to a remote host: %v", err)
	}
	u, _ := Parse("hf://org/repo@refs%2Fpr%2F1")
	if got := u.CacheDir("/c"); got != "/c/hf/org/repo/refs%2Fpr%2F1" {
		t.Errorf("cache dir %s", got)
	}
}

func TestNamedCheckpointFilesBringTheirConfigAndShards(t *testing.T) {
	repoDir := generatedRepo(t)
	hub := newHub(t)
	hub.AddRepo("mistralai/Tiny-MoE", repoDir, map[string][]byte{"README.md": []byte("x")})
	res, err := Fetch(context.Background(), "hf://mistralai/Tiny-MoE/model.safetensors.index.json", hubOptions(hub, t.TempDir(), nil))
	if err != nil {
		t.Fatal(err)
	}
	sameFiles(t, repoDir, filepath.Dir(res.Path))
	if filepath.Base(res.Path) != "model.safetensors.index.json" || len(res.Files) != 7 {
		t.Errorf("path %s, %d files", res.Path, len(res.Files))
	}
	m, err := model.Open(res.Path, model.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
}

func TestAWarmCacheSurvivesAnUnreachableHub(t *testing.T) {
	repoDir := generatedRepo(t)
	hub := newHub(t)
	hub.AddRepo("mistralai/Tiny-MoE", repoDir, nil)
	dest := t.TempDir()
	first, err := Fetch(context.Background(), "hf://mistralai/Tiny-MoE", hubOptions(hub, dest, nil))
	if err != nil {
		t.Fatal(err)
	}
	hub.SetFault("api", &sourcetest.Fault{Times: -1, Status: 503})
	rec := &recorder{}
	res, err := Fetch(context.Background(), "hf://mistralai/Tiny-MoE", hubOptions(hub, dest, rec))
	if err != nil || res.Path != first.Path || res.Reused != res.Total {
		t.Fatalf("warm cache with the Hub down: %v", err)
	}
	if ev := rec.kinds("offline"); len(ev) != 1 || !strings.Contains(ev[0].Error, "503") {
		t.Errorf("offline events %+v", ev)
	}
	// Authorization failures are not papered over by the cache.
	hub.SetToken("now-required")
	opts := hubOptions(hub, dest, nil)
	opts.Token = ""
	if _, err := Fetch(context.Background(), "hf://mistralai/Tiny-MoE", opts); !errors.Is(err, ErrAuth) {
		t.Errorf("401 with a warm cache: %v", err)
	}
}
