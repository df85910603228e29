package sample

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func logits() []float32 { return []float32{1, 3, 2, 0.5, 2.9} }

func TestGreedyPicksTheLargestLogit(t *testing.T) {
	s := New(Params{}, nil)
	if got := s.Sample(logits()); got != 1 {
		t.Fatalf("greedy picked %d, want 1", got)
	}
}

func TestSameSeedSameTokens(t *testing.T) {
	p := Params{Temperature: 1, Seed: 42}
	a, b := New(p, nil), New(p, nil)
	for i := 0; i < 50; i++ {
		if x, y := a.Sample(logits()), b.Sample(logits()); x != y {
			t.Fatalf("step %d: %d vs %d with the same seed", i, x, y)
		}
	}
}

func TestDifferentSeedsDiffer(t *testing.T) {
	a, b := New(Params{Temperature: 1, Seed: 1}, nil), New(Params{Temperature: 1, Seed: 2}, nil)
	same := 0
	for i := 0; i < 50; i++ {
		if a.Sample(logits()) == b.Sample(logits()) {
			same++
		}
	}
	if same == 50 {
		t.Fatal("two seeds drew identical sequences")
	}
}

func TestTopKOneIsGreedy(t *testing.T) {
	s := New(Params{Temperature: 1.5, TopK: 1, Seed: 3}, nil)
	for i := 0; i < 20; i++ {
		if got := s.Sample(logits()); got != 1 {
			t.Fatalf("top_k=1 drew %d", got)
		}
	}
}

func TestTopPAndMinPKeepOnlyTheHead(t *testing.T) {
	for name, p := range map[string]Params{
		"top_p": {Temperature: 1, TopP: 0.5, Seed: 4},
		"min_p": {Temperature: 1, MinP: 0.8, Seed: 4},
	} {
		s := New(p, nil)
		for i := 0; i < 200; i++ {
			if got := s.Sample(logits()); got != 1 && got != 4 {
				t.Fatalf("%s drew token %d outside the two most likely", name, got)
			}
		}
	}
}

func TestSamplingFollowsTheDistribution(t *testing.T) {
	s := New(Params{Temperature: 1, Seed: 5}, nil)
	l := []float32{0, float32(math.Log(3))} // p = 0.25, 0.75
	ones := 0
	n := 20000
	for i := 0; i < n; i++ {
		if s.Sample(append([]float32(nil), l...)) == 1 {
			ones++
		}
	}
	if f := float64(ones) / float64(n); math.Abs(f-0.75) > 0.02 {
		t.Fatalf("token 1 drawn %.3f of the time, want 0.75", f)
	}
}

func TestPenalties(t *testing.T) {
	// Repetition penalty applies to prompt tokens; frequency and presence
	// only to output tokens.
	s := New(Params{RepetitionPenalty: 2}, []int32{1})
	l := logits()
	s.penalize(l)
	if l[1] != 1.5 {
		t.Fatalf("repetition-penalised logit %g, want 1.5", l[1])
	}
	s = New(Params{FrequencyPenalty: 0.5, PresencePenalty: 0.25}, []int32{1})
	s.Accept(4)
	s.Accept(4)
	l = logits()
	s.penalize(l)
	if l[1] != 3 || math.Abs(float64(l[4])-(2.9-1-0.25)) > 1e-6 {
		t.Fatalf("penalised logits %v", l)
	}
	// Greedy with a strong frequency penalty avoids repeating.
	s = New(Params{FrequencyPenalty: 2}, nil)
	first := s.Sample(logits())
	if second := s.Sample(logits()); second == first {
		t.Fatalf("frequency penalty did not stop a repeat of %d", first)
	}
}

func TestValidate(t *testing.T) {
	bad := []Params{{Temperature: -1}, {Temperature: 3}, {TopP: 1.5}, {TopK: -1}, {MinP: 2}, {FrequencyPenalty: 3}, {PresencePenalty: -3}, {RepetitionPenalty: -1}}
	for _, p := range bad {
		if p.Validate() == nil {
			t.Errorf("%+v accepted", p)
		}
	}
	if err := (Params{Temperature: 0.7, TopP: 0.9, TopK: 40}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestLogSoftmax(t *testing.T) {
	l := []float32{0, float32(math.Log(3)), -100}
	lp, top := LogSoftmax(l, 1, 2)
	if math.Abs(float64(lp)-math.Log(0.75)) > 1e-5 {
		t.Fatalf("logprob %g, want %g", lp, math.Log(0.75))
	}
	if len(top) != 2 || top[0].Token != 1 || top[1].Token != 0 {
		t.Fatalf("top %v", top)
	}
}

func TestTopNSelectsLikeAFullSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 50; trial++ {
		c := make([]cand, 500)
		for i := range c {
			c[i] = cand{int32(i), float32(rng.IntN(50))} // many ties
		}
		want := slices.Clone(c)
		slices.SortFunc(want, func(a, b cand) int {
			if a.v != b.v {
				return cmp.Compare(b.v, a.v)
			}
			return cmp.Compare(a.id, b.id)
		})
		for _, n := range []int{1, 7, 64, 256} {
			got := topN(c, n)
			if !slices.Equal(got, want[:n]) {
				t.Fatalf("topN(%d) = %v..., want %v...", n, got[:min(5, n)], want[:min(5, n)])
			}
		}
	}
}

func TestTopPSamplesOnlyTheNucleus(t *testing.T) {
	// 200 tokens: token 0 holds ~60% of the mass; top_p 0.5 leaves only it.
	l := make([]float32, 200)
	l[0] = float32(math.Log(300))
	s := New(Params{Temperature: 1, TopP: 0.5, Seed: 9}, nil)
	for i := 0; i < 100; i++ {
		if got := s.Sample(slices.Clone(l)); got != 0 {
			t.Fatalf("top_p 0.5 drew token %d", got)
		}
	}
	// top_p 0.9 needs token 0 and about 60 of the rest, beyond the first
	// window of 64: every draw must still be a valid token.
	s = New(Params{Temperature: 1, TopP: 0.9, Seed: 9}, nil)
	seen := map[int32]bool{}
	for i := 0; i < 2000; i++ {
		seen[s.Sample(slices.Clone(l))] = true
	}
	if len(seen) < 20 || len(seen) > 200 {
		t.Fatalf("top_p 0.9 drew %d distinct tokens", len(seen))
	}
}
