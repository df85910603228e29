// Package server serves a model over the OpenAI HTTP API: GET /v1/models,
// POST /v1/completions and POST /v1/chat/completions (Mistral's chat
// template), with Server-Sent Events streaming, plus /health (liveness),
// /ready (readiness: loaded and not draining) and /metrics (Prometheus,
// under vLLM's metric names; see docs/metrics.md). It is the only package
// of the engine that knows OpenAI's JSON; the batching is engine/scheduler's.
//
// Errors have OpenAI's shape, {"error":{"message","type","param","code"}}:
// 400 for a malformed body, a bad parameter or a prompt plus max_tokens over
// the context; 401 for a missing or wrong API key (when one is set); 404
// for an unknown model; 413 for a body over the limit (see bodyLimit); 429,
// with Retry-After, when the queue is full; 503, with Retry-After, while the
// model loads or the server drains.
package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moe-operator/moe-operator/engine/grammar"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/scheduler"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// Options configure a Server.
type Options struct {
	// ModelName is the name clients send as "model" and /v1/models lists.
	ModelName string
	// APIKey, if set, must come as "Authorization: Bearer KEY" on /v1/
	// paths, /tokenize and /detokenize. /health, /ready, /ping, /version and
	// /metrics stay open for probes and scrapers.
	APIKey string
	// RetryAfter is what a 429 or a 503 tells clients to wait (default 1s).
	RetryAfter time.Duration
	// MaxBodyBytes bounds a request body; past it, 413 (0: what the
	// context can use, see bodyLimit).
	MaxBodyBytes int64
	// WriteTimeout bounds each write of a response, so that a client that
	// stops reading a stream gives up its sequence (default 30s).
	WriteTimeout time.Duration
	// Logger receives server events (default: discard).
	Logger *slog.Logger
	// Version is what /version reports.
	Version string
	// ChatTemplate, when set, is a Jinja chat template's source that renders chat
	// requests in place of the model's (moe serve --chat-template).
	ChatTemplate string
	// StrictRequests refuses request fields the server does not know with
	// 400; otherwise they are ignored, logged once per name and listed in
	// the response's X-Ignored-Fields header.
	StrictRequests bool
}

// Server is the HTTP front of a scheduler. It answers /health at once, and
// the API once Attach gives it a scheduler.
type Server struct {
	opts  Options
	log   *slog.Logger
	sched atomic.Pointer[scheduler.Scheduler]
	texts []string // each token's text, for logprobs; set by Attach
	// gvocab is the vocabulary for structured outputs, and stripSpace whether an
	// output's first token loses its leading space (SentencePiece's dummy prefix); set
	// by Attach.
	gvocab     *grammar.Vocab
	stripSpace bool
	// template renders chat requests; nil: the built-in Mistral renderer. Set by Attach.
	template *tokenizer.ChatTemplate
	maxBody  int64 // set by Attach
	// tokenizing holds a slot per tokenization in progress: at most
	// GOMAXPROCS at once, so concurrent huge prompts cannot add up.
	tokenizing chan struct{}
	draining   atomic.Bool
	created    int64
	metrics    *metrics
	handler    http.Handler
}

// New returns a server that is not ready until Attach.
func New(opts Options) *Server {
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, log: opts.Logger, created: time.Now().Unix(), tokenizing: make(chan struct{}, runtime.GOMAXPROCS(0))}
	s.metrics = newMetrics(opts.ModelName, func() (scheduler.Stats, bool) {
		if sch := s.sched.Load(); sch != nil {
			return sch.Stats(), true
		}
		return scheduler.Stats{}, false
	}, func() (string, model.DeviceMemory, bool) {
		if sch := s.sched.Load(); sch != nil {
			return sch.Device()
		}
		return "", model.DeviceMemory{}, false
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/health", s.health)
	mux.HandleFunc("/ready", s.ready)
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/v1/", s.v1)
	mux.HandleFunc("/tokenize", s.v1)
	mux.HandleFunc("/detokenize", s.v1)
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"version": s.opts.Version})
	})
	// /ping is SageMaker's health check, which vLLM also answers.
	mux.HandleFunc("GET /ping", s.ready)
	mux.HandleFunc("POST /ping", s.ready)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{Status: http.StatusNotFound, Type: typeNotFound, Message: fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)})
	})
	s.handler = mux
	return s
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// Observer is what the scheduler should report to, for /metrics; pass it
// in scheduler.Config before Attach.
func (s *Server) Observer() scheduler.Observer { return s.metrics }

