// Package model implements the Mixtral forward pass: RMSNorm, rotary
// position embeddings, grouped-query causal attention (with an optional
// sliding window) over a paged KV cache, and a sparse mixture-of-experts
// feed-forward layer with top-k routing and SwiGLU experts.
//
// The layer math, in HF's order, is
//
//	h   = x + Wo · attn(rope(Wq·n), rope(Wk·n), Wv·n)   with n = rmsnorm(x)·attn_norm
//	out = h + Σ_{e ∈ topk} w_e · W2_e (silu(W1_e·m) ⊙ W3_e·m)   with m = rmsnorm(h)·ffn_norm
//
// where the router weights w are the softmax over all experts of Wr·m,
// restricted to the top k and renormalised to sum to one. A Model may be
// split into tensor-parallel shards (see LoadOptions.TensorParallel); the
// output does not depend on the split beyond float rounding.
package model

import (
	"errors"
	"fmt"
)

// RopeStyle selects which elements of a head RoPE rotates together.
type RopeStyle int

const (
	// RopeAdjacent rotates pairs (x[2i], x[2i+1]): llama.cpp's "normal"
	// mode, used with GGUF files, whose converter permuted the Q and K rows
	// to make it equivalent to the original.
	RopeAdjacent RopeStyle = iota
	// RopeHalf rotates pairs (x[i], x[i+headDim/2]): HF's rotate_half, used
	// with safetensors checkpoints.
	RopeHalf
)

// Config holds a model's hyperparameters.
type Config struct {
	Name          string
	Layers        int
	Dim           int // embedding (hidden) size
	Heads         int
	KVHeads       int
	HeadDim       int
	FFN           int // intermediate size of each expert
	Experts       int // 1 for a dense model
	TopK          int // experts used per token
	Vocab         int
	Context       int // trained context length
	RopeTheta     float64
	NormEps       float32
	SlidingWindow int // 0: full causal attention
	Rope          RopeStyle
}

// ErrConfig reports hyperparameters the engine cannot run.
var ErrConfig = errors.New("model: invalid configuration")

// Bounds on sizes, far above any released model, checked before anything
// is allocated from them: a file's metadata is untrusted input.
const (
	MaxLayers   = 1024
	MaxDim      = 1 << 16
	MaxHeads    = 1024
	MaxHeadDim  = 1024
	MaxFFN      = 1 << 20
	MaxExperts  = 1024
	MaxVocab    = 1 << 22
	MaxContext  = 1 << 24
	maxNormEps  = 1.0
	maxRopeBase = 1e12
)

// Validate checks that the hyperparameters are consistent and within
// bounds.
func (c *Config) Validate() error { return c.validate(nil) }

// validate is Validate with errors naming the file's keys: keys maps
// a field's description (as in the errors) to the key it came from.
func (c *Config) validate(keys map[string]string) error {
	name := func(what string) string {
		if k, ok := keys[what]; ok {
			return fmt.Sprintf("%s (%s)", k, what)
		}
		return what
	}
	sizes := []struct {
		name string
		v    int
		most int
	}{{"layers", c.Layers, MaxLayers}, {"embedding size", c.Dim, MaxDim}, {"heads", c.Heads, MaxHeads}, {"kv heads", c.KVHeads, MaxHeads},
		{"head dim", c.HeadDim, MaxHeadDim}, {"feed-forward size", c.FFN, MaxFFN}, {"experts", c.Experts, MaxExperts},
		{"experts used", c.TopK, MaxExperts}, {"vocabulary size", c.Vocab, MaxVocab}, {"context length", c.Context, MaxContext}}
	for _, p := range sizes {
		if p.v <= 0 {
			return fmt.Errorf("%w: %s is %d, want > 0", ErrConfig, name(p.name), p.v)
		}
		if p.v > p.most {
			return fmt.Errorf("%w: %s is %d, more than the %d this engine allows", ErrConfig, name(p.name), p.v, p.most)
		}
	}
	if c.Heads%c.KVHeads != 0 {
		return fmt.Errorf("%w: %d heads (%s) is not a multiple of %d kv heads (%s)", ErrConfig, c.Heads, name("heads"), c.KVHeads, name("kv heads"))
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("%w: %s %d is odd; RoPE needs pairs", ErrConfig, name("head dim"), c.HeadDim)
	}
	if c.TopK > c.Experts {
		return fmt.Errorf("%w: %d experts used per token (%s) but only %d experts (%s)", ErrConfig, c.TopK, name("experts used"), c.Experts, name("experts"))
	}
	if !(c.RopeTheta > 0 && c.RopeTheta <= maxRopeBase) { // also refuses NaN
		return fmt.Errorf("%w: %s is %g, want a finite number > 0", ErrConfig, name("rope theta"), c.RopeTheta)
	}
	if !(c.NormEps > 0 && c.NormEps < maxNormEps) {
		return fmt.Errorf("%w: %s is %g, want a number between 0 and 1", ErrConfig, name("norm epsilon"), c.NormEps)
	}
	if c.SlidingWindow < 0 || c.SlidingWindow > MaxContext {
		return fmt.Errorf("%w: %s is %d, want 0 to %d", ErrConfig, name("sliding window"), c.SlidingWindow, MaxContext)
	}
	return nil
}

// QDim is the width of the query projection (heads × head dim).
func (c *Config) QDim() int { return c.Heads * c.HeadDim }

// KVDim is the width of the key and value projections.
func (c *Config) KVDim() int { return c.KVHeads * c.HeadDim }

// Params counts the model's weights: all of them, and those one token uses
// (attention, the router, TopK experts, its embedding row and the output head).
func (c *Config) Params() (total, active int64) {
	d, f := int64(c.Dim), int64(c.FFN)
	attn := d*int64(c.QDim())*2 + d*int64(c.KVDim())*2
	expert := 3 * d * f
	router := d * int64(c.Experts)
	if c.Experts == 1 {
		router = 0
	}
	norms := 2 * d
	perLayer := attn + router + norms
	total = int64(c.Layers)*(perLayer+int64(c.Experts)*expert) + 2*int64(c.Vocab)*d + d
	active = int64(c.Layers)*(perLayer+int64(c.TopK)*expert) + int64(c.Vocab)*d + 2*d
	return total, active
}
