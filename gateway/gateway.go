package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moe-operator/moe-operator/gateway/enginemetrics"
)

// Options configure a Gateway. Zero values take the defaults in brackets.
type Options struct {
	// Keys, when set, are the API keys clients must send on /v1/ paths.
	Keys *Keys
	// BackendKey is sent to the engines as "Authorization: Bearer BackendKey" (engines
	// started with an API key); the client's own Authorization header is never forwarded.
	BackendKey string
	// MaxConcurrencyPerKey and MaxConcurrencyPerModel bound the requests in flight per API
	// key and per model; over the bound, 429 with Retry-After. 0: unbounded.
	MaxConcurrencyPerKey, MaxConcurrencyPerModel int
	// PrefixBytes is how much of the prompt the prefix hash covers [256].
	PrefixBytes int
	// MaxBodyBytes bounds a request body [16 MiB].
	MaxBodyBytes int64
	// ScrapeInterval is how often every replica's /metrics is read [2s].
	ScrapeInterval time.Duration
	// Transport sends the requests to the engines [a transport with 5 s dial and header
	// timeouts of none: generation may take long before the first byte of a non-streamed
	// answer].
	Transport http.RoundTripper
	// HoldTimeout is how long a request for a model without a ready replica (scaled to
	// zero, or starting) is held before it gets 503 with Retry-After [5m].
	HoldTimeout time.Duration
	// MaxHeldPerModel bounds the requests held per model; past it, 503 [100].
	MaxHeldPerModel int
	// Waker, when set, is told the held counts, to bring a replica up (see Waker).
	Waker Waker
	// WakeRefresh is how often a held count above zero is told again [15s], and
	// WakeMinInterval the least time between two rounds of telling [1s].
	WakeRefresh, WakeMinInterval time.Duration
	// Registry receives the gateway's metrics [a new registry].
	Registry *prometheus.Registry
	Logger   *slog.Logger
}

// Gateway is the HTTP handler of `moe gateway`.
type Gateway struct {
	router *Router
	opts   Options
	client *http.Client
	mux    *http.ServeMux
	log    *slog.Logger

	perKey, perModel *limiter
	holds            *holds
	metrics          gatewayMetrics
}

// New returns a gateway over router's replicas.
func New(router *Router, opts Options) *Gateway {
	if opts.PrefixBytes <= 0 {
		opts.PrefixBytes = 256
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 16 << 20
	}
	if opts.ScrapeInterval <= 0 {
		opts.ScrapeInterval = 2 * time.Second
	}
	if opts.Transport == nil {
		opts.Transport = &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}
	}
	if opts.HoldTimeout <= 0 {
		opts.HoldTimeout = 5 * time.Minute
	}
	if opts.MaxHeldPerModel <= 0 {
		opts.MaxHeldPerModel = 100
	}
	if opts.WakeRefresh <= 0 {
		opts.WakeRefresh = 15 * time.Second
	}
	if opts.WakeMinInterval <= 0 {
		opts.WakeMinInterval = time.Second
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	g := &Gateway{
		router:   router,
		opts:     opts,
		client:   &http.Client{Transport: opts.Transport},
		log:      opts.Logger,
		perKey:   newLimiter(opts.MaxConcurrencyPerKey),
		perModel: newLimiter(opts.MaxConcurrencyPerModel),
		holds:    newHolds(),
		metrics:  newGatewayMetrics(opts.Registry),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", g.auth(g.models))
	mux.HandleFunc("POST /v1/chat/completions", g.auth(g.inference))
	mux.HandleFunc("POST /v1/completions", g.auth(g.inference))
	mux.HandleFunc("/v1/", g.auth(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, apiError{status: http.StatusNotFound, typ: "not_found_error",
			message: fmt.Sprintf("%s %s is not served by the gateway: it serves GET /v1/models, POST /v1/chat/completions and POST /v1/completions", r.Method, r.URL.Path)})
	}))
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{}))
	g.mux = mux
	return g
}

