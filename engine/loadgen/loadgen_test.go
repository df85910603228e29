package loadgen_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/loadgen"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/scheduler"
	"github.com/moe-operator/moe-operator/engine/server"
)

func TestLoadgenMeasuresAStreamingRun(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	c, _ := modelgen.Preset("tiny")
	if err := modelgen.Write(path, c); err != nil {
		t.Fatal(err)
	}
	m, err := model.Open(path, model.LoadOptions{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv := server.New(server.Options{ModelName: "tiny", APIKey: "k"})
	sch, err := scheduler.New(m, scheduler.Config{Observer: srv.Observer()})
	if err != nil {
		t.Fatal(err)
	}
	defer sch.Close()
	srv.Attach(sch)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()

	for _, chat := range []bool{false, true} {
		r, err := loadgen.Run(context.Background(), loadgen.Options{
			URL: hs.URL, APIKey: "k", Concurrency: 4, Requests: 10, Stream: true, Chat: chat, MaxTokens: 12, IgnoreEOS: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		if r.Requests != 10 || r.Errors != 0 || r.OutputTokens != 120 || r.OutputTokensPerSecond <= 0 {
			t.Errorf("chat %v: %+v", chat, r)
		}
		if r.TTFT.P50 <= 0 || r.TTFT.P95 < r.TTFT.P50 || r.ITL.P50 <= 0 || r.ServerBefore.Goroutines == 0 || r.ServerAfter.RSSBytes == 0 {
			t.Errorf("chat %v: latencies or server snapshot missing: %+v", chat, r)
		}
		var sb strings.Builder
		r.Format(&sb)
		if !strings.Contains(sb.String(), "tok/s aggregate") {
			t.Errorf("report: %s", sb.String())
		}
	}
	// Shared system prompts: the server's prefix cache finds them.
	r, err := loadgen.Run(context.Background(), loadgen.Options{
		URL: hs.URL, APIKey: "k", Concurrency: 2, Requests: 8, Chat: true, MaxTokens: 2,
		SystemPrompts: loadgen.SyntheticSystemPrompts(2, 30),
	})
	if err != nil || r.Errors != 0 || r.PromptTokens < 8*30 {
		t.Fatalf("with system prompts: %+v %v", r, err)
	}
	req, _ := http.NewRequest(http.MethodGet, hs.URL+"/metrics", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	hits := regexp.MustCompile(`(?m)^vllm:prefix_cache_hits_total\{[^}]*\} (\d+)`).FindSubmatch(metrics)
	if hits == nil || string(hits[1]) == "0" {
		t.Errorf("no prefix cache hits with 8 requests over 2 system prompts: %s", hits)
	}

	r, err = loadgen.Run(context.Background(), loadgen.Options{URL: hs.URL, APIKey: "wrong", Model: "tiny", Concurrency: 2, Requests: 3})
	if err != nil {
		t.Fatal(err)
	}
	if r.Errors != 3 || !strings.Contains(r.ErrorSamples[0], "401") {
		t.Errorf("with a wrong key: %+v", r)
	}
}
