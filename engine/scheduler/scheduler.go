// Package scheduler runs many generation requests on one model with
// continuous batching, as vLLM does: every step is a single Forward batch
// that holds the next token of each running sequence plus chunks of the
// prompts of newly admitted ones, under a token budget. It knows nothing of
// HTTP; engine/server turns its requests and streams into the OpenAI API.
//
// # Steps
//
// One goroutine (the loop) owns the model's State and the paged KV Cache.
// A step builds a batch with a budget of Config.MaxBatchedTokens tokens:
//
//  1. Running sequences, oldest first: a sequence that is decoding adds its
//     last sampled token; one still prefilling (a long prompt, or a resumed
//     preempted sequence) adds the next chunk of its prompt that fits.
//  2. If no sequence was preempted in this step, waiting requests, in FIFO
//     order, each add the first chunk of their prompt while the budget,
//     Config.MaxNumSeqs and the free KV blocks allow. The queue is strict:
//     when the head does not fit, nothing behind it starts.
//
// The whole batch runs through model.Forward at once, which groups its
// tokens by expert in the MoE layers. A token's result does not depend on
// which other tokens share its batch, so a request's output is the same
// whether it ran alone or with others.
//
// # KV cache and preemption
//
// Blocks are reserved as sequences grow. When a running sequence needs a
// block and none is free, the most recently admitted running sequence is
// preempted by recompute: its blocks are released and it goes back to the
// front of the queue with its prompt and the tokens it generated so far.
// When it runs again those are prefilled anew and sampling continues with
// the same sampler state, so its output is what it would have been without
// the preemption.
//
// # Cancellation and shutdown
//
// Cancelling the context given to Submit ends the request at the next step
// and frees its blocks at once. Drain stops admission and waits for
// accepted requests to finish; Close stops the loop.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/sample"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// Errors Submit returns.
var (
	// ErrQueueFull: Config.MaxQueue requests are already waiting.
	ErrQueueFull = errors.New("scheduler: the request queue is full")
	// ErrDraining: Drain or Close was called; no new requests are accepted.
	ErrDraining = errors.New("scheduler: shutting down, not accepting requests")
	// ErrTooLong: the prompt plus MaxTokens exceeds the context length or
	// the whole KV cache.
	ErrTooLong = errors.New("scheduler: request too long")
	// ErrTooMany: more requests submitted together than the scheduler ever
	// holds at once (Config.MaxQueue plus Config.MaxNumSeqs); unlike
	// ErrQueueFull, retrying cannot help.
	ErrTooMany = errors.New("scheduler: more requests at once than the server ever accepts")
	// ErrInvalid: an empty prompt, a token outside the vocabulary, or bad
	// sampling parameters.
	ErrInvalid = errors.New("scheduler: invalid request")
	// ErrAborted ends the streams of requests the scheduler gave up on.
	ErrAborted = errors.New("scheduler: request aborted")
)

// MaxTopLogprobs bounds Request.TopLogprobs.
const MaxTopLogprobs = 20

// DefaultMaxBatchedTokens is the default step budget. It keeps a step
// short on CPUs, so a newcomer's prefill delays the running sequences'
// next tokens little, while prefill chunks stay large enough for the
// batched matrix kernels.
const DefaultMaxBatchedTokens = 512

// Config tunes a Scheduler. Zero fields take the defaults given.
type Config struct {
	// MaxNumSeqs bounds the sequences running at once (default 256).
	MaxNumSeqs int
	// MaxBatchedTokens is the token budget of one step (default
	// max(DefaultMaxBatchedTokens, MaxNumSeqs)). It must be at least
	// MaxNumSeqs, so every running sequence decodes in every step. It also
	// bounds how long one step, and so every running sequence's next
	// token, can be delayed by a newcomer's prefill.
	MaxBatchedTokens int
	// MaxQueue bounds the requests waiting to start (default 1024). A
	// burst that free running slots will take at the next step does not
	// count against it.
	MaxQueue int
	// KVCacheTokens is the number of positions the paged KV cache holds
	// (default: DefaultKVCacheTokens).
	KVCacheTokens int
	// BlockSize is the number of positions in one KV block (default 16).
	BlockSize int
	// Context is the longest sequence, prompt and output together (default
	// and upper bound: the model's context length).
	Context int
	// DisablePrefixCaching turns off automatic prefix caching: by default
	// a request reuses the keys and values of the longest prefix of its
	// tokens, in whole blocks, that an earlier request computed and the
	// cache still holds (see model.Cache.Match).
	DisablePrefixCaching bool
	// Observer, if set, receives latencies and request outcomes.
	Observer Observer
	// Memory, if set, reports the memory the KV cache may take (bytes,
	// and where the figure comes from, for errors) once the model is
	// loaded. A KVCacheTokens that does not fit is refused; the default
	// shrinks to fit.
	Memory func() (bytes int64, source string)
	// DeviceMemoryUtilization is, for a model on an accelerator, the share
	// of the device memory this process may use (vLLM's
	// --gpu-memory-utilization; default 0.9): weights, working memory and
	// the KV cache together. The default KV cache fills what the weights
	// and the largest batch's working memory leave of it, up to MaxNumSeqs
	// full contexts; an explicit KVCacheTokens that does not fit is
	// refused. Memory is not consulted for such a model: its cache is on
	// the device.
	DeviceMemoryUtilization float64
}

