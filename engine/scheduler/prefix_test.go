package scheduler_test

import (
	"context"
	"slices"
	"testing"

	"github.com/moe-operator/moe-operator/engine/sample"
	"github.com/moe-operator/moe-operator/engine/scheduler"
)

// run submits one request and collects it.
func run(t *testing.T, s *scheduler.Scheduler, r scheduler.Request) scheduler.Completion {
	t.Helper()
	st, err := s.Submit(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return collect(t, st)
}

func TestACachedPrefixGivesTheLogitsOfAColdStart(t *testing.T) {
	cached := newScheduler(t, scheduler.Config{MaxNumSeqs: 4, MaxBatchedTokens: 32}) // prefix caching is on by default
	cold := newScheduler(t, scheduler.Config{MaxNumSeqs: 4, MaxBatchedTokens: 32, DisablePrefixCaching: true})
	system := prompt(41, 70) // 4 full blocks of 16, and 6 positions more
	withTail := func(seed uint64) []int32 { return append(slices.Clone(system), prompt(seed, 9)[1:]...) }
	req := func(p []int32) scheduler.Request {
		return scheduler.Request{Prompt: p, MaxTokens: 12, IgnoreEOS: true, Logprobs: true, TopLogprobs: 5,
			Sampling: sample.Params{Temperature: 0.7, Seed: 5, RepetitionPenalty: 1.2}}
	}

	run(t, cached, req(withTail(1))) // computes and indexes the system prompt's blocks
	before := cached.Stats()
	hit := run(t, cached, req(withTail(2)))
	after := cached.Stats()
	if got := after.PrefixCacheHits - before.PrefixCacheHits; got != 64 {
		t.Errorf("the second request found %d prompt tokens cached, want the system prompt's 4 full blocks (64)", got)
	}
	if got := after.PrefixCacheQueries - before.PrefixCacheQueries; got != int64(len(withTail(2))) {
		t.Errorf("queried %d tokens, want the prompt's %d", got, len(withTail(2)))
	}

	want := run(t, cold, req(withTail(2)))
	if cold.Stats().PrefixCacheQueries != 0 {
		t.Error("a scheduler without prefix caching counted queries")
	}
	if len(hit.Tokens) != len(want.Tokens) {
		t.Fatalf("%d tokens with the cached prefix, %d without", len(hit.Tokens), len(want.Tokens))
	}
	// Every token's log-probability comes from the whole row of logits: equal
	// log-probabilities and top candidates, to the bit, mean equal logits.
	for i := range want.Tokens {
		h, w := hit.Tokens[i], want.Tokens[i]
		if h.ID != w.ID || h.LogProb != w.LogProb || !slices.Equal(h.Top, w.Top) {
			t.Fatalf("token %d: cached prefix %d %v %v, cold %d %v %v", i, h.ID, h.LogProb, h.Top, w.ID, w.LogProb, w.Top)
		}
	}
	// And the same as one sequence on its own model.
	if ref := alone(t, withTail(2), req(nil).Sampling, 12, true); !slices.Equal(ids(hit.Tokens), ref) {
		t.Errorf("cached prefix %v, alone %v", ids(hit.Tokens), ref)
	}
}

func TestAPromptThatIsAllCachedStillComputesItsLastToken(t *testing.T) {
	s := newScheduler(t, scheduler.Config{})
	p := prompt(77, 48) // exactly 3 blocks
	first := run(t, s, scheduler.Request{Prompt: p, MaxTokens: 4, IgnoreEOS: true})
	before := s.Stats().PrefixCacheHits
	again := run(t, s, scheduler.Request{Prompt: p, MaxTokens: 4, IgnoreEOS: true})
	if got := s.Stats().PrefixCacheHits - before; got != 32 {
		t.Errorf("hits %d, want 32: the last block holds the token whose logits are needed", got)
	}
	if !slices.Equal(ids(first.Tokens), ids(again.Tokens)) {
		t.Errorf("first %v, again %v", ids(first.Tokens), ids(again.Tokens))
	}
}

func TestCachedBlocksAreEvictedWhenTheSpaceIsNeeded(t *testing.T) {
	// Eight blocks: every new 60-token request needs four, so the cached
	// blocks of earlier ones must be evicted, and outputs stay exact.
	s := newScheduler(t, scheduler.Config{KVCacheTokens: 128, MaxNumSeqs: 2, MaxBatchedTokens: 32})
	for i := range 6 {
		p := prompt(uint64(200+i), 60)
		c := run(t, s, scheduler.Request{Prompt: p, MaxTokens: 4, IgnoreEOS: true})
		if want := alone(t, p, sample.Params{}, 4, true); !slices.Equal(ids(c.Tokens), want) {
			t.Errorf("request %d: %v, alone %v", i, ids(c.Tokens), want)
		}
	}
	// The last prompt's blocks are still cached; the first's were evicted.
	before := s.Stats().PrefixCacheHits
	run(t, s, scheduler.Request{Prompt: prompt(205, 60), MaxTokens: 1})
	if got := s.Stats().PrefixCacheHits - before; got != 48 {
		t.Errorf("the most recent prompt found %d tokens cached, want 48", got)
	}
	before = s.Stats().PrefixCacheHits
	run(t, s, scheduler.Request{Prompt: prompt(200, 60), MaxTokens: 1})
	if got := s.Stats().PrefixCacheHits - before; got != 0 {
		t.Errorf("the least recent prompt found %d tokens cached, want 0 (evicted)", got)
	}
	if st := s.Stats(); st.KVBlocksUsed != 0 {
		t.Errorf("cached blocks count as used: %+v", st)
	}
}
