package sample

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/moe-operator/moe-operator/engine/internal/logitcheck"
)

// topOf returns the k best of row, best first, ties to the lower id: what
// model.ForwardTop returns.
func topOf(row []float32, k int) ([]int32, []float32) {
	ids := logitcheck.Ranked(row)[:k]
	vals := make([]float32, k)
	for i, id := range ids {
		vals[i] = row[id]
	}
	return ids, vals
}

func TestSampleTopPicksWhatSamplePicks(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := []Params{
		{Temperature: 0},
		{Temperature: 0.7, TopK: 1},
		{Temperature: 0.8, TopK: 5, Seed: 3},
		{Temperature: 1.2, TopK: 16, Seed: 4},
		{Temperature: 1, TopK: 8, MinP: 0.3, Seed: 5}, // min-p leaves fewer than k
		{Temperature: 0.5, TopK: 3, TopP: 1, Seed: 6},
	}
	for _, p := range cases {
		k := p.TopCandidates(16)
		if k == 0 {
			t.Fatalf("%+v: TopCandidates = 0, want the top-k", p)
		}
		full, top := New(p, nil), New(p, nil)
		for step := range 200 {
			row := make([]float32, 300)
			for i := range row {
				row[i] = float32(rng.NormFloat64() * 3)
			}
			row[rng.IntN(300)] = row[rng.IntN(300)] // a tie now and then
			ids, vals := topOf(row, k)
			want := full.Sample(slices.Clone(row))
			if got := top.SampleTop(ids, vals); got != want {
				t.Fatalf("%+v step %d: SampleTop picked %d, Sample %d", p, step, got, want)
			}
		}
	}
}

func TestTopCandidatesNeedsEveryLogitForPenaltiesAndTopP(t *testing.T) {
	for _, p := range []Params{
		{Temperature: 0, RepetitionPenalty: 1.1},
		{Temperature: 0, FrequencyPenalty: 0.5},
		{Temperature: 0.7, TopK: 4, PresencePenalty: 0.5},
		{Temperature: 0.7},                     // no top-k: the whole distribution
		{Temperature: 0.7, TopK: 4, TopP: 0.9}, // top-p is over the whole mass
		{Temperature: 0.7, TopK: 40},           // more than the limit
	} {
		if k := p.TopCandidates(16); k != 0 {
			t.Errorf("%+v: TopCandidates = %d, want 0", p, k)
		}
	}
	if k := (Params{Temperature: 0, RepetitionPenalty: 1}).TopCandidates(16); k != 1 {
		t.Errorf("greedy with a neutral penalty: %d, want 1", k)
	}
}
