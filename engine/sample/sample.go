// Package sample turns logits into tokens: greedy, or seeded random
// sampling with temperature, top-k, top-p (nucleus) and min-p truncation,
// after repetition, frequency and presence penalties. For a given seed the
// choices are deterministic.
//
// The order follows vLLM: penalties, then temperature, then the top-k,
// top-p and min-p filters, then a draw from what remains.
package sample

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Params are the sampling settings of one sequence. The zero value is
// greedy decoding without penalties.
type Params struct {
	// Temperature divides the logits; 0 means greedy (always the most
	// likely token).
	Temperature float32
	// TopK keeps the k most likely tokens (0: all).
	TopK int
	// TopP keeps the smallest set of most likely tokens whose probabilities
	// sum to at least p (0 or 1: all).
	TopP float32
	// MinP drops tokens less likely than MinP times the most likely one.
	MinP float32
	// RepetitionPenalty (> 1 discourages) divides the positive logits and
	// multiplies the negative logits of every token seen in the prompt or
	// the output, as in CTRL, llama.cpp and vLLM. 0 or 1: off.
	RepetitionPenalty float32
	// FrequencyPenalty is subtracted once per previous occurrence of a token
	// in the output, PresencePenalty once if it occurred at all (OpenAI's
	// definitions).
	FrequencyPenalty float32
	PresencePenalty  float32
	// Seed makes random sampling reproducible.
	Seed uint64
}

// ErrParams reports invalid settings.
var ErrParams = errors.New("sample: invalid parameters")

// Validate checks the ranges OpenAI-compatible servers accept.
func (p Params) Validate() error {
	switch {
	case p.Temperature < 0 || p.Temperature > 2 || math.IsNaN(float64(p.Temperature)):
		return fmt.Errorf("%w: temperature %g must be between 0 and 2", ErrParams, p.Temperature)
	case p.TopK < 0:
		return fmt.Errorf("%w: top_k %d must be >= 0", ErrParams, p.TopK)
	case p.TopP < 0 || p.TopP > 1 || math.IsNaN(float64(p.TopP)):
		return fmt.Errorf("%w: top_p %g must be between 0 and 1", ErrParams, p.TopP)
	case p.MinP < 0 || p.MinP > 1 || math.IsNaN(float64(p.MinP)):
		return fmt.Errorf("%w: min_p %g must be between 0 and 1", ErrParams, p.MinP)
	case p.RepetitionPenalty < 0 || p.RepetitionPenalty > 10:
		return fmt.Errorf("%w: repetition_penalty %g must be between 0 and 10", ErrParams, p.RepetitionPenalty)
	case p.FrequencyPenalty < -2 || p.FrequencyPenalty > 2:
		return fmt.Errorf("%w: frequency_penalty %g must be between -2 and 2", ErrParams, p.FrequencyPenalty)
	case p.PresencePenalty < -2 || p.PresencePenalty > 2:
		return fmt.Errorf("%w: presence_penalty %g must be between -2 and 2", ErrParams, p.PresencePenalty)
	}
	return nil
}

// Sampler samples one sequence's tokens. It is not safe for concurrent use.
type Sampler struct {
	p      Params
	rng    *rand.Rand
	seen   map[int32]bool // prompt and output, for the repetition penalty
	counts map[int32]int  // output only, for frequency and presence
	cands  []cand
}

type cand struct {
	id int32
	v  float32 // logit, then probability
}

// New returns a sampler for a sequence whose prompt is prompt.
func New(p Params, prompt []int32) *Sampler {
	s := &Sampler{p: p, rng: rand.New(rand.NewPCG(p.Seed, 0x9e3779b97f4a7c15)), seen: map[int32]bool{}, counts: map[int32]int{}}
	for _, t := range prompt {
		s.seen[t] = true
	}
	return s
}

// Sample picks the next token from logits (which it may modify) and
// records it as output.
func (s *Sampler) Sample(logits []float32) int32 {
	s.penalize(logits)
	var tok int32
	if s.p.Temperature == 0 {
		tok = Argmax(logits)
	} else {
		tok = s.draw(logits)
	}
	s.Accept(tok)
	return tok
}

// TopCandidates is how many of the most likely tokens the sampler needs
// to choose (1 for greedy decoding, TopK for top-k sampling), when that
// is at most limit; 0 when it must see every logit (penalties, top-p
// over the whole distribution, no top-k).
func (p Params) TopCandidates(limit int) int {
	if (p.RepetitionPenalty != 0 && p.RepetitionPenalty != 1) || p.FrequencyPenalty != 0 || p.PresencePenalty != 0 {
		return 0
	}
	switch {
	case p.Temperature == 0:
		return min(1, limit)
	case p.TopK > 0 && p.TopK <= limit && (p.TopP <= 0 || p.TopP >= 1):
		return p.TopK
	}
	return 0
}

// SampleTop picks the next token from the most likely tokens alone (ids
// and their logits, best first, ties to the lower id; at least
// TopCandidates of them) and records it as output. For a sampler whose
// TopCandidates is not 0 it picks what Sample would pick from the whole
// row (with the same random draw), except where exp rounds two different
// logits at the k-th place to one probability.
func (s *Sampler) SampleTop(ids []int32, logits []float32) int32 {
	var tok int32
	if s.p.Temperature == 0 {
		tok = ids[0]
	} else {
		invT := 1 / s.p.Temperature
		mx := logits[0]
		c := s.cands[:0]
		for i, v := range logits {
			if e := float32(math.Exp(float64((v - mx) * invT))); e >= s.p.MinP {
				c = append(c, cand{ids[i], e})
			}
		}
		tok = s.pick(topN(c, min(s.p.TopK, len(c))))
	}
	s.Accept(tok)
	return tok
}

