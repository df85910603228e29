package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/scheduler"
	"github.com/moe-operator/moe-operator/engine/server"
)

var tinyPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "server-test")
	if err != nil {
		panic(err)
	}
	tinyPath = filepath.Join(dir, "tiny.gguf")
	c, _ := modelgen.Preset("tiny")
	if err := modelgen.Write(tinyPath, c); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const modelName = "tiny-test"

func loadTiny() (*model.Model, error) {
	return model.Open(tinyPath, model.LoadOptions{Threads: 2})
}

type harness struct {
	url   string
	srv   *server.Server
	sched *scheduler.Scheduler
}

// start serves the tiny model on a loopback port.
func start(t *testing.T, opts server.Options, cfg scheduler.Config) *harness {
	t.Helper()
	return startWith(t, loadTiny, opts, cfg)
}

// startWith serves the model load opens.
func startWith(t *testing.T, load func() (*model.Model, error), opts server.Options, cfg scheduler.Config) *harness {
	t.Helper()
	m, err := load()
	if err != nil {
		t.Fatal(err)
	}
	if opts.ModelName == "" {
		opts.ModelName = modelName
	}
	srv := server.New(opts)
	cfg.Observer = srv.Observer()
	sch, err := scheduler.New(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv.Attach(sch)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		sch.Close()
		m.Close()
	})
	return &harness{url: hs.URL, srv: srv, sched: sch}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url string, body any, header ...string) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, b}
}

