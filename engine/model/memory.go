package model

import (
	"fmt"

	"github.com/moe-operator/moe-operator/engine/gguf"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

// ShardBytes is the weight memory each shard of the loaded model holds: its
// slices of the attention and expert matrices and of the embedding and
// output head (split by vocabulary), plus the norms and router every shard
// replicates. KV cache and scratch are not included.
func (m *Model) ShardBytes() []int64 {
	c := m.Config
	var shared int64 = int64(c.Dim) * 4 // output norm
	for _, l := range m.layers {
		shared += int64(len(l.attnNorm)+len(l.ffnNorm)) * 4
		if l.router != nil {
			shared += int64(l.router.Bytes())
		}
	}
	out := make([]int64, len(m.shards))
	embedRow := int64(m.embed.RowBytes())
	tied := m.tied
	for i, s := range m.shards {
		b := shared + int64(s.output.Rows)*embedRow
		if !tied {
			b += int64(s.output.Bytes())
		}
		for _, l := range s.layers {
			for _, mat := range l.matrices() {
				b += int64(mat.Bytes())
			}
		}
		out[i] = b
	}
	return out
}

func (l *shardLayer) matrices() []*tensor.Matrix {
	out := []*tensor.Matrix{l.wq, l.wk, l.wv, l.wo}
	for e := range l.gate {
		if l.gate[e] != nil {
			out = append(out, l.gate[e], l.up[e], l.down[e])
		}
	}
	return out
}

// PlanShardBytes computes, without loading the weights, what ShardBytes
// would report for the model in f loaded with opts (tensor parallelism,
// expert parallelism and quantization). It is what `moe inspect` prints.
func PlanShardBytes(f *gguf.File, opts LoadOptions) ([]int64, error) {
	c, err := ConfigFromGGUF(f)
	if err != nil {
		return nil, err
	}
	target, convert, err := ParseQuantization(opts.Quantization)
	if err != nil {
		return nil, err
	}
	n := max(opts.TensorParallel, 1)
	plan, err := planShards(c, n, opts.ExpertParallel)
	if err != nil {
		return nil, err
	}
	typeOf := func(name string) (tensor.DType, error) {
		t, ok := f.Tensor(name)
		if !ok {
			return 0, fmt.Errorf("%w: tensor %q is missing", ErrUnsupported, name)
		}
		if convert && quantizable(*t) {
			if err := checkConvertible(t.Type, target); err != nil {
				return 0, err
			}
			if needsConversion(t.Type, target) {
				return target, nil
			}
		}
		return t.Type, nil
	}
	var sizeErr error
	size := func(t tensor.DType, rows, cols int) int64 {
		rb, err := t.RowBytes(cols)
		if err != nil && sizeErr == nil {
			sizeErr = fmt.Errorf("%w: a %d-column slice cannot be split out of %s rows for %d shards: %v", ErrConfig, cols, t, n, err)
		}
		return int64(rows) * int64(rb)
	}
	expertType := func(l int, kind string, e int) (tensor.DType, error) {
		if _, ok := f.Tensor(fmt.Sprintf("blk.%d.ffn_%s_exps.weight", l, kind)); ok {
			return typeOf(fmt.Sprintf("blk.%d.ffn_%s_exps.weight", l, kind))
		}
		if c.Experts == 1 {
			if _, ok := f.Tensor(fmt.Sprintf("blk.%d.ffn_%s.weight", l, kind)); ok {
				return typeOf(fmt.Sprintf("blk.%d.ffn_%s.weight", l, kind))
			}
		}
		return typeOf(fmt.Sprintf("blk.%d.ffn_%s.%d.weight", l, kind, e))
	}
	embedType, err := typeOf("token_embd.weight")
	if err != nil {
		return nil, err
	}
	_, hasOutput := f.Tensor("output.weight")
	outType := embedType
	if hasOutput {
		if outType, err = typeOf("output.weight"); err != nil {
			return nil, err
		}
	}
	shared := int64(c.Dim) * 4
	for l := 0; l < c.Layers; l++ {
		shared += 2 * int64(c.Dim) * 4
		if c.Experts > 1 {
			t, err := typeOf(fmt.Sprintf("blk.%d.ffn_gate_inp.weight", l))
			if err != nil {
				return nil, err
			}
			shared += size(t, c.Experts, c.Dim)
		}
	}
	hd := c.HeadDim
	out := make([]int64, n)
	for i, p := range plan {
		vocab := (i+1)*c.Vocab/n - i*c.Vocab/n
		b := shared + size(embedType, vocab, c.Dim)
		if hasOutput {
			b += size(outType, vocab, c.Dim)
		}
		for l := 0; l < c.Layers; l++ {
			pre := fmt.Sprintf("blk.%d.", l)
			for _, t := range []struct {
				name       string
				rows, cols int
			}{{"attn_q", p.heads * hd, c.Dim}, {"attn_k", p.kvHeads * hd, c.Dim}, {"attn_v", p.kvHeads * hd, c.Dim}, {"attn_output", c.Dim, p.heads * hd}} {
				typ, err := typeOf(pre + t.name + ".weight")
				if err != nil {
					return nil, err
				}
				b += size(typ, t.rows, t.cols)
			}
			for e := 0; e < c.Experts; e++ {
				if !p.experts(e) {
					continue
				}
				for _, t := range []struct {
					kind       string
					rows, cols int
				}{{"gate", p.ffn, c.Dim}, {"up", p.ffn, c.Dim}, {"down", c.Dim, p.ffn}} {
					typ, err := expertType(l, t.kind, e)
					if err != nil {
						return nil, err
					}
					b += size(typ, t.rows, t.cols)
				}
			}
		}
		out[i] = b
	}
	return out, sizeErr
}