// Observer receives the scheduler's measurements, for metrics. Its methods
// are called from the scheduler's loop and must return quickly.
type Observer interface {
	// Scheduled: a request started running for the first time after
	// waiting queued.
	Scheduled(queued time.Duration)
	// FirstToken: a request's first token, ttft after Submit.
	FirstToken(ttft time.Duration)
	// NextToken: every later token, itl after the previous one.
	NextToken(itl time.Duration)
	// Finished: a request ended, e2e after Submit.
	Finished(reason FinishReason, e2e time.Duration)
}

// Request is one generation request.
type Request struct {
	// Prompt is the tokenized prompt (BOS included, if wanted).
	Prompt []int32
	// MaxTokens bounds the generated tokens; it must be positive.
	MaxTokens int
	// Sampling selects the tokens; the zero value is greedy.
	Sampling sample.Params
	// Stop strings end the output where they first appear (the stop string
	// itself is not part of the output), even across token boundaries.
	Stop []string
	// IgnoreEOS keeps generating after an end-of-sequence token.
	IgnoreEOS bool
	// Logprobs asks for each token's log-probability, TopLogprobs
	// (0..MaxTopLogprobs) for that many alternatives too.
	Logprobs    bool
	TopLogprobs int
	// Constraint, if set, restricts the output to a grammar (structured
	// outputs); it holds this request's state, so each request needs its own.
	Constraint Constraint
	// StartOfText decodes the output as the beginning of a text, dropping
	// the tokenizer's dummy-prefix space from its first piece (a chat
	// answer); otherwise the output continues the prompt's text.
	StartOfText bool
}

// Constraint restricts what a sequence may generate (structured outputs).
// Before each sampling, Mask sets the logits of the tokens that may not come
// next to -Inf, or reports false when none may: the output is complete, and
// the request ends as if it had sampled end-of-sequence. Accept follows the
// token sampled. A constrained sequence always reads its whole row of logits.
type Constraint interface {
	Mask(logits []float32) bool
	Accept(tok int32)
}

// Stats is a snapshot of the scheduler's state and counters.
type Stats struct {
	Running       int // sequences in the running set
	Waiting       int // requests queued, including preempted sequences
	KVBlocksUsed  int
	KVBlocksTotal int
	// Counters since the start.
	Preemptions      int64
	PromptTokens     int64 // prompt tokens of requests whose prefill completed
	GenerationTokens int64
	Steps            int64
	// PrefixCacheQueries and PrefixCacheHits count prompt tokens looked up
	// in the prefix cache when requests start, and those found there.
	PrefixCacheQueries, PrefixCacheHits int64
}

// KVUsage is the fraction of KV blocks in use, 0 to 1.
func (s Stats) KVUsage() float64 {
	if s.KVBlocksTotal == 0 {
		return 0
	}
	return float64(s.KVBlocksUsed) / float64(s.KVBlocksTotal)
}

// DefaultKVCacheTokens is the KV cache size used when Config.KVCacheTokens
// is 0: room for maxNumSeqs sequences of context positions, but no more
// than 2 GiB of keys and values (and never less than one full context).
func DefaultKVCacheTokens(c model.Config, maxNumSeqs, context int) int {
	const budget = 2 << 30
	perToken := kvBytesPerToken(c)
	n := maxNumSeqs * context
	if perToken > 0 {
		n = min(n, budget/perToken)
	}
	return max(n, context)
}

// kvBytesPerToken is the host memory of one KV cache position: keys and
// values of every layer, in float32.
func kvBytesPerToken(c model.Config) int { return c.Layers * 2 * c.KVDim() * 4 }

// kvHeadroom is the part of the reported memory a default KV cache takes;
// the rest is for the runtime, batches and requests.
const kvHeadroom = 0.8

