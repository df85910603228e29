package model

import (
	"fmt"
	"runtime"

	"github.com/moe-operator/moe-operator/engine/tensor"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// Model is a loaded Mixtral-architecture model, ready to run. It is safe
// for concurrent use only through separate States and Caches, and only one
// Forward may run at a time per Model (the shards' thread pools are shared).
type Model struct {
	Config    Config
	Tokenizer *tokenizer.Tokenizer
	Weights   *Weights

	shards  []*shard
	output  *tensor.Matrix // the output head, packed
	pool    *tensor.Pool   // all threads; used for work outside the shards
	reducer Reducer
	closer  func() error
}

// shard is one tensor-parallel slice of the model: a subset of the
// attention heads and of every expert's intermediate dimension, with its
// own thread pool. With one shard, it is the whole model.
type shard struct {
	index      int
	heads      int // query heads in this shard
	headOffset int // global index of its first query head
	kvHeads    int
	kvOffset   int
	ffn        int // intermediate size of each expert in this shard
	layers     []shardLayer
	pool       *tensor.Pool
}

type shardLayer struct {
	wq, wk, wv, wo *tensor.Matrix
	gate, up, down []*tensor.Matrix
}

func (l *shardLayer) matrices() []*tensor.Matrix {
	out := []*tensor.Matrix{l.wq, l.wk, l.wv, l.wo}
	out = append(out, l.gate...)
	out = append(out, l.up...)
	return append(out, l.down...)
}

// pack converts the shard's matrices to the packed layout of their type.
func (s *shard) pack() {
	for i := range s.layers {
		l := &s.layers[i]
		l.wq, l.wk, l.wv, l.wo = tensor.Pack(l.wq), tensor.Pack(l.wk), tensor.Pack(l.wv), tensor.Pack(l.wo)
		for _, ms := range []*[]*tensor.Matrix{&l.gate, &l.up, &l.down} {
			packed := make([]*tensor.Matrix, len(*ms))
			for e, m := range *ms {
				packed[e] = tensor.Pack(m)
			}
			*ms = packed
		}
	}
}

// New assembles a model from its parts, splitting it into shards as opts
// asks.
func New(c Config, w *Weights, tok *tokenizer.Tokenizer, opts LoadOptions) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if tok != nil && tok.Size() != c.Vocab {
		return nil, fmt.Errorf("%w: the tokenizer has %d pieces, the model %d", ErrConfig, tok.Size(), c.Vocab)
	}
	threads := opts.Threads
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	if target, ok, err := ParseQuantization(opts.Quantization); err != nil {
		return nil, err
	} else if ok {
		pool := tensor.NewPool(threads)
		err := QuantizeWeights(w, target, pool, opts.Progress)
		pool.Close()
		if err != nil {
			return nil, err
		}
	}
	n := max(opts.TensorParallel, 1)
	m := &Model{Config: c, Tokenizer: tok, Weights: w, reducer: SumReducer{}}
	plan, err := planShards(c, n)
	if err != nil {
		return nil, err
	}
	perShard := max(1, threads/n)
	for i, sp := range plan {
		s, err := buildShard(c, w, sp, i, n)
		if err != nil {
			m.Close()
			return nil, err
		}
		s.pack()
		s.pool = tensor.NewPool(perShard)
		m.shards = append(m.shards, s)
	}
	m.output = tensor.Pack(w.Output)
	// The packed copies replace the file's bytes for matrix products: let
	// the kernel drop those mapped pages, so resident memory stays near the
	// model's size instead of twice it.
	for _, s := range m.shards {
		for _, l := range s.layers {
			for _, mat := range l.matrices() {
				if mat.Packed() {
					releaseMapped(mat.Data, w.Mapped)
				}
			}
		}
	}
	if m.output.Packed() && w.Output != w.Embed { // the embedding's rows are still read
		releaseMapped(m.output.Data, w.Mapped)
	}
	if n == 1 {
		m.pool = m.shards[0].pool
	} else {
		m.pool = tensor.NewPool(threads)
	}
	return m, nil
}

// TensorParallel is the number of shards.
func (m *Model) TensorParallel() int { return len(m.shards) }

// Threads is the number of compute threads.
func (m *Model) Threads() int { return m.pool.Threads() }

// Close stops the model's threads and unmaps its file.
func (m *Model) Close() error {
	for _, s := range m.shards {
		if s.pool != nil && s.pool != m.pool {
			s.pool.Close()
		}
	}
	if m.pool != nil {
		m.pool.Close()
	}
	m.shards = nil
	if m.closer != nil {
		err := m.closer()
		m.closer = nil
		return err
	}
	return nil
}

