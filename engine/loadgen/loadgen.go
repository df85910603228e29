// Package loadgen drives an OpenAI-compatible server with concurrent
// clients and measures what they see: aggregate output tokens per second,
// time to first token (TTFT), inter-token latency (ITL, the gaps between
// streamed chunks) and end-to-end latency, plus the server's goroutines and
// memory (from its /metrics) before and after the run.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options set the load.
type Options struct {
	// URL is the server's base URL (http://host:port).
	URL string
	// Model is the "model" of each request (default: the first model the
	// server lists).
	Model  string
	APIKey string
	// Concurrency is the number of clients, each with one request in flight.
	Concurrency int
	// Requests is the total number of requests (0: unbounded, with Duration).
	Requests int
	// Duration stops starting requests after this long (0: no limit).
	Duration time.Duration
	// Stream asks for SSE streaming; TTFT and ITL need it.
	Stream bool
	// Chat uses /v1/chat/completions instead of /v1/completions.
	Chat bool
	// Prompt, MaxTokens and Temperature shape every request. IgnoreEOS
	// (a vLLM extension the server supports) makes every request generate
	// exactly MaxTokens tokens.
	Prompt      string
	MaxTokens   int
	Temperature float64
	IgnoreEOS   bool
	// SystemPrompts, when set, start every request: each picks one of them
	// at random (seeded, so runs repeat), as a system message (Chat) or in
	// front of the prompt, and the prompt gets the request's number, so
	// requests share a system prompt and nothing after it: the traffic that
	// prefix caching and prefix-affine routing are for.
	SystemPrompts []string
	// Client is the HTTP client (default: one with a connection per client).
	Client *http.Client
}

// Percentiles summarise a latency, in seconds.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Mean float64 `json:"mean"`
}

// ServerSnapshot is read from the server's /metrics.
type ServerSnapshot struct {
	Goroutines     float64 `json:"goroutines"`
	HeapInuseBytes float64 `json:"heapInuseBytes"`
	RSSBytes       float64 `json:"residentMemoryBytes"`
}

// Result is one run's measurements.
type Result struct {
	Concurrency           int            `json:"concurrency"`
	Stream                bool           `json:"stream"`
	Requests              int            `json:"requests"`
	Errors                int            `json:"errors"`
	ErrorSamples          []string       `json:"errorSamples,omitempty"`
	Seconds               float64        `json:"seconds"`
	PromptTokens          int            `json:"promptTokens"`
	OutputTokens          int            `json:"outputTokens"`
	OutputTokensPerSecond float64        `json:"outputTokensPerSecond"`
	RequestsPerSecond     float64        `json:"requestsPerSecond"`
	TTFT                  Percentiles    `json:"ttftSeconds"`
	ITL                   Percentiles    `json:"itlSeconds"`
	E2E                   Percentiles    `json:"e2eSeconds"`
	ServerBefore          ServerSnapshot `json:"serverBefore"`
	ServerAfter           ServerSnapshot `json:"serverAfter"`
}

// sample is one request's measurements.
type sample struct {
	ttft, e2e      time.Duration
	itl            []time.Duration
	prompt, output int
	err            error
}