func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) { g.mux.ServeHTTP(w, r) }

// auth checks the API key on /v1/ paths when keys are configured, and passes the key's id
// on through the request's context.
func (g *Gateway) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if g.opts.Keys == nil {
			next(w, r)
			return
		}
		token := bearer(r.Header.Get("Authorization"))
		if token == "" {
			writeError(w, apiError{status: http.StatusUnauthorized, typ: "authentication_error", code: "missing_api_key",
				message: "this gateway requires an API key: send Authorization: Bearer KEY"})
			return
		}
		id, ok := g.opts.Keys.Check(token)
		if !ok {
			writeError(w, apiError{status: http.StatusUnauthorized, typ: "authentication_error", code: "invalid_api_key",
				message: "the API key is not valid"})
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), keyID{}, "key-"+strconv.Itoa(id))))
	}
}

type keyID struct{}

func (g *Gateway) models(w http.ResponseWriter, _ *http.Request) {
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	out := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, m := range g.router.Models() {
		out.Data = append(out.Data, model{ID: m, Object: "model", OwnedBy: "moe-operator"})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// request is what the gateway reads of an inference request: the model and the text the
// prefix hash covers.
type request struct {
	Model    string          `json:"model"`
	Messages []message       `json:"messages"`
	Prompt   json.RawMessage `json:"prompt"`
}

type message struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// prefix is the start of the prompt, at most n bytes: the messages' roles and contents in
// order (a string content, or its parts' texts), or the completion prompt.
func (q request) prefix(n int) string {
	var b strings.Builder
	add := func(s string) bool {
		b.WriteString(s)
		return b.Len() >= n
	}
	for _, m := range q.Messages {
		if add(m.Role + "\x00") {
			break
		}
		var s string
		if json.Unmarshal(m.Content, &s) == nil {
			if add(s + "\x00") {
				break
			}
			continue
		}
		var parts []struct {
			Text string `json:"text"`
		}
		_ = json.Unmarshal(m.Content, &parts)
		full := false
		for _, p := range parts {
			if full = add(p.Text); full {
				break
			}
		}
		if full || add("\x00") {
			break
		}
	}
	if len(q.Prompt) > 0 {
		var s string
		if json.Unmarshal(q.Prompt, &s) == nil {
			add(s)
		} else {
			add(string(q.Prompt))
		}
	}
	out := b.String()
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// inference routes a completion or chat request to a replica of its model, retrying once
// on another replica when the first fails before a byte of the answer was sent.
func (g *Gateway) inference(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.opts.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, apiError{status: http.StatusRequestEntityTooLarge, typ: "invalid_request_error", code: "request_too_large",
				message: fmt.Sprintf("the request body is larger than %d bytes", g.opts.MaxBodyBytes)})
			return
		}
		writeError(w, badRequest("reading the request body: "+err.Error()))
		return
	}
	var q request
	if err := json.Unmarshal(body, &q); err != nil {
		writeError(w, badRequest("the request body is not valid JSON: "+err.Error()))
		return
	}
	if q.Model == "" {
		writeError(w, badRequest(`the request has no "model": name one of GET /v1/models`))
		return
	}
	if !g.router.Known(q.Model) {
		writeError(w, *modelNotFound(q.Model, g.router.Models()))
		g.metrics.requests.WithLabelValues(q.Model, "404").Inc()
		return
	}
	key, _ := r.Context().Value(keyID{}).(string)
	if !g.perKey.acquire(key) {
		g.limited(w, q.Model, fmt.Sprintf("this API key has %d requests in flight, its limit", g.opts.MaxConcurrencyPerKey))
		return
	}
	defer g.perKey.release(key)
	if !g.perModel.acquire(q.Model) {
		g.limited(w, q.Model, fmt.Sprintf("the model %s has %d requests in flight, its limit", q.Model, g.opts.MaxConcurrencyPerModel))
		return
	}
	defer g.perModel.release(q.Model)
	if e := g.awaitReplica(r.Context(), q.Model); e != nil {
		if e.status != 499 {
			writeError(w, *e)
		}
		g.metrics.requests.WithLabelValues(q.Model, strconv.Itoa(e.status)).Inc()
		return
	}

	code := g.forward(w, r, q, body)
	g.metrics.requests.WithLabelValues(q.Model, strconv.Itoa(code)).Inc()
	g.metrics.duration.WithLabelValues(q.Model).Observe(time.Since(start).Seconds())
}