func decodeJSON[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

type completion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index    int    `json:"index"`
		Text     string `json:"text"`
		Message  *struct{ Role, Content string }
		Delta    *struct{ Role, Content *string }
		Logprobs *struct {
			Tokens        []string  `json:"tokens"`
			TokenLogprobs []float32 `json:"token_logprobs"`
			Content       []struct {
				Token   string  `json:"token"`
				Logprob float32 `json:"logprob"`
			} `json:"content"`
		} `json:"logprobs"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	} `json:"usage"`
}

// sse reads a streamed response: each data payload, checking the framing.
func sse(t *testing.T, body []byte) (events [][]byte, sawDone bool) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("stream line %q is not a data line", line)
		}
		if sawDone {
			t.Fatalf("data after [DONE]: %q", data)
		}
		if data == "[DONE]" {
			sawDone = true
			continue
		}
		events = append(events, []byte(data))
	}
	return events, sawDone
}

func greedy(extra map[string]any) map[string]any {
	req := map[string]any{"model": modelName, "temperature": 0, "max_tokens": 16, "ignore_eos": true}
	for k, v := range extra {
		req[k] = v
	}
	return req
}

func TestModelsListsTheServedModel(t *testing.T) {
	h := start(t, server.Options{}, scheduler.Config{KVCacheTokens: 256})
	r := do(t, "GET", h.url+"/v1/models", nil)
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	list := decodeJSON[struct {
		Object string `json:"object"`
		Data   []struct {
			ID          string `json:"id"`
			Object      string `json:"object"`
			MaxModelLen int    `json:"max_model_len"`
		} `json:"data"`
	}](t, r.body)
	if list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != modelName || list.Data[0].Object != "model" || list.Data[0].MaxModelLen != 256 {
		t.Errorf("models: %s", r.body)
	}
	if r := do(t, "GET", h.url+"/v1/models/"+modelName, nil); r.status != 200 {
		t.Errorf("retrieving the model: %d %s", r.status, r.body)
	}
}

func TestCompletionsReturnTextUsageAndFinishReason(t *testing.T) {
	h := start(t, server.Options{}, scheduler.Config{})
	r := do(t, "POST", h.url+"/v1/completions", greedy(map[string]any{"prompt": "hello there", "logprobs": 2}))
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	c := decodeJSON[completion](t, r.body)
	if c.Object != "text_completion" || c.Model != modelName || !strings.HasPrefix(c.ID, "cmpl-") || len(c.Choices) != 1 {
		t.Fatalf("response %s", r.body)
	}
	ch := c.Choices[0]
	if *ch.FinishReason != "length" || c.Usage.CompletionTokens != 16 || c.Usage.TotalTokens != c.Usage.PromptTokens+16 || c.Usage.PromptTokens < 2 {
		t.Errorf("finish %q usage %+v", *ch.FinishReason, c.Usage)
	}
	if len(ch.Logprobs.Tokens) != 16 || strings.Join(ch.Logprobs.Tokens, "") != ch.Text {
		t.Errorf("logprob tokens %q do not spell the text %q", ch.Logprobs.Tokens, ch.Text)
	}
}

func TestStreamingSendsDataLinesThenDoneAndTheSameText(t *testing.T) {
	h := start(t, server.Options{}, scheduler.Config{})
	for _, path := range []string{"/v1/completions", "/v1/chat/completions"} {
		t.Run(path, func(t *testing.T) {
			req := greedy(map[string]any{"prompt": "stream me", "messages": []map[string]string{{"role": "user", "content": "stream me"}}})
			whole := decodeJSON[completion](t, do(t, "POST", h.url+path, req).body)
			req["stream"] = true
			req["stream_options"] = map[string]bool{"include_usage": true}
			r := do(t, "POST", h.url+path, req)
			if r.status != 200 || r.header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %d, content type %q", r.status, r.header.Get("Content-Type"))
			}
			events, done := sse(t, r.body)
			if !done {
				t.Fatal("no data: [DONE]")
			}
			var text strings.Builder
			finishes := 0
			for i, e := range events {
				c := decodeJSON[completion](t, e)
				last := i == len(events)-1
				if last {
					if len(c.Choices) != 0 || c.Usage == nil || *c.Usage != *whole.Usage {
						t.Errorf("usage chunk %s, want usage %+v", e, *whole.Usage)
					}
					continue
				}
				if c.Usage != nil || !bytes.Contains(e, []byte(`"usage":null`)) {
					t.Errorf("chunk %d carries usage: %s", i, e)
				}
				for _, ch := range c.Choices {
					text.WriteString(ch.Text)
					if ch.Delta != nil && ch.Delta.Content != nil {
						text.WriteString(*ch.Delta.Content)
					}
					if ch.FinishReason != nil {
						finishes++
						if *ch.FinishReason != "length" {
							t.Errorf("finish reason %q", *ch.FinishReason)
						}
					}
				}
			}
			want := whole.Choices[0].Text
			if whole.Choices[0].Message != nil {
				want = whole.Choices[0].Message.Content
			}
			if text.String() != want || finishes != 1 {
				t.Errorf("streamed %q with %d finishes; whole response %q", text.String(), finishes, want)
			}
		})
	}
}

func TestConcurrentHTTPRequestsGetExactlyWhatTheyGetAlone(t *testing.T) {
	testBatchingInvariance(t, loadTiny)
}

func testBatchingInvariance(t *testing.T, load func() (*model.Model, error)) {
	h := startWith(t, load, server.Options{}, scheduler.Config{MaxNumSeqs: 8, MaxBatchedTokens: 32})
	const n = 8
	reqs := make([]map[string]any, n)
	for i := range reqs {
		words := strings.Repeat("word ", 1+i*4)
		reqs[i] = greedy(map[string]any{"prompt": words, "max_tokens": 10 + i, "logprobs": 0})
	}
	tokens := func(r response) string {
		if r.status != 200 {
			t.Errorf("status %d: %s", r.status, r.body)
			return ""
		}
		c := decodeJSON[completion](t, r.body)
		return strings.Join(c.Choices[0].Logprobs.Tokens, "|")
	}
	alone := make([]string, n)
	for i, req := range reqs {
		alone[i] = tokens(do(t, "POST", h.url+"/v1/completions", req))
	}
	together := make([]string, n)
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Go(func() { together[i] = tokens(do(t, "POST", h.url+"/v1/completions", req)) })
	}
	wg.Wait()
	for i := range reqs {
		if alone[i] != together[i] || alone[i] == "" {
			t.Errorf("request %d: alone %q, concurrently %q", i, alone[i], together[i])
		}
	}
}

func TestNMoreThanOneGivesIndexedChoicesAndSeedsReproduce(t *testing.T) {
	h := start(t, server.Options{}, scheduler.Config{})
	req := map[string]any{"model": modelName, "prompt": "pick", "max_tokens": 12, "n": 3, "temperature": 1, "seed": 42, "ignore_eos": true}
	a := decodeJSON[completion](t, do(t, "POST", h.url+"/v1/completions", req).body)
	b := decodeJSON[completion](t, do(t, "POST", h.url+"/v1/completions", req).body)
	if len(a.Choices) != 3 || a.Usage.CompletionTokens != 36 {
		t.Fatalf("choices %d usage %+v", len(a.Choices), a.Usage)
	}
	for i := range a.Choices {
		if a.Choices[i].Index != i || a.Choices[i].Text != b.Choices[i].Text {
			t.Errorf("choice %d: %q then %q with the same seed", i, a.Choices[i].Text, b.Choices[i].Text)
		}
	}
	if a.Choices[0].Text == a.Choices[1].Text && a.Choices[1].Text == a.Choices[2].Text {
		t.Errorf("all three sampled choices are %q", a.Choices[0].Text)
	}
}

type apiErr struct {
	Error *struct {
		Message *string `json:"message"`
		Type    *string `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// checkError asserts OpenAI's error shape: all four keys present, message
// and type non-empty.
func checkError(t *testing.T, r response, status int, param, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	var raw map[string]map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &raw); err != nil || raw["error"] == nil {
		t.Fatalf("not an error object: %s", r.body)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := raw["error"][k]; !ok {
			t.Errorf("error has no %q: %s", k, r.body)
		}
	}
	e := decodeJSON[apiErr](t, r.body).Error
	if e.Message == nil || *e.Message == "" || e.Type == nil || *e.Type == "" {
		t.Errorf("empty message or type: %s", r.body)
	}
	if got := deref(e.Param); got != param {
		t.Errorf("param %q, want %q (%s)", got, param, r.body)
	}
	if got := deref(e.Code); code != "" && got != code {
		t.Errorf("code %q, want %q (%s)", got, code, r.body)
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func TestErrorsHaveOpenAIsShapeAndStatus(t *testing.T) {
	h := start(t, server.Options{}, scheduler.Config{Context: 128})
	chat := func(extra map[string]any) map[string]any {
		r := map[string]any{"model": modelName, "messages": []map[string]string{{"role": "user", "content": "hi"}}}
		for k, v := range extra {
			r[k] = v
		}
		return r
	}
	tests := []struct {
		name         string
		method, path string
		body         any
		status       int
		param, code  string
	}{
		{"malformed JSON", "POST", "/v1/chat/completions", `{"model": `, 400, "", ""},
		{"not an object", "POST", "/v1/completions", `[1,2]`, 400, "", ""},
		{"two objects", "POST", "/v1/completions", `{"prompt":"a"} {}`, 400, "", ""},
		{"a string temperature", "POST", "/v1/chat/completions", chat(map[string]any{"temperature": "hot"}), 400, "temperature", ""},
		{"temperature out of range", "POST", "/v1/chat/completions", chat(map[string]any{"temperature": 2.5}), 400, "temperature", ""},
		{"top_p of zero", "POST", "/v1/chat/completions", chat(map[string]any{"top_p": 0}), 400, "top_p", ""},
		{"negative max_tokens", "POST", "/v1/chat/completions", chat(map[string]any{"max_tokens": -1}), 400, "max_tokens", ""},
		{"n too large", "POST", "/v1/chat/completions", chat(map[string]any{"n": 17}), 400, "n", ""},
		{"top_logprobs without logprobs", "POST", "/v1/chat/completions", chat(map[string]any{"top_logprobs": 2}), 400, "top_logprobs", ""},
		{"a stop that is a number", "POST", "/v1/chat/completions", chat(map[string]any{"stop": 3}), 400, "stop", ""},
		{"no messages", "POST", "/v1/chat/completions", map[string]any{"model": modelName}, 400, "messages", ""},
		{"a conversation that does not alternate", "POST", "/v1/chat/completions", map[string]any{"messages": []map[string]string{{"role": "assistant", "content": "x"}}}, 400, "messages", ""},
		{"an image part", "POST", "/v1/chat/completions", map[string]any{"messages": []map[string]any{{"role": "user", "content": []map[string]string{{"type": "image_url"}}}}}, 400, "messages", ""},
		{"no prompt", "POST", "/v1/completions", map[string]any{"model": modelName}, 400, "prompt", ""},
		{"a token outside the vocabulary", "POST", "/v1/completions", map[string]any{"prompt": []int{1, 99999}}, 400, "prompt", ""},
		{"prompt and max_tokens over the context", "POST", "/v1/completions", map[string]any{"prompt": "hi", "max_tokens": 200}, 400, "prompt", "context_length_exceeded"},
		// max_tokens near 2^63 once overflowed prompt+max_tokens past the context check.
		{"max_tokens at the int64 limit", "POST", "/v1/completions", map[string]any{"prompt": "hi", "max_tokens": int64(math.MaxInt64)}, 400, "prompt", "context_length_exceeded"},
		{"max_completion_tokens at the int64 limit", "POST", "/v1/chat/completions", chat(map[string]any{"max_completion_tokens": int64(math.MaxInt64)}), 400, "messages", "context_length_exceeded"},
		{"max_tokens beyond int64", "POST", "/v1/completions", `{"prompt":"hi","max_tokens":99999999999999999999}`, 400, "max_tokens", ""},
		{"a prompt over the context", "POST", "/v1/chat/completions", chat(map[string]any{"messages": []map[string]string{{"role": "user", "content": strings.Repeat("long ", 200)}}}), 400, "messages", "context_length_exceeded"},
		{"an unknown model", "POST", "/v1/chat/completions", chat(map[string]any{"model": "gpt-4"}), 404, "model", "model_not_found"},
		{"retrieving an unknown model", "GET", "/v1/models/gpt-4", nil, 404, "model", "model_not_found"},
		{"an unknown route", "GET", "/v1/embeddings", nil, 404, "", ""},
		{"the wrong method", "GET", "/v1/completions", nil, 405, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkError(t, do(t, tt.method, h.url+tt.path, tt.body), tt.status, tt.param, tt.code)
		})
	}
}

func TestAnAPIKeyGuardsTheAPIButNotTheProbes(t *testing.T) {
	h := start(t, server.Options{APIKey: "sekret"}, scheduler.Config{})
	checkError(t, do(t, "GET", h.url+"/v1/models", nil), 401, "", "missing_api_key")
	checkError(t, do(t, "GET", h.url+"/v1/models", nil, "Authorization", "Bearer wrong"), 401, "", "invalid_api_key")
	if r := do(t, "GET", h.url+"/v1/models", nil, "Authorization", "Bearer sekret"); r.status != 200 {
		t.Errorf("with the key: %d %s", r.status, r.body)
	}
	for _, p := range []string{"/health", "/ready", "/metrics"} {
		if r := do(t, "GET", h.url+p, nil); r.status != 200 {
			t.Errorf("%s without a key: %d", p, r.status)
		}
	}
}

// streamStart posts a streaming request and returns once its first token
// arrived; cancel ends it from the client side.
func streamStart(t *testing.T, url string, body map[string]any) (next func() (string, bool), cancel func()) {
	t.Helper()
	body["stream"] = true
	b, _ := json.Marshal(body)
	ctx, cancelCtx := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(b))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		body, _ := io.ReadAll(res.Body)
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	sc := bufio.NewScanner(res.Body)
	next = func() (string, bool) {
		for sc.Scan() {
			if line := sc.Text(); line != "" {
				return line, true
			}
		}
		return "", false
	}
	if _, ok := next(); !ok {
		t.Fatal("the stream ended before its first event")
	}
	cancel = func() {
		cancelCtx()
		res.Body.Close()
	}
	t.Cleanup(cancel)
	return next, cancel
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAClientThatDisconnectsFreesItsKVBlocks(t *testing.T) { testDisconnectFreesBlocks(t, loadTiny) }

func testDisconnectFreesBlocks(t *testing.T, load func() (*model.Model, error)) {
	h := startWith(t, load, server.Options{}, scheduler.Config{})
	_, cancel := streamStart(t, h.url+"/v1/completions", greedy(map[string]any{"prompt": "go on", "max_tokens": 400}))
	waitFor(t, "the request to hold KV blocks", func() bool { return h.sched.Stats().KVBlocksUsed > 0 })
	cancel()
	waitFor(t, "the disconnected request to free its blocks", func() bool {
		st := h.sched.Stats()
		return st.Running == 0 && st.KVBlocksUsed == 0
	})
	if !strings.Contains(string(do(t, "GET", h.url+"/metrics", nil).body), `vllm:request_success_total{finished_reason="abort",model_name="tiny-test"} 1`) {
		t.Error("the aborted request is not counted")
	}
}

func TestAFullQueueAnswers429WithRetryAfter(t *testing.T) {
	h := start(t, server.Options{RetryAfter: 2 * time.Second}, scheduler.Config{MaxNumSeqs: 1, MaxQueue: 1})
	long := func() map[string]any { return greedy(map[string]any{"prompt": "busy", "max_tokens": 500}) }
	streamStart(t, h.url+"/v1/completions", long()) // runs
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // waits in the queue
		b, _ := json.Marshal(long())
		req, _ := http.NewRequestWithContext(ctx, "POST", h.url+"/v1/completions", bytes.NewReader(b))
		if res, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}()
	waitFor(t, "one request running and one waiting", func() bool {
		st := h.sched.Stats()
		return st.Running == 1 && st.Waiting == 1
	})
	r := do(t, "POST", h.url+"/v1/completions", long())
	checkError(t, r, 429, "", "queue_full")
	if r.header.Get("Retry-After") != "2" {
		t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
	}
}

