package sample

import (
	"math"
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
