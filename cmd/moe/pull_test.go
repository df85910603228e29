package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/source"
	"github.com/moe-operator/moe-operator/engine/source/sourcetest"
)

// run executes a fresh command with args and returns stdout and the error.
func run(t *testing.T, cmd *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	return out.String(), err
}

// events parses JSON lines.
func events(t *testing.T, out string) []source.Event {
	t.Helper()
	var evs []source.Event
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var e source.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("not a JSON line: %q", sc.Text())
		}
		evs = append(evs, e)
	}
	return evs
}

// tinyHub serves a generated model as hf://test/tiny and returns the hub
// and the GGUF it was exported from.
func tinyHub(t *testing.T) (*sourcetest.Hub, string) {
	t.Helper()
	dir := t.TempDir()
	g := tinyModel(t)
	if err := modelgen.ExportHF(g, filepath.Join(dir, "hf"), modelgen.HFOptions{MaxShardBytes: 500 << 10}); err != nil {
		t.Fatal(err)
	}
	hub := sourcetest.NewHub()
	t.Cleanup(hub.Close)
	hub.AddRepo("test/tiny", filepath.Join(dir, "hf"), nil)
	t.Setenv("HF_ENDPOINT", hub.URL())
	t.Setenv("HF_TOKEN", "")
	return hub, g
}

func TestPullContractForInitContainers(t *testing.T) {
	tinyHub(t)
	dest := t.TempDir()
	termLog := filepath.Join(t.TempDir(), "termination-log")
	out, err := run(t, newPullCmd(), "hf://test/tiny", "--dest", dest, "--progress", "json", "--progress-interval", "10ms", "--termination-log", termLog)
	if err != nil {
		t.Fatal(err)
	}
	evs := events(t, out)
	first, last := evs[0], evs[len(evs)-1]
	if first.Event != "start" || first.Total == 0 || first.FilesTotal < 4 {
		t.Errorf("first line %+v", first)
	}
	if last.Event != "done" || last.Path != filepath.Join(dest, "hf", "test", "tiny", "main") || last.Downloaded != last.Total || last.Files != first.FilesTotal {
		t.Errorf("last line %+v", last)
	}
	files := 0
	for _, e := range evs {
		if e.Event == "file" {
			files++
		}
		if e.Bytes > e.Total || e.URI != "hf://test/tiny" {
			t.Errorf("event %+v", e)
		}
	}
	if files != first.FilesTotal {
		t.Errorf("%d file events for %d files", files, first.FilesTotal)
	}
	var term source.Event
	if b, _ := os.ReadFile(termLog); json.Unmarshal(b, &term) != nil || term.Event != "done" || term.Path != last.Path {
		t.Errorf("termination log %+v", term)
	}

	// A warm cache: idempotent, nothing transferred.
	out, err = run(t, newPullCmd(), "hf://test/tiny", "--dest", dest, "--progress", "json")
	if err != nil {
		t.Fatal(err)
	}
	evs = events(t, out)
	if last := evs[len(evs)-1]; last.Event != "done" || last.Downloaded != 0 || last.Reused != last.Total {
		t.Errorf("second pull %+v", last)
	}

	// Without --progress json and off a terminal's bar, stdout is just the path.
	out, err = run(t, newPullCmd(), "hf://test/tiny", "--dest", dest, "--progress", "none")
	if err != nil || strings.TrimSpace(out) != last.Path {
		t.Errorf("--progress none printed %q (%v)", out, err)
	}
}

