package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/sample"
	"github.com/moe-operator/moe-operator/engine/scheduler"
)

var tinyPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "scheduler-test")
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

func openModel(t testing.TB) *model.Model {
	t.Helper()
	m, err := model.Open(tinyPath, model.LoadOptions{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func newScheduler(t testing.TB, cfg scheduler.Config) *scheduler.Scheduler {
	t.Helper()
	s, err := scheduler.New(openModel(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// alone generates with a model.Session, one sequence on its own model:
// the reference that batching must not change. It stops at EOS unless
// ignoreEOS, like the scheduler.
func alone(t testing.TB, prompt []int32, sp sample.Params, maxTokens int, ignoreEOS bool) []int32 {
	t.Helper()
	m := openModel(t)
	s := m.NewSession(0)
	logits, err := s.Prefill(prompt, false)
	if err != nil {
		t.Fatal(err)
	}
	sm := sample.New(sp, prompt)
	var out []int32
	for len(out) < maxTokens {
		tok := sm.Sample(logits)
		out = append(out, tok)
		if (tok == m.Tokenizer.EOS() && !ignoreEOS) || len(out) == maxTokens {
			break
		}
		if logits, err = s.Decode(tok); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func prompt(seed uint64, n int) []int32 {
	r := rand.New(rand.NewPCG(seed, 1))
	p := []int32{1}
	for len(p) < n {
		p = append(p, int32(3+r.IntN(500)))
	}
	return p
}

func ids(ts []scheduler.Token) []int32 {
	out := make([]int32, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}

func collect(t testing.TB, st *scheduler.Stream) scheduler.Completion {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := st.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConcurrentRequestsGetExactlyTheTokensTheyGetAlone(t *testing.T) {
	// A small budget and sequence limit force chunked prefill, prefill
	// chunks sharing steps with decodes, and requests waiting in the queue.
	s := newScheduler(t, scheduler.Config{MaxNumSeqs: 4, MaxBatchedTokens: 24})
	type job struct {
		prompt []int32
		sp     sample.Params
		max    int
	}
	var jobs []job
	for i := range 10 {
		sp := sample.Params{}
		if i%3 == 2 {
			sp = sample.Params{Temperature: 0.9, TopK: 40, Seed: uint64(i)}
		}
		jobs = append(jobs, job{prompt(uint64(i), 3+i*9), sp, 12 + i%5})
	}
	got := make([][]int32, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() {
			time.Sleep(time.Duration(i%4) * 3 * time.Millisecond)
			st, err := s.Submit(context.Background(), scheduler.Request{Prompt: j.prompt, MaxTokens: j.max, Sampling: j.sp})
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = ids(collect(t, st).Tokens)
		})
	}
	wg.Wait()
	for i, j := range jobs {
		want := alone(t, j.prompt, j.sp, j.max, false)
		if !slices.Equal(got[i], want) {
			t.Errorf("request %d (prompt %d tokens): batched %v, alone %v", i, len(j.prompt), got[i], want)
		}
	}
	if st := s.Stats(); st.Running != 0 || st.Waiting != 0 || st.KVBlocksUsed != 0 {
		t.Errorf("after all requests finished: %+v", st)
	}
}

func TestPreemptedSequencesCompleteWithTheSameOutput(t *testing.T) {
	// Four blocks of 16 positions: each request alone fills the cache at
	// its end, so running several at once must preempt.
	s := newScheduler(t, scheduler.Config{KVCacheTokens: 64, MaxNumSeqs: 4, MaxBatchedTokens: 16})
	const n = 4
	sps := []sample.Params{{}, {Temperature: 0.8, Seed: 7}, {}, {Temperature: 1.2, TopP: 0.9, Seed: 3, RepetitionPenalty: 1.3}}
	streams := make([]*scheduler.Stream, n)
	for i := range n {
		st, err := s.Submit(context.Background(), scheduler.Request{Prompt: prompt(uint64(100+i), 6+i), MaxTokens: 40, Sampling: sps[i], IgnoreEOS: true})
		if err != nil {
			t.Fatal(err)
		}
		streams[i] = st
	}
	for i, st := range streams {
		c := collect(t, st)
		want := alone(t, prompt(uint64(100+i), 6+i), sps[i], 40, true)
		if !slices.Equal(ids(c.Tokens), want) {
			t.Errorf("request %d: got %v, want %v", i, ids(c.Tokens), want)
		}
		if c.Finish != scheduler.FinishLength || c.Usage.CompletionTokens != 40 {
			t.Errorf("request %d: finish %q usage %+v", i, c.Finish, c.Usage)
		}
	}
	if p := s.Stats().Preemptions; p == 0 {
		t.Error("no sequence was preempted; the test does not exercise preemption")
	} else {
		t.Logf("%d preemptions", p)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestCancellingARequestFreesItsBlocksAtOnce(t *testing.T) {
	s := newScheduler(t, scheduler.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	st, err := s.Submit(ctx, scheduler.Request{Prompt: prompt(1, 40), MaxTokens: 400, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the running request to hold KV blocks", func() bool { return s.Stats().KVBlocksUsed > 0 })
	cancel()
	waitFor(t, "the cancelled request to leave", func() bool {
		st := s.Stats()
		return st.Running == 0 && st.KVBlocksUsed == 0
	})
	var err2 error
	for err2 == nil {
		_, err2 = st.Recv(context.Background())
	}
	if !errors.Is(err2, context.Canceled) {
		t.Errorf("the stream of a cancelled request ended with %v, want context.Canceled", err2)
	}
}

func TestAFullQueueRefusesRequests(t *testing.T) {
	s := newScheduler(t, scheduler.Config{MaxNumSeqs: 1, MaxQueue: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long := scheduler.Request{Prompt: prompt(1, 8), MaxTokens: 400, IgnoreEOS: true}
	first, err := s.Submit(ctx, long)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Recv(ctx); err != nil { // it runs: the queue is empty again
		t.Fatal(err)
	}
	if err := s.Admits(2); err != nil {
		t.Fatalf("Admits(2) with a queue of 2 free: %v", err)
	}
	if err := s.Admits(3); !errors.Is(err, scheduler.ErrQueueFull) {
		t.Fatalf("Admits(3) with a queue of 2 free: %v, want ErrQueueFull", err)
	}
	for range 2 {
		if _, err := s.Submit(ctx, long); err != nil {
			t.Fatalf("queueing within the bound: %v", err)
		}
	}
	if err := s.Admits(1); !errors.Is(err, scheduler.ErrQueueFull) {
		t.Fatalf("Admits(1) with the queue full: %v, want ErrQueueFull", err)
	}
	if _, err := s.Submit(ctx, long); !errors.Is(err, scheduler.ErrQueueFull) {
		t.Fatalf("past the bound: %v, want ErrQueueFull", err)
	}
	waitFor(t, "1 running and 2 waiting", func() bool {
		st := s.Stats()
		return st.Waiting == 2 && st.Running == 1
	})
	cancel()
	waitFor(t, "cancelled requests to leave", func() bool {
		st := s.Stats()
		return st.Running == 0 && st.Waiting == 0 && st.KVBlocksUsed == 0
	})
	if _, err := s.Submit(context.Background(), scheduler.Request{Prompt: prompt(2, 4), MaxTokens: 2}); err != nil {
		t.Errorf("after the queue emptied: %v", err)
	}
}

func TestABurstThatFreeSlotsTakeIsNotRefused(t *testing.T) {
	s := newScheduler(t, scheduler.Config{MaxNumSeqs: 2, MaxQueue: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long := scheduler.Request{Prompt: prompt(1, 8), MaxTokens: 400, IgnoreEOS: true}
	if _, err := s.SubmitAll(ctx, []scheduler.Request{long, long, long}); err != nil {
		t.Fatalf("two free slots and a queue of one: %v", err)
	}
	if _, err := s.Submit(ctx, long); !errors.Is(err, scheduler.ErrQueueFull) {
		t.Fatalf("a fourth request: %v, want ErrQueueFull", err)
	}
}

func TestRequestsThatCannotRunAreRefused(t *testing.T) {
	s := newScheduler(t, scheduler.Config{Context: 128, KVCacheTokens: 96})
	tests := []struct {
		name string
		req  scheduler.Request
		want error
	}{
		{"empty prompt", scheduler.Request{MaxTokens: 1}, scheduler.ErrInvalid},
		{"token outside the vocabulary", scheduler.Request{Prompt: []int32{1, 512}, MaxTokens: 1}, scheduler.ErrInvalid},
		{"no tokens to generate", scheduler.Request{Prompt: []int32{1}, MaxTokens: 0}, scheduler.ErrInvalid},
		{"bad temperature", scheduler.Request{Prompt: []int32{1}, MaxTokens: 1, Sampling: sample.Params{Temperature: 3}}, scheduler.ErrInvalid},
		{"too many top logprobs", scheduler.Request{Prompt: []int32{1}, MaxTokens: 1, Logprobs: true, TopLogprobs: 21}, scheduler.ErrInvalid},
		{"prompt and output over the context", scheduler.Request{Prompt: prompt(1, 100), MaxTokens: 29}, scheduler.ErrTooLong},
		{"prompt and output over the KV cache", scheduler.Request{Prompt: prompt(1, 90), MaxTokens: 7}, scheduler.ErrTooLong},
		// len(Prompt)+MaxTokens overflows: the check must not wrap below the context.
		{"max tokens at the int limit", scheduler.Request{Prompt: prompt(1, 10), MaxTokens: math.MaxInt}, scheduler.ErrTooLong},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Submit(context.Background(), tt.req); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
	if got := s.MaxSequence(); got != 96 {
		t.Errorf("MaxSequence %d, want the KV cache's 96", got)
	}
}

func TestStopStringsEndTheOutputEvenAcrossTokens(t *testing.T) {
	s := newScheduler(t, scheduler.Config{})
	req := scheduler.Request{Prompt: prompt(5, 10), MaxTokens: 60, IgnoreEOS: true}
	st, _ := s.Submit(context.Background(), req)
	full := collect(t, st)
	// Find a stop string that spans a token boundary: the text of tokens
	// 20..22 minus their first and last bytes.
	tok := s.Tokenizer()
	before := tok.NewDecoder(false)
	var prefix strings.Builder
	for _, t := range full.Tokens[:20] {
		prefix.WriteString(before.Next(t.ID))
	}
	span := ""
	d := tok.NewDecoder(false)
	for _, t := range full.Tokens[20:23] {
		span += d.Next(t.ID)
	}
	if len(span) < 4 || !strings.HasPrefix(full.Text, prefix.String()) {
		t.Skipf("tokens 20..22 decode to %q; pick another prompt", span)
	}
	stop := span[1 : len(span)-1]
	want := full.Text[:strings.Index(full.Text, stop)]

	req.Stop = []string{"never appears \x00", stop}
	st, _ = s.Submit(context.Background(), req)
	var text strings.Builder
	var final scheduler.Delta
	for {
		d, err := st.Recv(context.Background())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(text.String()+d.Text, stop) {
			t.Fatalf("the stop string %q was streamed", stop)
		}
		text.WriteString(d.Text)
		final = d
	}
	if text.String() != want {
		t.Errorf("with stop %q: text %q, want %q", stop, text.String(), want)
	}
	if final.Finish != scheduler.FinishStop || final.Usage.CompletionTokens >= 60 {
		t.Errorf("finish %q after %d tokens", final.Finish, final.Usage.CompletionTokens)
	}
}

func TestLogprobsAreTheModelsRawDistribution(t *testing.T) {
	s := newScheduler(t, scheduler.Config{})
	p := prompt(9, 12)
	st, _ := s.Submit(context.Background(), scheduler.Request{
		Prompt: p, MaxTokens: 5, Logprobs: true, TopLogprobs: 3, IgnoreEOS: true,
		Sampling: sample.Params{RepetitionPenalty: 1.5, Temperature: 0.5, Seed: 1},
	})
	c := collect(t, st)

	m := openModel(t)
	sess := m.NewSession(0)
	logits, err := sess.Prefill(p, false)
	if err != nil {
		t.Fatal(err)
	}
	for i, tk := range c.Tokens {
		lp, top := sample.LogSoftmax(logits, tk.ID, 3)
		if tk.LogProb != lp || !slices.Equal(tk.Top, top) {
			t.Errorf("token %d: logprob %v top %v, want %v %v", i, tk.LogProb, tk.Top, lp, top)
		}
		if logits, err = sess.Decode(tk.ID); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDrainFinishesAcceptedRequestsAndRefusesNewOnes(t *testing.T) {
	s := newScheduler(t, scheduler.Config{MaxNumSeqs: 2})
	var streams []*scheduler.Stream
	for i := range 4 { // two run, two wait
		st, err := s.Submit(context.Background(), scheduler.Request{Prompt: prompt(uint64(i), 8), MaxTokens: 30, IgnoreEOS: true})
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, st)
	}
	drained := make(chan error, 1)
	go func() { drained <- s.Drain(context.Background()) }()
	waitFor(t, "drain to start", func() bool {
		_, err := s.Submit(context.Background(), scheduler.Request{Prompt: []int32{1}, MaxTokens: 1})
		return errors.Is(err, scheduler.ErrDraining)
	})
	for i, st := range streams {
		if c := collect(t, st); c.Finish != scheduler.FinishLength || len(c.Tokens) != 30 {
			t.Errorf("request %d ended %q after %d tokens", i, c.Finish, len(c.Tokens))
		}
	}
	if err := <-drained; err != nil {
		t.Errorf("Drain: %v", err)
	}
}

func TestDrainPastItsDeadlineAbortsTheRest(t *testing.T) {
	s := newScheduler(t, scheduler.Config{Context: 512})
	st, err := s.Submit(context.Background(), scheduler.Request{Prompt: prompt(1, 8), MaxTokens: 500, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain: %v, want DeadlineExceeded", err)
	}
	var rerr error
	for rerr == nil {
		_, rerr = st.Recv(context.Background())
	}
	if !errors.Is(rerr, scheduler.ErrAborted) {
		t.Errorf("stream ended with %v, want ErrAborted", rerr)
	}
	if u := s.Stats(); u.KVBlocksUsed != 0 || u.Running != 0 {
		t.Errorf("after the abort: %+v", u)
	}
}

type countingObserver struct {
	scheduled, first, next atomic.Int64
	mu                     sync.Mutex
	finished               map[scheduler.FinishReason]int
}

func (o *countingObserver) Scheduled(time.Duration)  { o.scheduled.Add(1) }
func (o *countingObserver) FirstToken(time.Duration) { o.first.Add(1) }
func (o *countingObserver) NextToken(time.Duration)  { o.next.Add(1) }
func (o *countingObserver) Finished(r scheduler.FinishReason, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.finished[r]++
}

func TestObserverAndCountersSeeEveryRequestAndToken(t *testing.T) {
	obs := &countingObserver{finished: map[scheduler.FinishReason]int{}}
	s := newScheduler(t, scheduler.Config{Observer: obs})
	total := 0
	for i := range 3 {
		st, _ := s.Submit(context.Background(), scheduler.Request{Prompt: prompt(uint64(i), 5), MaxTokens: 7, IgnoreEOS: true})
		total += len(collect(t, st).Tokens)
	}
	stats := s.Stats()
	if stats.GenerationTokens != int64(total) || stats.PromptTokens != 15 {
		t.Errorf("counters %+v, want %d generated and 15 prompt tokens", stats, total)
	}
	if obs.scheduled.Load() != 3 || obs.first.Load() != 3 || obs.next.Load() != int64(total-3) {
		t.Errorf("observer saw %d scheduled, %d first, %d next tokens", obs.scheduled.Load(), obs.first.Load(), obs.next.Load())
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if fmt.Sprint(obs.finished) != "map[length:3]" {
		t.Errorf("finished %v", obs.finished)
	}
}

func TestTheKVCacheFitsTheMemoryThatExists(t *testing.T) {
	m := openModel(t)
	c := m.Config
	per := int64(c.Layers * 2 * c.KVDim() * 4)
	// Memory for 125 positions: an explicit cache may take it all (112, in
	// whole blocks of 16); the default keeps a fifth for the rest (96).
	memory := func() (int64, string) { return per * 125, "the test's budget" }

	_, err := scheduler.New(m, scheduler.Config{KVCacheTokens: 1000, Memory: memory})
	if err == nil || !strings.Contains(err.Error(), "at most 112 tokens") || !strings.Contains(err.Error(), "the test's budget") {
		t.Fatalf("a KV cache of 1000 tokens in memory for 125: %v, want an error saying 112 fit and where the figure comes from", err)
	}
	s, err := scheduler.New(m, scheduler.Config{Memory: memory})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.KVCacheTokens(); got != 96 {
		t.Errorf("the default KV cache in memory for 100 positions: %d tokens, want 96", got)
	}
	if got := s.MaxSequence(); got != 96 {
		t.Errorf("the longest sequence: %d, want the cache's 96", got)
	}
	s.Close()
	s2, err := scheduler.New(m, scheduler.Config{KVCacheTokens: 112, Memory: memory})
	if err != nil {
		t.Fatalf("an explicit cache that fits: %v", err)
	}
	s2.Close()
	if _, err := scheduler.New(m, scheduler.Config{Memory: func() (int64, string) { return per, "almost nothing" }}); err == nil {
		t.Error("a scheduler started with memory for less than one block")
	}
}
