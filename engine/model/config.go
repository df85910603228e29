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

// Validate checks that the hyperparameters are consistent.
func (c *Config) Validate() error {
	positive := []struct {
		name string
		v    int
	}{{"layers", c.Layers}, {"embedding size", c.Dim}, {"heads", c.Heads}, {"kv heads", c.KVHeads}, {"head dim", c.HeadDim},
		{"feed-forward size", c.FFN}, {"experts", c.Experts}, {"experts used", c.TopK}, {"vocabulary size", c.Vocab}, {"context length", c.Context}}
	for _, p := range positive {
		if p.v <= 0 {
			return fmt.Errorf("%w: %s is %d, want > 0", ErrConfig, p.name, p.v)
		}
	}
	if c.Heads%c.KVHeads != 0 {
		return fmt.Errorf("%w: %d heads is not a multiple of %d kv heads", ErrConfig, c.Heads, c.KVHeads)
	}
	if c.HeadDim%2 != 0 {
		return fmt.Errorf("%w: head dim %d is odd; RoPE needs pairs", ErrConfig, c.HeadDim)
	}
	if c.TopK > c.Experts {
		return fmt.Errorf("%w: %d experts used per token but only %d experts", ErrConfig, c.TopK, c.Experts)
	}
	if c.RopeTheta <= 0 {
		return fmt.Errorf("%w: rope theta %g, want > 0", ErrConfig, c.RopeTheta)
	}
	if c.SlidingWindow < 0 {
		return fmt.Errorf("%w: sliding window %d, want >= 0", ErrConfig, c.SlidingWindow)
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