// Attach makes the server ready, serving the API with sch. It fails, and the server
// stays unready, when the chat template (Options.ChatTemplate, or the model's own) does
// not compile.
func (s *Server) Attach(sch *scheduler.Scheduler) error {
	if tok := sch.Tokenizer(); tok != nil {
		ct, err := tok.SelectChatTemplate(s.opts.ChatTemplate)
		if err != nil {
			return err
		}
		s.template = ct
	}
	s.texts = tokenTexts(sch.Tokenizer(), sch.ModelConfig().Vocab)
	s.gvocab = grammarVocab(sch.Tokenizer(), s.texts)
	s.stripSpace = sch.Tokenizer() != nil && sch.Tokenizer().Vocab().AddSpacePrefix
	s.maxBody = s.opts.MaxBodyBytes
	if s.maxBody <= 0 {
		s.maxBody = bodyLimit(sch)
	}
	s.sched.Store(sch)
	return nil
}

// bodyLimit is the default body limit: room for a prompt that fills the
// context four times over (JSON escapes can double text), plus 1 MiB for
// the rest of the request, and never more than MaxBodyBytes. A bigger body
// could not fit the context anyway.
func bodyLimit(sch *scheduler.Scheduler) int64 {
	text := int64(sch.MaxSequence()) * 8 // a token id in a JSON list: "31999,"
	if tok := sch.Tokenizer(); tok != nil {
		text = max(text, int64(tok.MaxBytes(sch.MaxSequence())))
	}
	return min(4*text+1<<20, MaxBodyBytes)
}

// StartDraining turns /ready false and refuses new API requests with 503;
// requests already accepted go on.
func (s *Server) StartDraining() { s.draining.Store(true) }

// Drain starts draining and waits for the scheduler's accepted requests to
// finish, aborting them when ctx ends (see scheduler.Drain).
func (s *Server) Drain(ctx context.Context) error {
	s.StartDraining()
	if sch := s.sched.Load(); sch != nil {
		return sch.Drain(ctx)
	}
	return nil
}

// Ready reports whether the model is loaded and the server not draining.
func (s *Server) Ready() bool { return s.sched.Load() != nil && !s.draining.Load() }

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.draining.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
	case s.sched.Load() == nil:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "loading"})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

// v1 authenticates, checks readiness and routes the API.
func (s *Server) v1(w http.ResponseWriter, r *http.Request) {
	if err := s.authenticate(r); err != nil {
		writeError(w, err)
		return
	}
	sch := s.sched.Load()
	switch {
	case s.draining.Load():
		writeError(w, s.drainingError())
		return
	case sch == nil:
		writeError(w, &apiError{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Code: "not_ready", RetryAfter: s.opts.RetryAfter,
			Message: "the model is still loading; retry shortly"})
		return
	}
	path := strings.TrimSuffix(r.URL.Path, "/")
	var method string
	var h func(http.ResponseWriter, *http.Request, *scheduler.Scheduler)
	switch {
	case path == "/v1/models":
		method, h = http.MethodGet, s.models
	case strings.HasPrefix(path, "/v1/models/"):
		method, h = http.MethodGet, s.model
	case path == "/v1/completions":
		method, h = http.MethodPost, s.completions
	case path == "/v1/chat/completions":
		method, h = http.MethodPost, s.chat
	case path == "/tokenize":
		method, h = http.MethodPost, s.tokenizeRequest
	case path == "/detokenize":
		method, h = http.MethodPost, s.detokenizeRequest
	default:
		writeError(w, &apiError{Status: http.StatusNotFound, Type: typeNotFound, Message: fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)})
		return
	}
	// Responses set write deadlines (see respond and eventStream); the
	// connection must not keep them for its next request.
	defer http.NewResponseController(w).SetWriteDeadline(time.Time{})
	if r.Method != method {
		w.Header().Set("Allow", method)
		writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Type: typeInvalidRequest, Message: fmt.Sprintf("%s takes %s, not %s", path, method, r.Method)})
		return
	}
	h(w, r, sch)
}

func (s *Server) authenticate(r *http.Request) *apiError {
	if s.opts.APIKey == "" {
		return nil
	}
	scheme, key, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(key) == "" {
		return &apiError{Status: http.StatusUnauthorized, Type: typeAuthentication, Code: "missing_api_key",
			Message: "missing API key: send it as \"Authorization: Bearer KEY\""}
	}
	if subtle.ConstantTimeCompare([]byte(strings.TrimSpace(key)), []byte(s.opts.APIKey)) != 1 {
		return &apiError{Status: http.StatusUnauthorized, Type: typeAuthentication, Code: "invalid_api_key", Message: "invalid API key"}
	}
	return nil
}

func (s *Server) drainingError() *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Code: "draining", RetryAfter: s.opts.RetryAfter,
		Message: "the server is shutting down; retry on another replica"}
}

func (s *Server) checkModel(name string) *apiError {
	if name == "" || name == s.opts.ModelName {
		return nil
	}
	return &apiError{Status: http.StatusNotFound, Type: typeNotFound, Param: "model", Code: "model_not_found",
		Message: fmt.Sprintf("the model %q does not exist; this server serves %q", name, s.opts.ModelName)}
}

type modelCard struct {
	ID          string `json:"id"`
	Object      string `json:"object"`
	Created     int64  `json:"created"`
	OwnedBy     string `json:"owned_by"`
	MaxModelLen int    `json:"max_model_len"`
}