func TestPullExitCodes(t *testing.T) {
	hub, _ := tinyHub(t)
	tests := []struct {
		name string
		args []string
		env  func()
		code int
		say  string
	}{
		{"401 without a token", []string{"hf://test/tiny"}, func() { hub.SetToken("secret") }, source.ExitAuth, "HF_TOKEN"},
		{"token from a file", []string{"hf://test/tiny", "--token-file", "TOKENFILE"}, func() { hub.SetToken("secret") }, 0, ""},
		{"404", []string{"hf://test/missing"}, func() { hub.SetToken("") }, source.ExitNotFound, "not found"},
		{"bad URI", []string{"s3://bucket/model"}, nil, source.ExitUsage, "unknown scheme"},
		{"no URI", []string{}, nil, source.ExitUsage, "exactly one URI"},
		{"bad flag", []string{"hf://test/tiny", "--parallel", "many"}, nil, source.ExitUsage, "invalid argument"},
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("secret\n"), 0o600)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != nil {
				tt.env()
			}
			args := append([]string{"--dest", t.TempDir(), "--progress", "json"}, tt.args...)
			for i, a := range args {
				if a == "TOKENFILE" {
					args[i] = tokenFile
				}
			}
			out, err := run(t, newPullCmd(), args...)
			if got := exitCodeOrZero(err); got != tt.code {
				t.Fatalf("exit code %d, want %d (err %v)", got, tt.code, err)
			}
			if err == nil {
				return
			}
			if !strings.Contains(err.Error(), tt.say) {
				t.Errorf("error %q does not say %q", err, tt.say)
			}
			if evs := events(t, out); tt.code != source.ExitUsage || len(evs) > 0 {
				if last := evs[len(evs)-1]; last.Event != "error" || last.Code != tt.code || last.Error != err.Error() {
					t.Errorf("last line %+v", last)
				}
			}
		})
	}
}

func exitCodeOrZero(err error) int {
	if err == nil {
		return 0
	}
	return exitCode(err)
}

func TestEngineCommandsOpenURIsThroughTheCache(t *testing.T) {
	hub, g := tinyHub(t)
	cache := t.TempDir()
	logits := func(args ...string) [][]float32 { t.Helper(); return logitsOf(t, args...) }
	want := logits("--model", g)
	pulled := logits("--model", "hf://test/tiny", "--model-cache", cache)
	if _, err := run(t, newLogitsCmd(), "--tokens", "1", "--model", "hf://test/other", "--model-cache", cache); exitCodeOrZero(err) != source.ExitNotFound {
		t.Errorf("a missing repository: %v", err)
	}
	hub.Close() // the cache is complete: no network needed from here on
	cached := logits("--model", "hf://test/tiny", "--model-cache", cache)
	dir := logits("--model", "file://"+filepath.Join(cache, "hf", "test", "tiny", "main"))
	for name, got := range map[string][][]float32{"pulled": pulled, "cached": cached, "file:// directory": dir} {
		if worst := maxDiff(t, got, want); worst > 1e-4 {
			t.Errorf("%s: logits differ from the GGUF's by %g", name, worst)
		}
	}
}

func TestProgressBarRendering(t *testing.T) {
	var stdout, stderr bytes.Buffer
	o := &pullOutput{mode: "bar", stdout: &stdout, stderr: &stderr, uri: "hf://org/m"}
	o.report(source.Event{Event: "progress", Bytes: 1_500_000_000, Total: 3_000_000_000, Rate: 50e6, ETA: 30, Files: 2, FilesTotal: 5})
	o.report(source.Event{Event: "retry", File: "model-00002-of-00004.safetensors", Wait: 2, Attempt: 1, Error: "HTTP 503"})
	o.finish(&source.Result{Path: "/cache/m", Total: 3e9, Downloaded: 3e9}, nil)
	got := stderr.String()
	for _, want := range []string{"[===============>              ]  50% 1.50 GB/3.00 GB 50.0 MB/s ETA 30s (2/5 files)",
		"retrying model-00002-of-00004.safetensors in 2.0s (attempt 1): HTTP 503", "3.00 GB downloaded"} {
		if !strings.Contains(got, want) {
			t.Errorf("stderr %q lacks %q", got, want)
		}
	}
	if stdout.String() != "/cache/m\n" {
		t.Errorf("stdout %q, want the path", stdout.String())
	}
}