// fitKVCache holds cfg.KVCacheTokens to cfg.Memory. An explicit size
// larger than the memory left would end in an out-of-memory kill, so it is
// an error that says what fits (the operator sizes pods for the size it
// passes, so it is not held to the headroom); the default shrinks to the
// headroom's share.
func fitKVCache(cfg *Config, c model.Config, explicit bool) error {
	avail, source := cfg.Memory()
	per := int64(kvBytesPerToken(c))
	if avail <= 0 || per <= 0 {
		return nil
	}
	block := int64(cfg.BlockSize)
	share := kvHeadroom
	if explicit {
		share = 1
	}
	fits := int64(float64(avail)*share) / per / block * block // the cache holds whole blocks
	if int64(cfg.KVCacheTokens) <= fits {
		return nil
	}
	gib := func(b int64) string { return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30)) }
	if explicit || fits < block {
		return fmt.Errorf("scheduler: a KV cache of %d tokens needs %s, but %s of memory is left (%s); set the KV cache (moe serve --kv-cache-tokens) to at most %d tokens, or give the process more memory",
			cfg.KVCacheTokens, gib(int64(cfg.KVCacheTokens)*per), gib(avail), source, fits)
	}
	cfg.KVCacheTokens = int(fits)
	return nil
}

// DefaultDeviceMemoryUtilization is Config.DeviceMemoryUtilization's
// default, vLLM's.
const DefaultDeviceMemoryUtilization = 0.9

// fitDeviceKVCache sizes the KV cache of a model on an accelerator: it
// first reserves the working memory of the largest batch, then gives the
// cache what is left of the utilization's share of the device.
func fitDeviceKVCache(cfg *Config, m *model.Model, explicit bool) error {
	util := cfg.DeviceMemoryUtilization
	if util == 0 {
		util = DefaultDeviceMemoryUtilization
	}
	if util < 0 || util > 1 {
		return fmt.Errorf("scheduler: device memory utilization %g must be in (0, 1]", util)
	}
	cfg.DeviceMemoryUtilization = util
	if err := m.ReserveDevice(cfg.MaxBatchedTokens, min(cfg.MaxBatchedTokens, cfg.MaxNumSeqs)); err != nil {
		return err
	}
	mem, _ := m.DeviceMemory()
	per := int64(kvBytesPerToken(m.Config))
	block := int64(cfg.BlockSize)
	left := int64(float64(mem.Budget)*util) - mem.Used
	fits := max(left, 0) / per / block * block
	if mem.MaxCacheRows > 0 {
		fits = min(fits, int64(mem.MaxCacheRows)/block*block)
	}
	need := int64(cfg.KVCacheTokens) // an explicit size, or one block at least
	if !explicit {
		need = block
		cfg.KVCacheTokens = int(max(min(int64(cfg.MaxNumSeqs)*int64(cfg.Context), fits), need))
	}
	if need > fits {
		return fmt.Errorf("scheduler: a KV cache of %d tokens needs %s on the device, but %.0f%% of its %s budget less %s of weights and working memory leaves %s, room for %d tokens; "+
			"lower --kv-cache-tokens or --ctx-size, raise --gpu-memory-utilization, quantize further (--quantization int8, int4) or use more devices",
			need, bytesText(need*per), util*100, bytesText(mem.Budget), bytesText(mem.Used), bytesText(max(left, 0)), fits)
	}
	return nil
}