type shardPlan struct {
	heads, headOffset, kvHeads, kvOffset, ffn, ffnOffset int
}

// planShards splits heads, kv heads and the experts' intermediate dimension
// over n shards. KV heads are split evenly when n divides them and
// replicated when they divide n (each shard then holds the one kv head its
// query heads read).
func planShards(c Config, n int) ([]shardPlan, error) {
	if n == 1 {
		return []shardPlan{{heads: c.Heads, kvHeads: c.KVHeads, ffn: c.FFN}}, nil
	}
	if c.Heads%n != 0 {
		return nil, fmt.Errorf("%w: %d attention heads cannot be split over %d tensor-parallel shards", ErrConfig, c.Heads, n)
	}
	if c.KVHeads%n != 0 && n%c.KVHeads != 0 {
		return nil, fmt.Errorf("%w: %d kv heads can be neither split nor replicated over %d shards", ErrConfig, c.KVHeads, n)
	}
	if c.FFN%n != 0 {
		return nil, fmt.Errorf("%w: expert size %d cannot be split over %d shards", ErrConfig, c.FFN, n)
	}
	plans := make([]shardPlan, n)
	hs := c.Heads / n
	for s := range plans {
		p := shardPlan{heads: hs, headOffset: s * hs, ffn: c.FFN / n, ffnOffset: s * c.FFN / n}
		if c.KVHeads%n == 0 {
			p.kvHeads, p.kvOffset = c.KVHeads/n, s*c.KVHeads/n
		} else {
			p.kvHeads, p.kvOffset = 1, p.headOffset/(c.Heads/c.KVHeads)
		}
		plans[s] = p
	}
	return plans, nil
}

func buildShard(c Config, w *Weights, p shardPlan, index, n int) (*shard, error) {
	s := &shard{index: index, heads: p.heads, headOffset: p.headOffset, kvHeads: p.kvHeads, kvOffset: p.kvOffset, ffn: p.ffn}
	hd := c.HeadDim
	for li, lw := range w.Layers {
		sl := shardLayer{}
		if n == 1 {
			sl = shardLayer{wq: lw.Wq, wk: lw.Wk, wv: lw.Wv, wo: lw.Wo, gate: lw.Gate, up: lw.Up, down: lw.Down}
			s.layers = append(s.layers, sl)
			continue
		}
		var err error
		sl.wq = lw.Wq.RowRange(p.headOffset*hd, (p.headOffset+p.heads)*hd)
		sl.wk = lw.Wk.RowRange(p.kvOffset*hd, (p.kvOffset+p.kvHeads)*hd)
		sl.wv = lw.Wv.RowRange(p.kvOffset*hd, (p.kvOffset+p.kvHeads)*hd)
		if sl.wo, err = lw.Wo.ColRange(p.headOffset*hd, (p.headOffset+p.heads)*hd); err != nil {
			return nil, fmt.Errorf("model: layer %d output projection for shard %d: %w", li, index, err)
		}
		for e := range lw.Gate {
			sl.gate = append(sl.gate, lw.Gate[e].RowRange(p.ffnOffset, p.ffnOffset+p.ffn))
			sl.up = append(sl.up, lw.Up[e].RowRange(p.ffnOffset, p.ffnOffset+p.ffn))
			d, err := lw.Down[e].ColRange(p.ffnOffset, p.ffnOffset+p.ffn)
			if err != nil {
				return nil, fmt.Errorf("model: layer %d expert %d down projection for shard %d: %w", li, e, index, err)
			}
			sl.down = append(sl.down, d)
		}
		s.layers = append(s.layers, sl)
	}
	return s, nil
}

// Reducer joins the shards' partial results. AllReduce leaves the
// element-wise sum of all parts in every part, as an NCCL all-reduce does;
// on the CPU the parts share memory and a plain sum does.
type Reducer interface {
	AllReduce(parts [][]float32)
}

// SumReducer is the in-memory Reducer.
type SumReducer struct{}

// AllReduce sums parts element-wise into every part, adding in shard order.
func (SumReducer) AllReduce(parts [][]float32) {
	if len(parts) < 2 {
		return
	}
	dst := parts[0]
	for _, p := range parts[1:] {
		for i, v := range p[:len(dst)] {
			dst[i] += v
		}
	}
	for _, p := range parts[1:] {
		copy(p, dst)
	}
}