// Accept records tok as output without sampling it (for forced tokens).
func (s *Sampler) Accept(tok int32) {
	s.seen[tok] = true
	s.counts[tok]++
}

func (s *Sampler) penalize(logits []float32) {
	if r := s.p.RepetitionPenalty; r > 0 && r != 1 {
		for t := range s.seen {
			if logits[t] > 0 {
				logits[t] /= r
			} else {
				logits[t] *= r
			}
		}
	}
	if s.p.FrequencyPenalty != 0 || s.p.PresencePenalty != 0 {
		for t, n := range s.counts {
			logits[t] -= s.p.FrequencyPenalty*float32(n) + s.p.PresencePenalty
		}
	}
}

func (s *Sampler) draw(logits []float32) int32 {
	invT := 1 / s.p.Temperature
	mx := logits[0]
	for _, v := range logits {
		mx = max(mx, v)
	}
	// Probabilities up to a common factor; dropping the tokens below min-p
	// needs no sort: it is a threshold relative to the most likely one.
	floor := float32(0)
	if s.p.MinP > 0 {
		floor = s.p.MinP
	}
	c := s.cands[:0]
	for i, v := range logits {
		if e := float32(math.Exp(float64((v - mx) * invT))); e >= floor {
			c = append(c, cand{int32(i), e})
		}
	}
	k := len(c)
	if s.p.TopK > 0 && s.p.TopK < k {
		k = s.p.TopK
	}
	if topP := s.p.TopP; topP > 0 && topP < 1 {
		var total float64
		for _, x := range c {
			total += float64(x.v)
		}
		// The nucleus is usually a few tokens: order only the head,
		// widening it until it holds the mass or the top-k.
		for m := min(k, 64); ; m = min(k, 4*m) {
			head := topN(c, m)
			var cum float64
			n := 0
			for n < len(head) && cum < float64(topP)*total {
				cum += float64(head[n].v)
				n++
			}
			if cum >= float64(topP)*total || m == k {
				c = head[:n]
				break
			}
		}
	} else if k < len(c) || s.p.TopK > 0 {
		// With a top-k, the kept tokens are always walked best first
		// (also when fewer than k passed min-p), as SampleTop walks them.
		c = topN(c, k)
	}
	return s.pick(c)
}

// pick draws one of the candidates c, in c's order, by probability.
func (s *Sampler) pick(c []cand) int32 {
	s.cands = c
	var total float64
	for _, x := range c {
		total += float64(x.v)
	}
	r := s.rng.Float64() * total
	for _, x := range c {
		r -= float64(x.v)
		if r < 0 {
			return x.id
		}
	}
	return c[len(c)-1].id
}

// topN moves the n most likely candidates (ties to the lower id) to the
// front of c, in descending order, and returns them.
func topN(c []cand, n int) []cand {
	less := func(a, b cand) int { // descending probability, then ascending id
		switch {
		case a.v > b.v:
			return -1
		case a.v < b.v:
			return 1
		}
		return int(a.id - b.id)
	}
	if n >= len(c) {
		slices.SortFunc(c, less)
		return c
	}
	// Partial selection: keep a sorted window of the n best seen so far;
	// a candidate displaced from it takes the newcomer's place, so c stays
	// a permutation and a wider call later still sees every candidate.
	head := c[:n]
	slices.SortFunc(head, less)
	for j := n; j < len(c); j++ {
		if x := c[j]; less(x, head[n-1]) < 0 {
			c[j] = head[n-1]
			i, _ := slices.BinarySearchFunc(head, x, less)
			copy(head[i+1:], head[i:n-1])
			head[i] = x
		}
	}
	return head
}

// Argmax returns the index of the largest logit (the lowest index on ties).
func Argmax(logits []float32) int32 {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return int32(best)
}

// LogProb is a token with its log-probability.
type LogProb struct {
	Token   int32
	LogProb float32
}

// LogSoftmax returns the log-probability of token tok under logits, and the
// n most likely tokens (most likely first).
func LogSoftmax(logits []float32, tok int32, n int) (float32, []LogProb) {
	mx := logits[0]
	for _, v := range logits {
		mx = max(mx, v)
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v - mx))
	}
	lse := float64(mx) + math.Log(sum)
	lp := func(i int32) float32 { return float32(float64(logits[i]) - lse) }
	var top []LogProb
	if n > 0 {
		top = make([]LogProb, 0, n+1)
		for i := range logits {
			v := logits[i]
			if len(top) == n && v <= logits[top[n-1].Token] {
				continue
			}
			pos, _ := slices.BinarySearchFunc(top, v, func(e LogProb, v float32) int {
				if logits[e.Token] >= v {
					return -1
				}
				return 1
			})
			top = slices.Insert(top, pos, LogProb{Token: int32(i)})
			if len(top) > n {
				top = top[:n]
			}
		}
		for i := range top {
			top[i].LogProb = lp(top[i].Token)
		}
	}
	return lp(tok), top
}