// bytesText is n bytes in MiB or GiB.
func bytesText(n int64) string {
	if n < 1<<30 {
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
}

// Scheduler batches requests on one model. Its methods are safe for
// concurrent use.
type Scheduler struct {
	m       *model.Model
	tok     *tokenizer.Tokenizer
	cfg     Config
	cache   *model.Cache
	st      *model.State
	obs     Observer
	eos     int32
	vocab   int
	kvLimit int // positions the whole cache holds

	// Submit hands requests to the loop through incoming.
	mu       sync.Mutex
	incoming []*sequence
	queued   int  // new requests submitted and not yet running
	runningN int  // len(running), as of the loop's last change
	draining bool // no new requests
	idle     chan struct{}
	wake     chan struct{}
	abort    atomic.Bool
	stopLoop atomic.Bool
	done     chan struct{}

	// Owned by the loop.
	waiting []*sequence // FIFO; preempted sequences go back to the front
	running []*sequence // in admission order
	batch   model.Batch
	outSeqs []*sequence // the sequences whose last token is in the batch, in batch order
	raw     []float32   // a copy of one row of logits, for log-probabilities
	ids     []int32     // one output's candidates, for SampleTop
	vals    []float32

	statsMu sync.Mutex
	stats   Stats
}

// New starts a scheduler on m. The scheduler uses m's Forward exclusively
// until Close; it does not close m.
func New(m *model.Model, cfg Config) (*Scheduler, error) {
	mc := m.Config
	if cfg.Context <= 0 || cfg.Context > mc.Context {
		cfg.Context = mc.Context
	}
	if cfg.MaxNumSeqs <= 0 {
		cfg.MaxNumSeqs = 256
	}
	if cfg.MaxBatchedTokens <= 0 {
		cfg.MaxBatchedTokens = max(DefaultMaxBatchedTokens, cfg.MaxNumSeqs)
	}
	if cfg.MaxBatchedTokens < cfg.MaxNumSeqs {
		return nil, fmt.Errorf("scheduler: max batched tokens (%d) must be at least max num seqs (%d)", cfg.MaxBatchedTokens, cfg.MaxNumSeqs)
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 1024
	}
	if cfg.BlockSize <= 0 {
		cfg.BlockSize = 16
	}
	explicit := cfg.KVCacheTokens > 0
	if _, onDevice := m.DeviceMemory(); onDevice {
		if err := fitDeviceKVCache(&cfg, m, explicit); err != nil {
			return nil, err
		}
	} else {
		if !explicit {
			cfg.KVCacheTokens = DefaultKVCacheTokens(mc, cfg.MaxNumSeqs, cfg.Context)
		}
		if cfg.Memory != nil {
			if err := fitKVCache(&cfg, mc, explicit); err != nil {
				return nil, err
			}
		}
	}
	cache, err := m.NewCache(cfg.KVCacheTokens, cfg.BlockSize)
	if err != nil {
		return nil, err
	}
	if !cfg.DisablePrefixCaching {
		cache.EnablePrefixCaching()
	}
	s := &Scheduler{
		m: m, tok: m.Tokenizer, cfg: cfg, obs: cfg.Observer, eos: -1, vocab: mc.Vocab,
		cache: cache,
		st:    m.NewState(cfg.MaxBatchedTokens, cfg.Context),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
		raw:   make([]float32, mc.Vocab),
	}
	if s.tok != nil {
		s.eos = s.tok.EOS()
	}
	s.kvLimit = s.cache.NumBlocks() * s.cache.BlockSize
	s.stats.KVBlocksTotal = s.cache.NumBlocks()
	go s.loop()
	return s, nil
}

// Config returns the configuration in effect, defaults filled in.
func (s *Scheduler) Config() Config { return s.cfg }

// Tokenizer is the model's tokenizer.
func (s *Scheduler) Tokenizer() *tokenizer.Tokenizer { return s.tok }

// ModelConfig is the model's configuration.
func (s *Scheduler) ModelConfig() model.Config { return s.m.Config }

// Device names the accelerator the model runs on and reports its memory;
// ok is false on the CPU.
func (s *Scheduler) Device() (name string, mem model.DeviceMemory, ok bool) {
	name, ok = s.m.Accelerated()
	if ok {
		mem, _ = s.m.DeviceMemory()
	}
	return name, mem, ok
}

// KVCacheTokens is the positions the paged KV cache holds.
func (s *Scheduler) KVCacheTokens() int { return s.kvLimit }

// MaxSequence is the longest sequence a request may reach: the context
// length, or the whole KV cache if that is smaller.
func (s *Scheduler) MaxSequence() int { return min(s.cfg.Context, s.kvLimit) }

// Stats returns a snapshot, updated after every step.
func (s *Scheduler) Stats() Stats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats
}