func (g *Gateway) limited(w http.ResponseWriter, model, why string) {
	g.metrics.requests.WithLabelValues(model, "429").Inc()
	writeError(w, apiError{status: http.StatusTooManyRequests, typ: "rate_limit_error", code: "concurrency_limit",
		message: why + "; retry later", retryAfter: 1})
}

// forward sends the request to a replica and copies its answer. It returns the status the
// client got.
func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, q request, body []byte) int {
	prefix := q.prefix(g.opts.PrefixBytes)
	var tried []*Replica
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		if attempt > 0 {
			// The retry goes to the least-loaded other replica: the prefix's owner failed.
			prefix = ""
			g.metrics.retries.WithLabelValues(q.Model).Inc()
		}
		rep, decision, err := g.router.Pick(q.Model, prefix, tried)
		if err != nil {
			if lastErr == nil {
				lastErr = err
			}
			break
		}
		tried = append(tried, rep)
		g.metrics.decisions.WithLabelValues(q.Model, string(decision)).Inc()
		res, err := g.send(r, rep, body)
		if err != nil {
			rep.down.Store(true)
			lastErr = fmt.Errorf("%s: %w", rep.URL.Host, err)
			continue
		}
		if res.StatusCode == http.StatusServiceUnavailable || res.StatusCode == http.StatusBadGateway {
			// A draining or unready engine; nothing has reached the client yet.
			_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
			res.Body.Close()
			lastErr = fmt.Errorf("%s answered %s", rep.URL.Host, res.Status)
			continue
		}
		g.relay(w, res, rep)
		return res.StatusCode
	}
	g.log.Warn("no replica answered", "model", q.Model, "tried", len(tried), "error", lastErr)
	writeError(w, apiError{status: http.StatusServiceUnavailable, typ: "service_unavailable_error", code: "no_replica",
		message: fmt.Sprintf("no replica of %s could take the request: %v; retry later", q.Model, lastErr), retryAfter: 1})
	return http.StatusServiceUnavailable
}

// hopHeaders are not forwarded (RFC 9110 §7.6.1), nor is the client's Authorization.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Authorization", "Content-Length"}

// send opens the request on rep. The replica counts it in flight until the answer is read.
func (g *Gateway) send(r *http.Request, rep *Replica, body []byte) (*http.Response, error) {
	u := *rep.URL
	u.Path = strings.TrimSuffix(u.Path, "/") + r.URL.Path
	u.RawQuery = r.URL.RawQuery
	out, err := http.NewRequestWithContext(r.Context(), http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	out.Header = r.Header.Clone()
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	if g.opts.BackendKey != "" {
		out.Header.Set("Authorization", "Bearer "+g.opts.BackendKey)
	}
	rep.inflight.Add(1)
	res, err := g.client.Do(out)
	if err != nil {
		rep.inflight.Add(-1)
		return nil, err
	}
	res.Body = &countedBody{ReadCloser: res.Body, rep: rep}
	return res, nil
}

// countedBody ends a request's in-flight count on the replica when its answer is closed.
type countedBody struct {
	io.ReadCloser
	rep  *Replica
	once sync.Once
}

func (b *countedBody) Close() error {
	b.once.Do(func() { b.rep.inflight.Add(-1) })
	return b.ReadCloser.Close()
}

// relay copies the engine's answer to the client, flushing after every read so a stream's
// chunks pass as they come. When the engine's connection breaks mid-stream, a server-sent
// event stream gets an OpenAI-shaped error event and ends; any other answer is cut off.
func (g *Gateway) relay(w http.ResponseWriter, res *http.Response, rep *Replica) {
	defer res.Body.Close()
	for k, vs := range res.Header {
		if k == "Connection" || k == "Keep-Alive" || k == "Transfer-Encoding" || k == "Content-Length" {
			continue
		}
		w.Header()[k] = vs
	}
	w.WriteHeader(res.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := res.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // the client went away; closing the body cancels the engine's work
			}
			_ = rc.Flush()
		}
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			rep.down.Store(true)
			g.log.Warn("the engine's answer broke off", "replica", rep.URL.Host, "error", err)
			if strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
				e, _ := json.Marshal(map[string]any{"error": map[string]any{
					"message": "the engine serving this stream failed: " + err.Error(), "type": "server_error", "param": nil, "code": "upstream_failed",
				}})
				_, _ = fmt.Fprintf(w, "data: %s\n\n", e)
				_ = rc.Flush()
				return
			}
			panic(http.ErrAbortHandler)
		}
	}
}