// Run applies the load and measures it. It fails only if the server cannot
// be reached at all; failed requests are counted in Result.Errors.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Concurrency < 1 {
		o.Concurrency = 1
	}
	if o.Requests <= 0 && o.Duration <= 0 {
		return Result{}, errors.New("loadgen: give a number of requests or a duration")
	}
	if o.MaxTokens <= 0 {
		o.MaxTokens = 128
	}
	if o.Prompt == "" {
		o.Prompt = "Tell me a long story about a mixture of experts that learned to share the work."
	}
	o.URL = strings.TrimSuffix(o.URL, "/")
	if o.Client == nil {
		o.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.Concurrency, MaxConnsPerHost: o.Concurrency + 2}}
	}
	if o.Model == "" {
		m, err := firstModel(ctx, o)
		if err != nil {
			return Result{}, err
		}
		o.Model = m
	}
	res := Result{Concurrency: o.Concurrency, Stream: o.Stream}
	before, err := snapshot(ctx, o)
	if err != nil {
		return Result{}, err
	}
	res.ServerBefore = before

	var started atomic.Int64
	var pickMu sync.Mutex
	pick := rand.New(rand.NewPCG(1, 1))
	request := func(n int64) (system, prompt string) {
		if len(o.SystemPrompts) == 0 {
			return "", o.Prompt
		}
		pickMu.Lock()
		defer pickMu.Unlock()
		return o.SystemPrompts[pick.IntN(len(o.SystemPrompts))], fmt.Sprintf("%s (request %d)", o.Prompt, n)
	}
	var deadline time.Time
	if o.Duration > 0 {
		deadline = time.Now().Add(o.Duration)
	}
	samples := make(chan sample, o.Concurrency)
	var wg sync.WaitGroup
	t0 := time.Now()
	for range o.Concurrency {
		wg.Go(func() {
			for ctx.Err() == nil {
				n := started.Add(1)
				if o.Requests > 0 && n > int64(o.Requests) {
					return
				}
				if !deadline.IsZero() && time.Now().After(deadline) {
					return
				}
				system, prompt := request(n)
				samples <- one(ctx, o, system, prompt)
			}
		})
	}
	go func() {
		wg.Wait()
		close(samples)
	}()
	var ttft, itl, e2e []float64
	for s := range samples {
		res.Requests++
		if s.err != nil {
			res.Errors++
			if len(res.ErrorSamples) < 5 {
				res.ErrorSamples = append(res.ErrorSamples, s.err.Error())
			}
			continue
		}
		res.PromptTokens += s.prompt
		res.OutputTokens += s.output
		e2e = append(e2e, s.e2e.Seconds())
		if o.Stream {
			ttft = append(ttft, s.ttft.Seconds())
			for _, d := range s.itl {
				itl = append(itl, d.Seconds())
			}
		}
	}
	elapsed := time.Since(t0)
	res.Seconds = elapsed.Seconds()
	res.OutputTokensPerSecond = float64(res.OutputTokens) / elapsed.Seconds()
	res.RequestsPerSecond = float64(res.Requests-res.Errors) / elapsed.Seconds()
	res.TTFT, res.ITL, res.E2E = summarise(ttft), summarise(itl), summarise(e2e)

	// Let the server see the connections close before counting goroutines.
	if t, ok := o.Client.Transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	time.Sleep(500 * time.Millisecond)
	if after, err := snapshot(context.WithoutCancel(ctx), o); err == nil {
		res.ServerAfter = after
	}
	return res, nil
}

func summarise(v []float64) Percentiles {
	if len(v) == 0 {
		return Percentiles{}
	}
	slices.Sort(v)
	q := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(v)))) - 1
		return v[max(0, min(i, len(v)-1))]
	}
	var sum float64
	for _, x := range v {
		sum += x
	}
	return Percentiles{P50: q(0.5), P95: q(0.95), P99: q(0.99), Mean: sum / float64(len(v))}
}

func (o *Options) request(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, o.URL+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if o.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+o.APIKey)
	}
	return o.Client.Do(req)
}

func firstModel(ctx context.Context, o Options) (string, error) {
	res, err := o.request(ctx, "GET", "/v1/models", nil)
	if err != nil {
		return "", fmt.Errorf("loadgen: %w", err)
	}
	defer res.Body.Close()
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&list); err != nil || res.StatusCode != 200 || len(list.Data) == 0 {
		return "", fmt.Errorf("loadgen: listing the server's models failed (status %d)", res.StatusCode)
	}
	return list.Data[0].ID, nil
}

// snapshot reads goroutines and memory from the Prometheus text of /metrics.
func snapshot(ctx context.Context, o Options) (ServerSnapshot, error) {
	res, err := o.request(ctx, "GET", "/metrics", nil)
	if err != nil {
		return ServerSnapshot{}, fmt.Errorf("loadgen: %w", err)
	}
	defer res.Body.Close()
	var s ServerSnapshot
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_goroutines":
			s.Goroutines = v
		case "go_memstats_heap_inuse_bytes":
			s.HeapInuseBytes = v
		case "process_resident_memory_bytes":
			s.RSSBytes = v
		}
	}
	return s, nil
}

