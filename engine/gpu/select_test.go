package gpu_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/moe-operator/moe-operator/engine/internal/logitcheck"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/sample"
	"github.com/moe-operator/moe-operator/engine/scheduler"
)

// The device's top-k selection returns exactly the k best of the logits
// the device computes (ForwardTop on the CPU selects on the host).
func TestDeviceTopKIsTheTopOfItsLogits(t *testing.T) {
	c, _ := modelgen.Preset("tiny")
	c.Seed = 31
	_, dev := pair(t, gen(t, c), model.LoadOptions{Threads: 1})
	V := dev.Config.Vocab
	for _, k := range []int{1, 5, 16} {
		run := func(top bool) ([]float32, []model.Candidate) {
			cache, err := dev.NewCache(64, 16)
			if err != nil {
				t.Fatal(err)
			}
			defer cache.Close()
			st := dev.NewState(32, 64)
			var seq model.Seq
			if err := cache.Reserve(&seq, len(prompt)); err != nil {
				t.Fatal(err)
			}
			var b model.Batch
			for i, tok := range prompt {
				b.Add(tok, i, &seq, i%3 == 0)
			}
			if top {
				cs, err := dev.ForwardTop(st, cache, &b, k)
				if err != nil {
					t.Fatal(err)
				}
				return nil, slices.Clone(cs)
			}
			logits, err := dev.Forward(st, cache, &b)
			if err != nil {
				t.Fatal(err)
			}
			return slices.Clone(logits), nil
		}
		logits, _ := run(false)
		_, got := run(true)
		rows := len(logits) / V
		if len(got) != rows*k {
			t.Fatalf("k=%d: %d candidates for %d rows", k, len(got), rows)
		}
		for r := range rows {
			row := logits[r*V : (r+1)*V]
			order := logitcheck.Ranked(row)
			for j := range k {
				g := got[r*k+j]
				if g.Token != order[j] || g.Logit != row[order[j]] {
					t.Fatalf("k=%d row %d place %d: device picked %d (%g), want %d (%g)", k, r, j, g.Token, g.Logit, order[j], row[order[j]])
				}
			}
		}
	}
}

// The scheduler on the device, with greedy and top-k requests (which
// take the device's top-k path) and a penalised one (which reads the
// logits), in one batch, generates what the CPU's scheduler generates.
func TestSchedulerOnTheDeviceMatchesTheCPU(t *testing.T) {
	c, _ := modelgen.Preset("tiny")
	c.Seed = 41
	cpu, dev := pair(t, gen(t, c), model.LoadOptions{Threads: 1})
	reqs := []scheduler.Request{
		{Prompt: prompt[:9], MaxTokens: 12, IgnoreEOS: true},
		{Prompt: prompt[3:17], MaxTokens: 10, IgnoreEOS: true, Sampling: sample.Params{Temperature: 0.8, TopK: 4, Seed: 9}},
		{Prompt: prompt[5:], MaxTokens: 8, IgnoreEOS: true, Sampling: sample.Params{Temperature: 0, RepetitionPenalty: 1.3}},
	}
	generate := func(m *model.Model, rs []scheduler.Request) [][]int32 {
		s, err := scheduler.New(m, scheduler.Config{MaxNumSeqs: 4, KVCacheTokens: 256})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		streams, err := s.SubmitAll(ctx, rs)
		if err != nil {
			t.Fatal(err)
		}
		var out [][]int32
		for _, st := range streams {
			comp, err := st.Collect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var ids []int32
			for _, tok := range comp.Tokens {
				ids = append(ids, tok.ID)
			}
			out = append(out, ids)
		}
		return out
	}
	want := generate(cpu, reqs)
	// All together (the penalised request makes the batch read logits)
	// and the first two alone (the top-k path).
	got := generate(dev, reqs)
	got = append(got, generate(dev, reqs[:2])...)
	want = append(want, want[:2]...)
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("request %d: the device generated %v, the CPU %v", i%3, got[i], want[i])
		}
	}
}
