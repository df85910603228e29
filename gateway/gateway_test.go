package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moe-operator/moe-operator/gateway/enginemetrics"
)

// engine is a loopback HTTP server that answers like an OpenAI engine: it names itself in
// each answer, streams when asked, and serves vLLM-named /metrics.
type engine struct {
	name    string
	srv     *httptest.Server
	waiting atomic.Int64
	hits    atomic.Int64
	// status, when set, is the answer to every inference request (503: draining).
	status atomic.Int64
	// hold, when set, blocks each request until it is closed.
	hold chan struct{}
	// step, when set, receives once per streamed chunk before the next is sent.
	step chan struct{}
	// breakAfter, when > 0, drops the connection after that many streamed chunks.
	breakAfter int
	mu         sync.Mutex
	lastAuth   string
}

func newEngine(t *testing.T, name string) *engine {
	e := &engine{name: name}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *engine) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/metrics" {
		fmt.Fprintf(w, "vllm:num_requests_running{model_name=\"m\"} 0\nvllm:num_requests_waiting{model_name=\"m\"} %d\n"+
			"vllm:kv_cache_usage_perc{model_name=\"m\"} 0.1\nvllm:generation_tokens_total{model_name=\"m\"} 0\n", e.waiting.Load())
		return
	}
	e.hits.Add(1)
	e.mu.Lock()
	e.lastAuth = r.Header.Get("Authorization")
	e.mu.Unlock()
	if s := e.status.Load(); s != 0 {
		http.Error(w, `{"error":{"message":"draining"}}`, int(s))
		return
	}
	if e.hold != nil {
		<-e.hold
	}
	var q struct {
		Stream bool `json:"stream"`
	}
	_ = json.NewDecoder(r.Body).Decode(&q)
	if !q.Stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"object":"chat.completion","choices":[{"message":{"role":"assistant","content":%q}}]}`, e.name)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	for i := range 3 {
		if e.breakAfter > 0 && i == e.breakAfter {
			panic(http.ErrAbortHandler)
		}
		fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":\"%s-%d\"}}]}\n\n", e.name, i)
		w.(http.Flusher).Flush()
		if e.step != nil {
			<-e.step
		}
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}

func replicaOf(t *testing.T, model string, e *engine) *Replica {
	u, err := url.Parse(e.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return &Replica{Model: model, URL: u}
}

func startGateway(t *testing.T, opts Options, replicas ...*Replica) (*Gateway, string) {
	t.Helper()
	g := New(NewRouter(replicas), opts)
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return g, srv.URL
}

func post(t *testing.T, base, path, body string, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

func chat(model, system string) string {
	return fmt.Sprintf(`{"model":%q,"messages":[{"role":"system","content":%q},{"role":"user","content":"hi"}]}`, model, system)
}

// errorOf decodes an OpenAI error body.
func errorOf(t *testing.T, body string) (typ, code, msg string) {
	t.Helper()
	var e struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Code    *string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("not an OpenAI error body: %q", body)
	}
	c := ""
	if e.Error.Code != nil {
		c = *e.Error.Code
	}
	return e.Error.Type, c, e.Error.Message
}

func TestModelsAndRoutingByModel(t *testing.T) {
	a, b := newEngine(t, "a"), newEngine(t, "b")
	_, base := startGateway(t, Options{}, replicaOf(t, "alpha", a), replicaOf(t, "beta", b))

	res, err := http.Get(base + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if list.Object != "list" || len(list.Data) != 2 || list.Data[0].ID != "alpha" || list.Data[1].ID != "beta" || list.Data[0].Object != "model" {
		t.Fatalf("models = %+v", list)
	}
	for model, want := range map[string]string{"alpha": "a", "beta": "b"} {
		res, body := post(t, base, "/v1/chat/completions", chat(model, "s"))
		if res.StatusCode != 200 || !strings.Contains(body, `"content":"`+want+`"`) {
			t.Errorf("%s went to %q (%d)", model, body, res.StatusCode)
		}
	}

	res, body := post(t, base, "/v1/chat/completions", chat("gamma", "s"))
	if typ, code, msg := errorOf(t, body); res.StatusCode != 404 || code != "model_not_found" || typ != "invalid_request_error" || !strings.Contains(msg, "alpha, beta") {
		t.Errorf("unknown model: %d %q", res.StatusCode, body)
	}
}

func TestBadRequestsGetOpenAIErrors(t *testing.T) {
	_, base := startGateway(t, Options{MaxBodyBytes: 1 << 10}, replicaOf(t, "m", newEngine(t, "a")))
	for _, tt := range []struct {
		body   string
		status int
		want   string
	}{
		{"{not json", 400, "not valid JSON"},
		{`{"messages":[]}`, 400, `no "model"`},
		{`{"model":"m","prompt":"` + strings.Repeat("x", 2<<10) + `"}`, 413, "larger than 1024 bytes"},
	} {
		res, body := post(t, base, "/v1/completions", tt.body)
		if _, _, msg := errorOf(t, body); res.StatusCode != tt.status || !strings.Contains(msg, tt.want) {
			t.Errorf("%.20q: %d %q, want %d saying %q", tt.body, res.StatusCode, body, tt.status, tt.want)
		}
	}
	res, body := post(t, base, "/v1/embeddings", `{"model":"m"}`)
	if typ, _, _ := errorOf(t, body); res.StatusCode != 404 || typ != "not_found_error" {
		t.Errorf("an unserved path: %d %q", res.StatusCode, body)
	}
}

func TestRequestsWithOnePrefixStayOnOneReplica(t *testing.T) {
	engines := []*engine{newEngine(t, "a"), newEngine(t, "b"), newEngine(t, "c")}
	var reps []*Replica
	for _, e := range engines {
		reps = append(reps, replicaOf(t, "m", e))
	}
	_, base := startGateway(t, Options{}, reps...)
	system := strings.Repeat("You are a careful assistant. ", 20)
	first := ""
	for i := range 20 {
		_, body := post(t, base, "/v1/chat/completions", chat("m", system))
		if i == 0 {
			first = body
		} else if body != first {
			t.Fatalf("request %d went elsewhere: %q, then %q", i, first, body)
		}
	}
	// Different prefixes spread over the replicas.
	seen := map[string]bool{}
	for i := range 60 {
		_, body := post(t, base, "/v1/chat/completions", chat("m", fmt.Sprintf("system prompt number %d", i)))
		seen[body] = true
	}
	if len(seen) != 3 {
		t.Errorf("60 prefixes used %d of 3 replicas", len(seen))
	}
}

func TestBoundedLoadMovesAPrefixOffABusyReplica(t *testing.T) {
	a, b := newEngine(t, "a"), newEngine(t, "b")
	ra, rb := replicaOf(t, "m", a), replicaOf(t, "m", b)
	rt := NewRouter([]*Replica{ra, rb})
	prefix := "a shared system prompt"
	owner, d, err := rt.Pick("m", prefix, nil)
	if err != nil || d != DecisionPrefix {
		t.Fatalf("Pick = %v, %s, %v", owner, d, err)
	}
	other := ra
	if owner == ra {
		other = rb
	}
	// The owner's queue (from its /metrics) is far over the mean: the prefix moves on.
	owner.load.Store(&enginemetrics.Reading{Waiting: 10})
	got, d, _ := rt.Pick("m", prefix, nil)
	if got != other || d != DecisionPrefixOverflow {
		t.Errorf("with the owner busy: %s (%s), want the other replica by overflow", got.URL, d)
	}
	// A full KV cache moves it too.
	owner.load.Store(&enginemetrics.Reading{KVCacheUsage: 0.99})
	if got, _, _ := rt.Pick("m", prefix, nil); got != other {
		t.Errorf("with the owner's KV cache full: %s", got.URL)
	}
	owner.load.Store(&enginemetrics.Reading{})
	if got, d, _ := rt.Pick("m", prefix, nil); got != owner || d != DecisionPrefix {
		t.Errorf("once the owner is idle again: %s (%s)", got.URL, d)
	}
}

func TestScrapeReadsTheEnginesLoad(t *testing.T) {
	a, b := newEngine(t, "a"), newEngine(t, "b")
	a.waiting.Store(7)
	g, _ := startGateway(t, Options{}, replicaOf(t, "m", a), replicaOf(t, "m", b))
	b.srv.Close() // unreachable: marked down
	g.scrapeOnce(context.Background())
	for _, r := range g.router.Replicas() {
		switch r.URL.String() {
		case a.srv.URL:
			if l := r.load.Load(); l == nil || l.Waiting != 7 || r.down.Load() {
				t.Errorf("a: load %+v, down %v", l, r.down.Load())
			}
		case b.srv.URL:
			if !r.down.Load() {
				t.Error("b is unreachable but not down")
			}
		}
	}
}

func TestAFailureBeforeTheFirstByteIsRetriedOnAnotherReplica(t *testing.T) {
	for _, tt := range []struct {
		name string
		fail func(e *engine)
	}{
		{"connection refused", func(e *engine) { e.srv.Close() }},
		{"503 from a draining engine", func(e *engine) { e.status.Store(503) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newEngine(t, "a"), newEngine(t, "b")
			g, base := startGateway(t, Options{}, replicaOf(t, "m", a), replicaOf(t, "m", b))
			// Find the prefix's owner and break it.
			owner, _, _ := g.router.Pick("m", (request{Messages: []message{{Role: "system", Content: json.RawMessage(`"p"`)}, {Role: "user", Content: json.RawMessage(`"hi"`)}}}).prefix(256), nil)
			broken, healthy := a, b
			if owner.URL.String() == b.srv.URL {
				broken, healthy = b, a
			}
			tt.fail(broken)
			res, body := post(t, base, "/v1/chat/completions", chat("m", "p"))
			if res.StatusCode != 200 || !strings.Contains(body, `"content":"`+healthy.name+`"`) {
				t.Fatalf("%d %q, want the healthy replica's answer", res.StatusCode, body)
			}
		})
	}
	// Every replica failing gives a 503 with Retry-After, in OpenAI's shape.
	a := newEngine(t, "a")
	a.status.Store(503)
	_, base := startGateway(t, Options{}, replicaOf(t, "m", a))
	res, body := post(t, base, "/v1/chat/completions", chat("m", "p"))
	if _, code, _ := errorOf(t, body); res.StatusCode != 503 || code != "no_replica" || res.Header.Get("Retry-After") == "" {
		t.Errorf("all down: %d %q %v", res.StatusCode, body, res.Header)
	}
}

func TestStreamsPassThroughChunkByChunk(t *testing.T) {
	e := newEngine(t, "a")
	e.step = make(chan struct{})
	_, base := startGateway(t, Options{}, replicaOf(t, "m", e))
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions",
		strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	rd := bufio.NewReader(res.Body)
	for i := range 3 {
		// The engine sends the next chunk only after this one was read through the gateway:
		// a buffering proxy would deadlock here.
		line, err := rd.ReadString('\n')
		if err != nil || !strings.Contains(line, fmt.Sprintf("a-%d", i)) {
			t.Fatalf("chunk %d: %q, %v", i, line, err)
		}
		_, _ = rd.ReadString('\n')
		e.step <- struct{}{}
	}
	rest, _ := io.ReadAll(rd)
	if !strings.Contains(string(rest), "[DONE]") {
		t.Errorf("the end: %q", rest)
	}
}

func TestAStreamThatBreaksEndsWithAnErrorEvent(t *testing.T) {
	e := newEngine(t, "a")
	e.breakAfter = 1
	_, base := startGateway(t, Options{}, replicaOf(t, "m", e))
	res, body := post(t, base, "/v1/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if res.StatusCode != 200 || !strings.Contains(body, "a-0") {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
	last := strings.TrimSpace(body[strings.LastIndex(strings.TrimSpace(body), "data: "):])
	var ev struct {
		Error struct {
			Type string `json:"type"`
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(last, "data: ")), &ev); err != nil || ev.Error.Code != "upstream_failed" {
		t.Errorf("last event %q (%v), want an error event", last, err)
	}
	if e.hits.Load() != 1 {
		t.Errorf("a stream that started was sent %d times, want once (no retry after the first byte)", e.hits.Load())
	}
}

func TestAPIKeys(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keys")
	if err := os.WriteFile(file, []byte("# the team's keys\nkey-one\n\nkey-two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := LoadKeys(file)
	if err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, "a")
	_, base := startGateway(t, Options{Keys: keys, BackendKey: "engine-secret"}, replicaOf(t, "m", e))
	for _, tt := range []struct {
		header, code string
		status       int
	}{
		{"", "missing_api_key", 401},
		{"Bearer nope", "invalid_api_key", 401},
		{"Bearer key-two", "", 200},
	} {
		var h []string
		if tt.header != "" {
			h = []string{"Authorization", tt.header}
		}
		res, body := post(t, base, "/v1/chat/completions", chat("m", "s"), h...)
		if res.StatusCode != tt.status {
			t.Errorf("%q: %d %q", tt.header, res.StatusCode, body)
		}
		if tt.code != "" {
			if _, code, _ := errorOf(t, body); code != tt.code {
				t.Errorf("%q: code %q, want %q", tt.header, code, tt.code)
			}
		}
	}
	e.mu.Lock()
	auth := e.lastAuth
	e.mu.Unlock()
	if auth != "Bearer engine-secret" {
		t.Errorf("the engine got Authorization %q: the client's key must not pass, the backend key must", auth)
	}
	if _, err := http.Get(base + "/health"); err != nil {
		t.Error(err)
	}

	// Rotation: the file changes, the old key stops working and the new one works.
	if err := os.WriteFile(file, []byte("key-three\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Minute)
	_ = os.Chtimes(file, future, future)
	deadline := time.Now().Add(3 * keysRecheck)
	for {
		res, _ := post(t, base, "/v1/chat/completions", chat("m", "s"), "Authorization", "Bearer key-three")
		if res.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the rotated key was not accepted")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res, _ := post(t, base, "/v1/chat/completions", chat("m", "s"), "Authorization", "Bearer key-one"); res.StatusCode != 401 {
		t.Errorf("a removed key still works: %d", res.StatusCode)
	}
	if _, err := LoadKeys(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing key file was accepted")
	}
}

func TestConcurrencyLimitsAnswer429(t *testing.T) {
	e := newEngine(t, "a")
	e.hold = make(chan struct{})
	_, base := startGateway(t, Options{MaxConcurrencyPerModel: 1}, replicaOf(t, "m", e))
	done := make(chan int)
	go func() {
		res, _ := post(t, base, "/v1/chat/completions", chat("m", "s"))
		done <- res.StatusCode
	}()
	for e.hits.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	res, body := post(t, base, "/v1/chat/completions", chat("m", "s"))
	if typ, code, _ := errorOf(t, body); res.StatusCode != 429 || typ != "rate_limit_error" || code != "concurrency_limit" || res.Header.Get("Retry-After") != "1" {
		t.Errorf("over the model's limit: %d %q", res.StatusCode, body)
	}
	close(e.hold)
	if s := <-done; s != 200 {
		t.Errorf("the first request: %d", s)
	}
	if res, _ := post(t, base, "/v1/chat/completions", chat("m", "s")); res.StatusCode != 200 {
		t.Errorf("after the first ended: %d", res.StatusCode)
	}
}

func TestGatewayMetrics(t *testing.T) {
	_, base := startGateway(t, Options{}, replicaOf(t, "m", newEngine(t, "a")))
	post(t, base, "/v1/chat/completions", chat("m", "s"))
	post(t, base, "/v1/chat/completions", chat("nope", "s"))
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`moe_gateway_requests_total{code="200",model="m"} 1`,
		`moe_gateway_requests_total{code="404",model="nope"} 1`,
		`moe_gateway_routing_decisions_total{decision="prefix",model="m"} 1`,
		`moe_gateway_request_duration_seconds_count{model="m"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