// Scrape reads every replica's /metrics every ScrapeInterval until ctx ends. A replica whose
// scrape fails is marked down (chosen only when nothing else is) until one succeeds.
func (g *Gateway) Scrape(ctx context.Context) {
	t := time.NewTicker(g.opts.ScrapeInterval)
	defer t.Stop()
	for {
		g.scrapeOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (g *Gateway) scrapeOnce(ctx context.Context) {
	var wg sync.WaitGroup
	for _, rep := range g.router.Replicas() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reading, err := g.scrape(ctx, rep)
			if err != nil {
				rep.down.Store(true)
				return
			}
			rep.load.Store(&reading)
			rep.down.Store(false)
		}()
	}
	wg.Wait()
}

func (g *Gateway) scrape(ctx context.Context, rep *Replica) (enginemetrics.Reading, error) {
	ctx, cancel := context.WithTimeout(ctx, g.opts.ScrapeInterval)
	defer cancel()
	u := *rep.URL
	u.Path = strings.TrimSuffix(u.Path, "/") + "/metrics"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return enginemetrics.Reading{}, err
	}
	res, err := g.client.Do(req)
	if err != nil {
		return enginemetrics.Reading{}, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return enginemetrics.Reading{}, fmt.Errorf("GET /metrics answered %s", res.Status)
	}
	return enginemetrics.Parse(io.LimitReader(res.Body, enginemetrics.MaxBytes))
}

// gatewayMetrics are the gateway's own Prometheus metrics.
type gatewayMetrics struct {
	requests  *prometheus.CounterVec
	retries   *prometheus.CounterVec
	decisions *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	// held and holdSeconds: the requests waiting for a model's first ready replica, and
	// how long each waited.
	held        *prometheus.GaugeVec
	holdSeconds *prometheus.HistogramVec
}

func newGatewayMetrics(reg *prometheus.Registry) gatewayMetrics {
	m := gatewayMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moe_gateway_requests_total",
			Help: "Inference requests by model and the HTTP status the client got."}, []string{"model", "code"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moe_gateway_retries_total",
			Help: "Requests sent to a second replica after the first failed before answering."}, []string{"model"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moe_gateway_routing_decisions_total",
			Help: "Replica choices by kind: prefix (the prompt prefix's replica), prefix_overflow (the next one, over the load bound), least_loaded."},
			[]string{"model", "decision"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "moe_gateway_request_duration_seconds",
			Help:    "Time from a request's arrival to the end of its answer, by model.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}}, []string{"model"}),
	}
	m.held = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moe_gateway_held_requests",
		Help: "Requests held because their model has no ready replica (scaled to zero, or starting)."}, []string{"model"})
	m.holdSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "moe_gateway_hold_duration_seconds",
		Help:    "How long held requests waited for a ready replica (or until they timed out), by model.",
		Buckets: []float64{0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600}}, []string{"model"})
	reg.MustRegister(m.requests, m.retries, m.decisions, m.duration, m.held, m.holdSeconds)
	return m
}
