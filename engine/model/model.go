package model

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/moe-operator/moe-operator/engine/tensor"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// Model is a loaded Mixtral-architecture model, ready to run. It is safe
// for concurrent use only through separate States and Caches, and only one
// Forward may run at a time per Model (the shards' thread pools are shared).
type Model struct {
	Config    Config
	Tokenizer *tokenizer.Tokenizer

	embed      *tensor.Matrix // token embedding, row by row
	outNorm    []float32
	layers     []sharedLayer // per-layer tensors every shard reads
	weightType tensor.DType  // the experts' weight type
	tied       bool          // the output head is the embedding
	shards     []*shard
	pool       *tensor.Pool // all threads; used for work outside the shards
	reducer    Reducer
	devShards  int         // the accelerator's shards (a device group's ranks)
	dev        Accelerator // nil: the CPU runs the layers
	closer     func() error
}

// sharedLayer holds a layer's small tensors, replicated across shards.
type sharedLayer struct {
	attnNorm, ffnNorm []float32
	router            *tensor.Matrix // nil for a dense model
}

// shard is one tensor-parallel slice of the model: a subset of the
// attention heads and either a slice of every expert's intermediate
// dimension or, with expert parallelism, a subset of whole experts; with
// its own thread pool. With one shard, it is the whole model.
type shard struct {
	index      int
	heads      int // query heads in this shard
	headOffset int // global index of its first query head
	kvHeads    int
	kvOffset   int
	ffn        int // intermediate size of each of its experts
	layers     []shardLayer
	vocabLo    int            // first vocabulary row of its output-head slice
	output     *tensor.Matrix // rows [vocabLo, vocabLo+output.Rows) of the output head, packed
	pool       *tensor.Pool
}

// shardLayer holds the shard's matrices; gate[e] is nil for an expert the
// shard does not hold (expert parallelism).
type shardLayer struct {
	wq, wk, wv, wo *tensor.Matrix
	gate, up, down []*tensor.Matrix
}

// New assembles a model from its parts: it converts the weights as
// opts.Quantization asks, splits them into opts.TensorParallel shards and
// packs them for the kernels, one matrix at a time, so the memory peak
// stays near the final size plus one matrix. w is consumed: its matrices
// must not be used afterwards.
func New(c Config, w *Weights, tok *tokenizer.Tokenizer, opts LoadOptions) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if tok != nil && tok.Size() != c.Vocab {
		return nil, fmt.Errorf("%w: the tokenizer has %d pieces, the model %d", ErrConfig, tok.Size(), c.Vocab)
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
	threads := opts.Threads
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	m := &Model{Config: c, Tokenizer: tok, outNorm: w.OutNorm, reducer: SumReducer{}, pool: tensor.NewPool(threads)}
	b := builder{w: w, pool: m.pool, progress: opts.Progress}
	if convert {
		b.target = &target
	}
	if err := b.checkAll(); err != nil {
		m.Close()
		return nil, err
	}
	if opts.Device != nil {
		if err := m.buildDevice(&b, w, opts); err != nil {
			m.Close()
			return nil, err
		}
		*w = Weights{} // consumed
		debug.FreeOSMemory()
		return m, nil
	}
	for i, sp := range plan {
		m.shards = append(m.shards, &shard{index: i, heads: sp.heads, headOffset: sp.headOffset,
			kvHeads: sp.kvHeads, kvOffset: sp.kvOffset, ffn: sp.ffn, layers: make([]shardLayer, c.Layers)})
	}
	if err := b.buildShards(c, m.shards, plan); err != nil {
		m.Close()
		return nil, err
	}
	for l := range w.Layers {
		m.layers = append(m.layers, sharedLayer{attnNorm: w.Layers[l].AttnNorm, ffnNorm: w.Layers[l].FFNNorm, router: w.Layers[l].Router})
	}
	m.weightType = b.expertType
	tied := w.Output == w.Embed
	m.tied = tied
	if m.embed, err = b.convert(w.Embed); err != nil {
		m.Close()
		return nil, err
	}
	if m.embed != w.Embed {
		b.release(w.Embed)
	}
	// The output head is split by vocabulary rows: each shard computes the
	// logits of its slice (the GPU layout; on the CPU it spreads the work).
	out := m.embed
	if !tied {
		if out, err = b.convert(w.Output); err != nil {
			m.Close()
			return nil, err
		}
	}
	for i, s := range m.shards {
		s.vocabLo = i * c.Vocab / n
		s.output = tensor.Pack(out.RowRange(s.vocabLo, (i+1)*c.Vocab/n))
	}
	if !tied && !overlaps(m.shards[0].output.Data, w.Output.Data) {
		b.release(w.Output)
	}
	*w = Weights{} // consumed
	if n == 1 {
		m.shards[0].pool = m.pool
	} else {
		perShard := max(1, threads/n)
		for _, s := range m.shards {
			s.pool = tensor.NewPool(perShard)
		}
	}
	debug.FreeOSMemory() // return the load's transient buffers to the system now
	return m, nil
}

// WeightType is the type of the experts' weights, which dominate the
// model's size.
func (m *Model) WeightType() tensor.DType { return m.weightType }

// TensorParallel is the number of shards.
func (m *Model) TensorParallel() int { return max(len(m.shards), m.devShards, 1) }

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
	var devErr error
	if m.dev != nil {
		devErr = m.dev.Close()
		m.dev = nil
	}
	if m.closer != nil {
		err := m.closer()
		m.closer = nil
		return errors.Join(devErr, err)
	}
	return devErr
}

type shardPlan struct {
	heads, headOffset, kvHeads, kvOffset, ffn, ffnOffset int
	experts                                              func(e int) bool // the experts the shard holds
}

// planShards splits heads, kv heads and the experts' intermediate dimension
// over n shards. KV heads are split evenly when n divides them and
// replicated when they divide n (each shard then holds the one kv head its
// query heads read).
//
// The experts are split along their intermediate dimension (every shard
// holds 1/n of every expert: balanced whatever the routing) or, with
// expertParallel, placed whole, expert e on shard e mod n.
func planShards(c Config, n int, expertParallel bool) ([]shardPlan, error) {
	all := func(int) bool { return true }
	if n == 1 {
		return []shardPlan{{heads: c.Heads, kvHeads: c.KVHeads, ffn: c.FFN, experts: all}}, nil
	}
	if c.Heads%n != 0 {
		return nil, fmt.Errorf("%w: %d attention heads cannot be split over %d tensor-parallel shards", ErrConfig, c.Heads, n)
	}
	if c.KVHeads%n != 0 && n%c.KVHeads != 0 {
		return nil, fmt.Errorf("%w: %d kv heads can be neither split nor replicated over %d shards", ErrConfig, c.KVHeads, n)
	}
	if !expertParallel && c.FFN%n != 0 {
		return nil, fmt.Errorf("%w: expert size %d cannot be split over %d shards", ErrConfig, c.FFN, n)
	}
	plans := make([]shardPlan, n)
	hs := c.Heads / n
	for s := range plans {
		p := shardPlan{heads: hs, headOffset: s * hs, ffn: c.FFN / n, ffnOffset: s * c.FFN / n, experts: all}
		if expertParallel {
			p.ffn, p.ffnOffset = c.FFN, 0
			p.experts = func(e int) bool { return e%n == s }
		}
		if c.KVHeads%n == 0 {
			p.kvHeads, p.kvOffset = c.KVHeads/n, s*c.KVHeads/n
		} else {
			p.kvHeads, p.kvOffset = 1, p.headOffset/(c.Heads/c.KVHeads)
		}
		plans[s] = p
	}
	return plans, nil
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