// one sends a request and measures it.
func one(ctx context.Context, o Options, system, prompt string) sample {
	body := map[string]any{"model": o.Model, "max_tokens": o.MaxTokens, "temperature": o.Temperature, "stream": o.Stream}
	if o.IgnoreEOS {
		body["ignore_eos"] = true
	}
	path := "/v1/completions"
	if o.Chat {
		path = "/v1/chat/completions"
		msgs := []map[string]string{{"role": "user", "content": prompt}}
		if system != "" {
			msgs = append([]map[string]string{{"role": "system", "content": system}}, msgs...)
		}
		body["messages"] = msgs
	} else {
		body["prompt"] = strings.TrimPrefix(system+"\n\n"+prompt, "\n\n")
	}
	if o.Stream {
		body["stream_options"] = map[string]bool{"include_usage": true}
	}
	start := time.Now()
	res, err := o.request(ctx, "POST", path, body)
	if err != nil {
		return sample{err: err}
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return sample{err: fmt.Errorf("status %d: %s", res.StatusCode, bytes.TrimSpace(b))}
	}
	type usage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	}
	type chunk struct {
		Choices []struct {
			Text  string `json:"text"`
			Delta struct {
				Content string `json:"content"`
			} `json:"delta"`
		} `json:"choices"`
		Usage *usage `json:"usage"`
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if !o.Stream {
		var c chunk
		if err := json.NewDecoder(res.Body).Decode(&c); err != nil {
			return sample{err: err}
		}
		if c.Usage == nil {
			return sample{err: errors.New("a response without usage")}
		}
		e2e := time.Since(start)
		return sample{ttft: e2e, e2e: e2e, prompt: c.Usage.PromptTokens, output: c.Usage.CompletionTokens}
	}
	var s sample
	var last time.Time
	done := false
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			break
		}
		now := time.Now()
		var c chunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return sample{err: fmt.Errorf("a malformed chunk: %w", err)}
		}
		if c.Error != nil {
			return sample{err: errors.New(c.Error.Message)}
		}
		if c.Usage != nil {
			s.prompt, s.output = c.Usage.PromptTokens, c.Usage.CompletionTokens
		}
		text := false
		for _, ch := range c.Choices {
			text = text || ch.Text != "" || ch.Delta.Content != ""
		}
		if !text {
			continue
		}
		if last.IsZero() {
			s.ttft = now.Sub(start)
		} else {
			s.itl = append(s.itl, now.Sub(last))
		}
		last = now
	}
	if err := sc.Err(); err != nil {
		return sample{err: err}
	}
	if !done {
		return sample{err: errors.New("the stream ended without [DONE]")}
	}
	s.e2e = time.Since(start)
	return s
}

// Format writes r for people.
func (r Result) Format(w io.Writer) {
	ms := func(p Percentiles) string {
		return fmt.Sprintf("p50 %.1f ms, p95 %.1f ms", p.P50*1e3, p.P95*1e3)
	}
	fmt.Fprintf(w, "concurrency %d, %d requests (%d errors) in %.1f s, stream %v\n", r.Concurrency, r.Requests, r.Errors, r.Seconds, r.Stream)
	for _, e := range r.ErrorSamples {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	fmt.Fprintf(w, "output: %d tokens, %.1f tok/s aggregate; %.2f requests/s\n", r.OutputTokens, r.OutputTokensPerSecond, r.RequestsPerSecond)
	if r.Stream {
		fmt.Fprintf(w, "TTFT: %s\nITL:  %s\n", ms(r.TTFT), ms(r.ITL))
	}
	fmt.Fprintf(w, "E2E:  %s\n", ms(r.E2E))
	fmt.Fprintf(w, "server before: %.0f goroutines, heap in use %.1f MiB, RSS %.1f MiB\n", r.ServerBefore.Goroutines, r.ServerBefore.HeapInuseBytes/(1<<20), r.ServerBefore.RSSBytes/(1<<20))
	fmt.Fprintf(w, "server after:  %.0f goroutines, heap in use %.1f MiB, RSS %.1f MiB\n", r.ServerAfter.Goroutines, r.ServerAfter.HeapInuseBytes/(1<<20), r.ServerAfter.RSSBytes/(1<<20))
}

// SyntheticSystemPrompts makes n distinct system prompts of about words
// words each (a few tokens more than words), the same on every run.
func SyntheticSystemPrompts(n, words int) []string {
	vocab := strings.Fields("the model answers questions about routing caching experts tokens batches " +
		"latency memory kernels layers attention heads blocks prompts replicas clusters nodes pods " +
		"services requests streams metrics gateways queues limits budgets plans shards weights")
	out := make([]string, n)
	for i := range out {
		r := rand.New(rand.NewPCG(uint64(i)+1, 7))
		var b strings.Builder
		fmt.Fprintf(&b, "You are assistant number %d.", i)
		for range words {
			b.WriteString(" " + vocab[r.IntN(len(vocab))])
		}
		out[i] = b.String()
	}
	return out
}