func TestAPreemptedRequestStillCompletesCorrectly(t *testing.T) { testPreemption(t, loadTiny) }

func testPreemption(t *testing.T, load func() (*model.Model, error)) {
	// Each request needs 3 of the 4 blocks by its end: running four at
	// once must preempt.
	h := startWith(t, load, server.Options{}, scheduler.Config{KVCacheTokens: 64, MaxBatchedTokens: 16, MaxNumSeqs: 4})
	reqs := make([]map[string]any, 4)
	for i := range reqs {
		reqs[i] = greedy(map[string]any{"prompt": strings.Repeat("ab ", i+1), "max_tokens": 36, "logprobs": 0})
	}
	text := func(r response) string {
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		c := decodeJSON[completion](t, r.body)
		if *c.Choices[0].FinishReason != "length" || c.Usage.CompletionTokens != 36 {
			t.Errorf("finish %q usage %+v", *c.Choices[0].FinishReason, c.Usage)
		}
		return strings.Join(c.Choices[0].Logprobs.Tokens, "|")
	}
	alone := make([]string, len(reqs))
	for i, r := range reqs {
		alone[i] = text(do(t, "POST", h.url+"/v1/completions", r))
	}
	if p := h.sched.Stats().Preemptions; p != 0 {
		t.Fatalf("%d preemptions with one request at a time", p)
	}
	together := make([]string, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Go(func() { together[i] = text(do(t, "POST", h.url+"/v1/completions", r)) })
	}
	wg.Wait()
	for i := range reqs {
		if alone[i] != together[i] {
			t.Errorf("request %d: alone %q, with preemption %q", i, alone[i], together[i])
		}
	}
	if !strings.Contains(string(do(t, "GET", h.url+"/metrics", nil).body), "vllm:num_preemptions_total{model_name=\"tiny-test\"} ") ||
		h.sched.Stats().Preemptions == 0 {
		t.Error("no preemption happened or it is not in /metrics")
	}
}