func (s *Server) card(sch *scheduler.Scheduler) modelCard {
	return modelCard{ID: s.opts.ModelName, Object: "model", Created: s.created, OwnedBy: "moe-operator", MaxModelLen: sch.MaxSequence()}
}

func (s *Server) models(w http.ResponseWriter, r *http.Request, sch *scheduler.Scheduler) {
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []modelCard{s.card(sch)}})
}

func (s *Server) model(w http.ResponseWriter, r *http.Request, sch *scheduler.Scheduler) {
	if err := s.checkModel(strings.TrimPrefix(strings.TrimSuffix(r.URL.Path, "/"), "/v1/models/")); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.card(sch))
}

// schedulerError maps Submit's errors.
func (s *Server) schedulerError(err error, promptParam string) *apiError {
	switch {
	case errors.Is(err, scheduler.ErrQueueFull):
		return &apiError{Status: http.StatusTooManyRequests, Type: typeRateLimit, Code: "queue_full", RetryAfter: s.opts.RetryAfter,
			Message: "the server's request queue is full; retry later"}
	case errors.Is(err, scheduler.ErrTooMany):
		// A 400, not a 429: SDKs retry a 429, and this request can never be accepted.
		return invalid("n", "the prompts times n make "+strings.TrimPrefix(err.Error(), scheduler.ErrTooMany.Error()+": ")+"; send fewer prompts or a lower n")
	case errors.Is(err, scheduler.ErrDraining):
		return s.drainingError()
	case errors.Is(err, scheduler.ErrTooLong):
		return &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Param: promptParam, Code: "context_length_exceeded", Message: err.Error()}
	case errors.Is(err, scheduler.ErrInvalid):
		return invalid(promptParam, strings.TrimPrefix(err.Error(), "scheduler: invalid request: "))
	case errors.Is(err, scheduler.ErrAborted):
		return &apiError{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Code: "aborted", Message: "the request was aborted: " + err.Error()}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: typeServer, Message: err.Error()}
}

// requests turns prompts and validated parameters into scheduler requests:
// n per prompt, prompt-major. It checks the context length.
func (s *Server) requests(sch *scheduler.Scheduler, prompts [][]int32, p params, promptParam string, startOfText bool) ([]scheduler.Request, *apiError) {
	limit := sch.MaxSequence()
	var out []scheduler.Request
	for _, pr := range prompts {
		maxTokens := p.maxTokens
		if maxTokens == 0 {
			maxTokens = limit - len(pr)
		}
		// Compared as a difference: len(pr)+maxTokens overflows for a max_tokens near 2^63.
		if maxTokens < 1 || maxTokens > limit-len(pr) {
			what := promptOf(promptParam)
			completion := max(maxTokens, 1)
			requested := fmt.Sprint(len(pr) + completion)
			if completion > math.MaxInt-len(pr) {
				requested = "more than " + fmt.Sprint(math.MaxInt)
			}
			return nil, &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Param: promptParam, Code: "context_length_exceeded",
				Message: fmt.Sprintf("this model's maximum context length is %d tokens, but %s tokens were requested (%d in %s, %d for the completion); shorten %s or lower max_tokens",
					limit, requested, len(pr), what, completion, what)}
		}
		seed := p.sampling.Seed
		if !p.seeded {
			seed = rand.Uint64()
		}
		for i := range p.n {
			sp := p.sampling
			sp.Seed = seed + uint64(i)
			r := scheduler.Request{
				Prompt: pr, MaxTokens: maxTokens, Sampling: sp, Stop: p.stop, IgnoreEOS: p.ignoreEOS,
				Logprobs: p.logprobs, TopLogprobs: p.topLogprobs, StartOfText: startOfText,
			}
			if p.grammar != nil {
				r.Constraint = p.grammar.Constrain(s.gvocab, startOfText && s.stripSpace)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func requestID(prefix string) string {
	return prefix + strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
}

// tokenTexts is each token's text as logprobs show it: the piece with
// SentencePiece's "▁" as a space, a byte token's byte, a control token's
// name.
func tokenTexts(tok *tokenizer.Tokenizer, vocab int) []string {
	out := make([]string, vocab)
	if tok == nil {
		return out
	}
	v := tok.Vocab()
	for id := range min(vocab, len(v.Pieces)) {
		piece := v.Pieces[id]
		typ := tokenizer.Normal
		if id < len(v.Types) {
			typ = v.Types[id]
		}
		switch typ {
		case tokenizer.Byte:
			if b, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(piece, "<0x"), ">"), 16, 8); err == nil {
				out[id] = string([]byte{byte(b)})
				continue
			}
		case tokenizer.Control, tokenizer.Unknown, tokenizer.Unused:
		default:
			piece = strings.ReplaceAll(piece, "\u2581", " ")
		}
		out[id] = piece
	}
	return out
}