// Submit queues one request; see SubmitAll.
func (s *Scheduler) Submit(ctx context.Context, r Request) (*Stream, error) {
	out, err := s.SubmitAll(ctx, []Request{r})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// SubmitAll queues requests together: all are accepted or none. Each
// request runs until it finishes or ctx ends. Errors: ErrInvalid,
// ErrTooLong (both wrapped with details), ErrTooMany, ErrQueueFull,
// ErrDraining.
func (s *Scheduler) SubmitAll(ctx context.Context, rs []Request) ([]*Stream, error) {
	if err := s.tooMany(len(rs)); err != nil {
		return nil, err
	}
	for i := range rs {
		if err := s.validate(&rs[i]); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	seqs := make([]*sequence, len(rs))
	streams := make([]*Stream, len(rs))
	for i, r := range rs {
		seqs[i] = s.newSequence(ctx, r, now)
		streams[i] = seqs[i].out
	}
	s.mu.Lock()
	if err := s.admitLocked(len(rs)); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	s.incoming = append(s.incoming, seqs...)
	s.queued += len(rs)
	s.mu.Unlock()
	s.signal()
	return streams, nil
}

// Admits returns the error SubmitAll would return now for n requests
// (ErrTooMany, ErrDraining or ErrQueueFull), or nil: callers check it
// before costly work such as tokenizing. SubmitAll still decides.
func (s *Scheduler) Admits(n int) error {
	if err := s.tooMany(n); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.admitLocked(n)
}

func (s *Scheduler) tooMany(n int) error {
	if most := s.cfg.MaxQueue + s.cfg.MaxNumSeqs; n > most {
		return fmt.Errorf("%w: %d requests together, and at most %d (%d queued plus %d running) are ever accepted", ErrTooMany, n, most, s.cfg.MaxQueue, s.cfg.MaxNumSeqs)
	}
	return nil
}

func (s *Scheduler) admitLocked(n int) error {
	switch {
	case s.draining:
		return ErrDraining
	case s.queued+n > s.cfg.MaxQueue+max(0, s.cfg.MaxNumSeqs-s.runningN):
		return ErrQueueFull
	}
	return nil
}

func (s *Scheduler) validate(r *Request) error {
	if len(r.Prompt) == 0 {
		return fmt.Errorf("%w: the prompt is empty", ErrInvalid)
	}
	for _, t := range r.Prompt {
		if t < 0 || int(t) >= s.vocab {
			return fmt.Errorf("%w: prompt token %d is outside the vocabulary of %d tokens", ErrInvalid, t, s.vocab)
		}
	}
	if r.MaxTokens <= 0 {
		return fmt.Errorf("%w: max tokens is %d, want > 0", ErrInvalid, r.MaxTokens)
	}
	if r.TopLogprobs < 0 || r.TopLogprobs > MaxTopLogprobs {
		return fmt.Errorf("%w: top logprobs is %d, want 0 to %d", ErrInvalid, r.TopLogprobs, MaxTopLogprobs)
	}
	if err := r.Sampling.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	// Compared as differences: len(r.Prompt)+r.MaxTokens overflows for a MaxTokens near
	// the int limit.
	if r.MaxTokens > s.cfg.Context-len(r.Prompt) {
		return fmt.Errorf("%w: %d prompt tokens plus %d to generate exceed the context length of %d", ErrTooLong, len(r.Prompt), r.MaxTokens, s.cfg.Context)
	} else if r.MaxTokens > s.kvLimit-len(r.Prompt) {
		return fmt.Errorf("%w: %d prompt tokens plus %d to generate exceed the KV cache of %d tokens", ErrTooLong, len(r.Prompt), r.MaxTokens, s.kvLimit)
	}
	return nil
}

// Drain stops accepting requests and waits until every accepted request
// has finished. If ctx ends first, the remaining requests are aborted (their
// streams end with ErrAborted) and Drain returns ctx's error once they are.
func (s *Scheduler) Drain(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	if s.idle == nil {
		s.idle = make(chan struct{})
	}
	idle := s.idle
	s.mu.Unlock()
	s.signal()
	select {
	case <-idle:
		return nil
	case <-s.done:
		return nil
	case <-ctx.Done():
	}
	s.abort.Store(true)
	s.signal()
	select {
	case <-idle:
	case <-s.done:
	}
	return ctx.Err()
}

// Close aborts whatever is still queued or running and stops the loop. It
// does not close the model.
func (s *Scheduler) Close() {
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.abort.Store(true)
	s.stopLoop.Store(true)
	s.signal()
	<-s.done
	s.cache.Close() // on a device, its memory goes back to the budget
}

func (s *Scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// sequence is one request's state, owned by the loop.
type sequence struct {
	ctx       context.Context
	req       Request
	tokens    []int32 // prompt, then the generated tokens
	promptLen int
	computed  int // positions whose keys and values are in the cache
	chunk     int // tokens of it in the current batch
	kv        model.Seq
	sampler   *sample.Sampler
	dec       *tokenizer.Decoder
	stop      stopMatcher
	generated int
	out       *Stream

	arrival, lastToken time.Time
	started            bool // has run at least once
	prefilled          bool // its prompt has been fully computed once
}

func (s *Scheduler) newSequence(ctx context.Context, r Request, now time.Time) *sequence {
	q := &sequence{
		ctx:       ctx,
		req:       r,
		tokens:    make([]int32, len(r.Prompt), len(r.Prompt)+r.MaxTokens),
		promptLen: len(r.Prompt),
		sampler:   sample.New(r.Sampling, r.Prompt),
		out:       newStream(),
		arrival:   now,
	}
	copy(q.tokens, r.Prompt)
	if s.tok != nil {
		q.dec = s.tok.NewDecoder(r.StartOfText)
	}
	for _, st := range r.Stop {
		if st != "" {
			q.stop.stops = append(q.stop.stops, st)
		}
	}
	return q
}

func (q *sequence) usage() Usage {
	return Usage{PromptTokens: q.promptLen, CompletionTokens: q.generated}
}

// loop is the scheduler's goroutine.
func (s *Scheduler) loop() {
	defer close(s.done)
	for {
		s.mu.Lock()
		s.waiting = append(s.waiting, s.incoming...)
		clear(s.incoming)
		s.incoming = s.incoming[:0]
		draining := s.draining
		s.mu.Unlock()

		if s.abort.Load() {
			s.abortAll()
		}
		s.reapCancelled()
		if len(s.running) == 0 && len(s.waiting) == 0 {
			s.publish()
			if draining {
				s.mu.Lock()
				if s.idle == nil {
					s.idle = make(chan struct{})
				}
				select {
				case <-s.idle:
				default:
					close(s.idle)
				}
				s.mu.Unlock()
			}
			if s.stopLoop.Load() {
				return
			}
			<-s.wake
			continue
		}
		if !s.schedule() {
			// Nothing could be scheduled (cannot happen while the cache
			// holds at least one whole request); wait for a change.
			s.publish()
			<-s.wake
			continue
		}
		var err error
		if k := s.topCandidates(); k > 0 {
			var top []model.Candidate
			if top, err = s.m.ForwardTop(s.st, s.cache, &s.batch, k); err == nil {
				s.afterForwardTop(top, k)
			}
		} else {
			var logits []float32
			if logits, err = s.m.Forward(s.st, s.cache, &s.batch); err == nil {
				s.afterForward(logits)
			}
		}
		if err != nil {
			s.failBatch(fmt.Errorf("%w: %w", ErrAborted, err))
		}
		s.publish()
	}
}

// schedule fills s.batch for one step. It reports whether the batch has
// any tokens.
func (s *Scheduler) schedule() bool {
	s.batch.Reset()
	clear(s.outSeqs)
	s.outSeqs = s.outSeqs[:0]
	budget := s.cfg.MaxBatchedTokens
	preempted := false

	// Decoding sequences need one token each; prefill chunks of running
	// sequences get what is left after those, so a long prompt never
	// delays the others' next tokens (MaxBatchedTokens >= MaxNumSeqs).
	decoders := 0
	for _, q := range s.running {
		if len(q.tokens)-q.computed == 1 {
			decoders++
		}
	}
	for i := 0; i < len(s.running) && budget > 0; i++ {
		q := s.running[i]
		need := len(q.tokens) - q.computed
		n := 1
		if need == 1 {
			decoders--
		} else if n = min(need, budget-decoders); n <= 0 {
			continue
		}
		for {
			if err := s.cache.Reserve(&q.kv, q.computed+n); err == nil {
				break
			}
			victim := s.running[len(s.running)-1]
			s.running = s.running[:len(s.running)-1]
			if victim != q && len(victim.tokens)-victim.computed == 1 {
				decoders--
			}
			s.preempt(victim)
			preempted = true
			if victim == q {
				break
			}
		}
		if i >= len(s.running) { // q itself was preempted
			break
		}
		s.add(q, n)
		budget -= n
	}
	if preempted {
		s.syncRunning()
		return s.batch.Len() > 0
	}

	// Admission: strict FIFO while the budget, the sequence limit and the
	// free blocks allow. A watermark of free blocks is kept for running
	// sequences to grow into, unless nothing runs.
	watermark := s.cache.NumBlocks() / 100
	for len(s.waiting) > 0 && budget > 0 && len(s.running) < s.cfg.MaxNumSeqs {
		q := s.waiting[0]
		if q.computed == 0 && s.cache.PrefixCaching() {
			q.computed = s.cache.Match(&q.kv, q.tokens)
		}
		n := min(len(q.tokens)-q.computed, budget)
		// Admit only what can be prefilled whole (prompt, or prompt and
		// output of a preempted sequence), or chunked prefill would
		// preempt it again before it ever decodes.
		need := s.cache.BlocksFor(len(q.tokens)) - len(q.kv.Blocks)
		reserve := watermark
		if len(s.running) == 0 {
			reserve = 0
		}
		if need+reserve > s.cache.FreeBlocks() || s.cache.Reserve(&q.kv, q.computed+n) != nil {
			// It waits; the prefix blocks it matched stay cached for it.
			s.cache.Release(&q.kv)
			q.computed = 0
			break
		}
		s.waiting[0] = nil
		s.waiting = s.waiting[1:]
		if !q.started {
			q.started = true
			s.mu.Lock()
			s.queued--
			s.mu.Unlock()
			if s.cache.PrefixCaching() {
				s.statsMu.Lock()
				s.stats.PrefixCacheQueries += int64(q.promptLen)
				s.stats.PrefixCacheHits += int64(q.computed)
				s.statsMu.Unlock()
			}
			if s.obs != nil {
				s.obs.Scheduled(time.Since(q.arrival))
			}
		}
		s.running = append(s.running, q)
		s.add(q, n)
		budget -= n
	}
	s.syncRunning()
	return s.batch.Len() > 0
}

// syncRunning tells Submit how many sequences run.
func (s *Scheduler) syncRunning() {
	s.mu.Lock()
	s.runningN = len(s.running)
	s.mu.Unlock()
}

// add puts the next n uncomputed tokens of q in the batch.
func (s *Scheduler) add(q *sequence, n int) {
	q.chunk = n
	end := q.computed + n
	for p := q.computed; p < end; p++ {
		last := p == len(q.tokens)-1
		s.batch.Add(q.tokens[p], p, &q.kv, last)
		if last {
			s.outSeqs = append(s.outSeqs, q)
		}
	}
}

// preempt releases q's blocks and puts it at the front of the queue, to be
// recomputed from its prompt and generated tokens.
func (s *Scheduler) preempt(q *sequence) {
	s.cache.Release(&q.kv)
	q.computed = 0
	s.waiting = append(s.waiting, nil)
	copy(s.waiting[1:], s.waiting)
	s.waiting[0] = q
	s.statsMu.Lock()
	s.stats.Preemptions++
	s.statsMu.Unlock()
}

// topCandidates is how many of each output's most likely tokens suffice
// to sample every sequence of the batch (greedy or top-k, no penalties,
// no log-probabilities), or 0 when the logits are needed. Only a model on
// an accelerator takes the shortcut: there the selection runs on the
// device and decode copies back k pairs per sequence, not a row of
// logits; on the CPU the full row is already in memory.
func (s *Scheduler) topCandidates() int {
	if _, ok := s.m.Accelerated(); !ok || len(s.outSeqs) == 0 {
		return 0
	}
	k := 0
	for _, q := range s.outSeqs {
		n := q.req.Sampling.TopCandidates(model.MaxDeviceTopK)
		if n == 0 || q.req.Logprobs || q.req.Constraint != nil {
			return 0
		}
		k = max(k, n)
	}
	return k
}

// afterForwardTop is afterForward from each output's k best tokens.
func (s *Scheduler) afterForwardTop(top []model.Candidate, k int) {
	s.advance()
	now := time.Now()
	for j, q := range s.outSeqs {
		s.ids, s.vals = s.ids[:0], s.vals[:0]
		for _, c := range top[j*k : (j+1)*k] {
			s.ids = append(s.ids, c.Token)
			s.vals = append(s.vals, c.Logit)
		}
		s.emit(q, q.sampler.SampleTop(s.ids, s.vals), nil, now)
	}
	s.finishStep(int64(len(s.outSeqs)))
}

// advance moves every running sequence past the chunk it just computed,
// and indexes the blocks that chunk filled for prefix caching.
func (s *Scheduler) advance() {
	for _, q := range s.running {
		if q.chunk == 0 {
			continue
		}
		q.computed += q.chunk
		q.chunk = 0
		s.cache.Commit(&q.kv, q.tokens, q.computed)
	}
}

// afterForward samples the next token of every sequence whose last token
// was in the batch and advances the others.
func (s *Scheduler) afterForward(logits []float32) {
	s.advance()
	now := time.Now()
	V := s.vocab
	var generated int64
	for j, q := range s.outSeqs {
		row := logits[j*V : (j+1)*V]
		var raw []float32
		if q.req.Logprobs {
			raw = s.raw
			copy(raw, row)
		}
		c := q.req.Constraint
		if c != nil && !c.Mask(row) {
			s.complete(q)
			continue
		}
		tok := q.sampler.Sample(row)
		if c != nil {
			c.Accept(tok)
		}
		generated++
		s.emit(q, tok, raw, now)
	}
	s.finishStep(generated)
}

// complete ends q, whose constraint allows nothing more, as end-of-sequence
// would.
func (s *Scheduler) complete(q *sequence) {
	var piece string
	if q.dec != nil {
		piece = q.dec.Flush()
	}
	text, stopped := q.stop.push(piece)
	if !stopped {
		text += q.stop.flush()
	}
	s.finish(q, FinishStop, text, nil)
}

// finishStep counts a step's generated tokens and drops the finished
// sequences.
func (s *Scheduler) finishStep(generated int64) {
	s.statsMu.Lock()
	s.stats.GenerationTokens += generated
	s.stats.Steps++
	s.statsMu.Unlock()
	s.compact()
}

// emit records a sampled token: text, stop strings, end of sequence,
// limits, and the consumer's stream.
func (s *Scheduler) emit(q *sequence, tok int32, raw []float32, now time.Time) {
	q.tokens = append(q.tokens, tok)
	q.generated++
	if !q.prefilled {
		q.prefilled = true
		s.statsMu.Lock()
		s.stats.PromptTokens += int64(q.promptLen)
		s.statsMu.Unlock()
	}
	if s.obs != nil {
		if q.generated == 1 {
			s.obs.FirstToken(now.Sub(q.arrival))
		} else {
			s.obs.NextToken(now.Sub(q.lastToken))
		}
	}
	q.lastToken = now

	t := Token{ID: tok}
	if raw != nil {
		t.LogProb, t.Top = sample.LogSoftmax(raw, tok, q.req.TopLogprobs)
	}
	var piece string
	eos := tok == s.eos && !q.req.IgnoreEOS
	if q.dec != nil && !eos {
		piece = q.dec.Next(tok)
	}
	var finish FinishReason
	switch {
	case eos:
		finish = FinishStop
	case q.generated >= q.req.MaxTokens || len(q.tokens) >= s.cfg.Context:
		finish = FinishLength
	}
	if finish != "" && q.dec != nil {
		piece += q.dec.Flush()
	}
	text, stopped := q.stop.push(piece)
	if stopped {
		finish = FinishStop
	} else if finish != "" {
		text += q.stop.flush()
	}
	if finish == "" {
		q.out.push(text, &t)
		return
	}
	q.out.push("", &t)
	s.finish(q, finish, text, nil)
}

// finish ends q: frees its blocks, ends its stream and takes it out of the
// running set (at the next compact) or the queue.
func (s *Scheduler) finish(q *sequence, reason FinishReason, text string, err error) {
	s.cache.Release(&q.kv)
	if s.obs != nil { // before the stream ends, so a client that saw the end finds it counted
		s.obs.Finished(reason, time.Since(q.arrival))
	}
	q.out.end(text, reason, q.usage(), err)
	q.out = nil // marks it finished
}

// compact drops finished sequences from the running set, keeping order.
func (s *Scheduler) compact() {
	k := 0
	for _, q := range s.running {
		if q.out != nil {
			s.running[k] = q
			k++
		}
	}
	clear(s.running[k:])
	s.running = s.running[:k]
	s.syncRunning()
}

// reapCancelled ends the requests whose context is done.
func (s *Scheduler) reapCancelled() {
	for _, q := range s.running {
		if q.ctx.Err() != nil {
			s.finish(q, FinishAbort, "", q.ctx.Err())
		}
	}
	s.compact()
	k := 0
	for _, q := range s.waiting {
		if q.ctx.Err() != nil {
			s.dequeue(q)
			s.finish(q, FinishAbort, "", q.ctx.Err())
			continue
		}
		s.waiting[k] = q
		k++
	}
	clear(s.waiting[k:])
	s.waiting = s.waiting[:k]
}

// dequeue accounts for q leaving the queue without running.
func (s *Scheduler) dequeue(q *sequence) {
	if !q.started {
		s.mu.Lock()
		s.queued--
		s.mu.Unlock()
	}
}

// abortAll ends everything queued or running with ErrAborted.
func (s *Scheduler) abortAll() {
	for _, q := range s.running {
		s.finish(q, FinishAbort, "", ErrAborted)
	}
	clear(s.running)
	s.running = s.running[:0]
	s.syncRunning()
	for _, q := range s.waiting {
		s.dequeue(q)
		s.finish(q, FinishAbort, "", ErrAborted)
	}
	clear(s.waiting)
	s.waiting = s.waiting[:0]
}

// failBatch ends every sequence in the failed batch.
func (s *Scheduler) failBatch(err error) {
	for _, q := range s.running {
		if q.chunk > 0 {
			q.chunk = 0
			s.finish(q, FinishAbort, "", err)
		}
	}
	s.compact()
}

func (s *Scheduler) publish() {
	s.mu.Lock()
	waiting := len(s.incoming)
	s.mu.Unlock()
	s.statsMu.Lock()
	s.stats.Running = len(s.running)
	s.stats.Waiting = len(s.waiting) + waiting
	s.stats.KVBlocksUsed = s.cache.NumBlocks() - s.cache.FreeBlocks()
	s.statsMu.Unlock()
}