func TestMetricsUseVLLMNamesWithTheModelLabel(t *testing.T) {
	h := start(t, server.Options{}, scheduler.Config{})
	c := decodeJSON[completion](t, do(t, "POST", h.url+"/v1/completions", greedy(map[string]any{"prompt": "count me"})).body)
	r := do(t, "GET", h.url+"/metrics", nil)
	body := string(r.body)
	for _, want := range []string{
		`vllm:num_requests_running{model_name="tiny-test"} 0`,
		`vllm:num_requests_waiting{model_name="tiny-test"} 0`,
		`vllm:kv_cache_usage_perc{model_name="tiny-test"} 0`,
		fmt.Sprintf(`vllm:prompt_tokens_total{model_name="tiny-test"} %d`, c.Usage.PromptTokens),
		`vllm:generation_tokens_total{model_name="tiny-test"} 16`,
		`vllm:request_success_total{finished_reason="length",model_name="tiny-test"} 1`,
		`vllm:request_success_total{finished_reason="stop",model_name="tiny-test"} 0`,
		`vllm:time_to_first_token_seconds_count{model_name="tiny-test"} 1`,
		`vllm:inter_token_latency_seconds_count{model_name="tiny-test"} 15`,
		`vllm:e2e_request_latency_seconds_count{model_name="tiny-test"} 1`,
		`vllm:request_queue_time_seconds_count{model_name="tiny-test"} 1`,
		`vllm:num_preemptions_total{model_name="tiny-test"} 0`,
		"go_goroutines ",
		"go_memstats_heap_alloc_bytes ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestNotReadyUntilAttachedAndWhileDraining(t *testing.T) {
	srv := server.New(server.Options{ModelName: modelName})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	if r := do(t, "GET", hs.URL+"/health", nil); r.status != 200 {
		t.Errorf("/health while loading: %d", r.status)
	}
	if r := do(t, "GET", hs.URL+"/ready", nil); r.status != 503 || !strings.Contains(string(r.body), "loading") {
		t.Errorf("/ready while loading: %d %s", r.status, r.body)
	}
	checkError(t, do(t, "POST", hs.URL+"/v1/completions", greedy(map[string]any{"prompt": "x"})), 503, "", "not_ready")

	m, err := loadTiny()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sch, _ := scheduler.New(m, scheduler.Config{})
	defer sch.Close()
	srv.Attach(sch)
	if r := do(t, "GET", hs.URL+"/ready", nil); r.status != 200 {
		t.Errorf("/ready once attached: %d", r.status)
	}
	srv.StartDraining()
	if r := do(t, "GET", hs.URL+"/ready", nil); r.status != 503 || !strings.Contains(string(r.body), "draining") {
		t.Errorf("/ready while draining: %d %s", r.status, r.body)
	}
	checkError(t, do(t, "POST", hs.URL+"/v1/completions", greedy(map[string]any{"prompt": "x"})), 503, "", "draining")
	if r := do(t, "GET", hs.URL+"/health", nil); r.status != 200 {
		t.Errorf("/health while draining: %d", r.status)
	}
}

func TestRunDrainsInFlightRequestsWhenItsContextEnds(t *testing.T) { testDrain(t, loadTiny) }

func testDrain(t *testing.T, load func() (*model.Model, error)) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ran := make(chan error, 1)
	go func() {
		ran <- server.Run(ctx, server.RunConfig{
			Options: server.Options{ModelName: modelName}, Listener: ln, Load: load,
			ShutdownGrace: time.Minute,
		})
	}()
	waitFor(t, "ready", func() bool {
		res, err := http.Get(url + "/ready")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	next, _ := streamStart(t, url+"/v1/completions", greedy(map[string]any{"prompt": "keep going", "max_tokens": 300}))
	stop() // SIGTERM, as cmd/moe delivers it
	waitFor(t, "/ready to turn false", func() bool { return do(t, "GET", url+"/ready", nil).status == 503 })
	checkError(t, do(t, "POST", url+"/v1/completions", greedy(map[string]any{"prompt": "late"})), 503, "", "draining")

	var last, finish string
	for {
		line, ok := next()
		if !ok {
			break
		}
		if strings.Contains(line, `"finish_reason":"`) {
			finish = line
		}
		last = line
	}
	if last != "data: [DONE]" || !strings.Contains(finish, `"finish_reason":"length"`) {
		t.Errorf("the in-flight request ended with %q (finish %q)", last, finish)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after draining")
	}
}

// A client that keeps its connection alive (through a Service, pinned to this replica) must
// not be left sending requests into the drain: when the server starts draining it closes
// idle connections and ends busy ones after their response, so the client's next request
// opens a connection to another replica.
func TestRunEndsKeepAliveWhenDraining(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ran := make(chan error, 1)
	go func() {
		ran <- server.Run(ctx, server.RunConfig{
			Options: server.Options{ModelName: modelName}, Listener: ln, Load: loadTiny,
			ShutdownGrace: time.Minute,
		})
	}()
	waitFor(t, "ready", func() bool { return do(t, "GET", url+"/ready", nil).status == 200 })

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	get := func() (*http.Response, error) {
		if _, err := conn.Write([]byte("GET /health HTTP/1.1\r\nHost: engine\r\n\r\n")); err != nil {
			return nil, err
		}
		res, err := http.ReadResponse(br, nil)
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		return res, err
	}
	if res, err := get(); err != nil || res.Close {
		t.Fatalf("keep-alive request before the drain: %v, close=%v", err, res != nil && res.Close)
	}
	// Keep the drain going with requests in flight, so the server is still up below.
	var streams []func() (string, bool)
	for range 8 {
		next, _ := streamStart(t, url+"/v1/completions", greedy(map[string]any{"prompt": "keep going", "max_tokens": 400}))
		streams = append(streams, next)
	}
	stop()
	// The next request on the kept-alive connection either finds it closed or is the last
	// one it carries.
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if res, err := get(); err == nil && !res.Close {
		t.Errorf("a kept-alive connection still carries requests while the server drains (status %d)", res.StatusCode)
	}
	for _, next := range streams {
		for {
			if _, ok := next(); !ok {
				break
			}
		}
	}
	if err := <-ran; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// A request that can never be accepted (more sequences than the queue and the running set
// hold) gets a 400 that says why, not a 429 that SDKs retry forever; one that just fits runs.
func TestARequestThatCanNeverFitIs400Not429(t *testing.T) {
	h := start(t, server.Options{}, scheduler.Config{MaxNumSeqs: 1, MaxQueue: 1})
	r := do(t, "POST", h.url+"/v1/completions", greedy(map[string]any{"prompt": "hi", "max_tokens": 2, "n": 3}))
	checkError(t, r, 400, "n", "")
	if !strings.Contains(string(r.body), "at most 2") {
		t.Errorf("the error does not say the limit: %s", r.body)
	}
	if r := do(t, "POST", h.url+"/v1/completions", greedy(map[string]any{"prompt": "hi", "max_tokens": 2, "n": 2})); r.status != 200 {
		t.Errorf("n=2 with room for 2: status %d: %s", r.status, r.body)
	}
}
