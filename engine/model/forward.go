package model

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/moe-operator/moe-operator/engine/tensor"
)

// Batch is a set of tokens to run through the model together. Token i is
// at position Pos[i] of sequence Seqs[i]; tokens of one sequence must be in
// increasing position order, and every earlier position of each sequence
// must already be in the cache (from an earlier Forward or from this batch).
// Logits are computed for the tokens whose Output is true.
type Batch struct {
	Tokens []int32
	Pos    []int
	Seqs   []*Seq
	Output []bool
}

// Add appends one token.
func (b *Batch) Add(token int32, pos int, s *Seq, output bool) {
	b.Tokens = append(b.Tokens, token)
	b.Pos = append(b.Pos, pos)
	b.Seqs = append(b.Seqs, s)
	b.Output = append(b.Output, output)
}

// Reset empties the batch, keeping its storage.
func (b *Batch) Reset() {
	b.Tokens, b.Pos, b.Seqs, b.Output = b.Tokens[:0], b.Pos[:0], b.Seqs[:0], b.Output[:0]
}

// Len is the number of tokens.
func (b *Batch) Len() int { return len(b.Tokens) }

// ErrBatch reports a batch that cannot run.
var ErrBatch = errors.New("model: invalid batch")

// State is the scratch memory of Forward for batches of up to MaxTokens
// tokens. A State belongs to one goroutine at a time.
type State struct {
	m         *Model
	MaxTokens int
	context   int // the longest sequence it can attend over

	x, xn   []float32 // [T][Dim] residual stream and its norm
	logits  []float32 // [outputs][Vocab]
	outRows []float32 // [outputs][Dim] normed rows that need logits
	router  []float32 // [T][Experts]
	route   []routed  // [T][TopK]
	acts    actsCache
	cos     []float32 // [T][HeadDim/2]
	sin     []float32
	shards  []*shardState
	parts   [][]float32 // each shard's part buffer
	views   [][]float32 // the parts cut to the batch, for the reducer
	dev     DeviceBatch // the batch as an accelerator takes it
	top     []Candidate
}

type routed struct {
	expert int32
	weight float32
}

type shardState struct {
	q, k, v, att []float32 // [T][heads*headDim] and [T][kvHeads*headDim]
	part         []float32 // [T][Dim] this shard's partial output
	actsAtt      tensor.Acts
	acts         actsCache
	scores       [][]float32 // per worker, [context]
	expertTokens [][]int32   // per expert: indices into the batch
	expertSlot   [][]int32   // per expert: which of the token's TopK slots
	xe, ye       []float32   // [T][Dim] gathered rows for one expert and its output
	g, u         []float32   // [T][ffn]
	actsE, actsH tensor.Acts
	logits       []float32 // [outputs][its vocabulary slice]
}

// grow returns (*buf)[:n], reallocating when it is too small.
func grow(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	return (*buf)[:n]
}

// actsCache converts one activation matrix to each type its consumers need,
// once.
type actsCache struct {
	acts  [tensor.BF16 + 1]tensor.Acts
	valid [tensor.BF16 + 1]bool
}

func (c *actsCache) get(t tensor.DType, x []float32, rows, cols int) *tensor.Acts {
	if !c.valid[t] {
		c.acts[t].Set(t, x, rows, cols)
		c.valid[t] = true
	}
	return &c.acts[t]
}

func (c *actsCache) reset() { clear(c.valid[:]) }

// NewState allocates scratch for batches of up to maxTokens tokens whose
// sequences are at most context positions long.
func (m *Model) NewState(maxTokens, context int) *State {
	c := m.Config
	maxTokens = max(maxTokens, 1)
	st := &State{
		m: m, MaxTokens: maxTokens, context: max(context, 1),
		x: make([]float32, maxTokens*c.Dim), xn: make([]float32, maxTokens*c.Dim),
		router: make([]float32, maxTokens*c.Experts), route: make([]routed, maxTokens*c.TopK),
		cos: make([]float32, maxTokens*c.HeadDim/2), sin: make([]float32, maxTokens*c.HeadDim/2),
	}
	for _, s := range m.shards {
		ss := &shardState{
			q: make([]float32, maxTokens*s.heads*c.HeadDim), att: make([]float32, maxTokens*s.heads*c.HeadDim),
			k: make([]float32, maxTokens*s.kvHeads*c.HeadDim), v: make([]float32, maxTokens*s.kvHeads*c.HeadDim),
			part: make([]float32, maxTokens*c.Dim),
			xe:   make([]float32, maxTokens*c.Dim), ye: make([]float32, maxTokens*c.Dim),
			g: make([]float32, maxTokens*s.ffn), u: make([]float32, maxTokens*s.ffn),
			expertTokens: make([][]int32, c.Experts), expertSlot: make([][]int32, c.Experts),
		}
		for w := 0; w < s.pool.Threads(); w++ {
			ss.scores = append(ss.scores, make([]float32, max(context, 1)))
		}
		st.shards = append(st.shards, ss)
		st.parts = append(st.parts, ss.part)
		st.views = append(st.views, nil)
	}
	return st
}

// Forward runs batch b through the model, reading and extending the
// sequences' keys and values in cache c. It returns the logits of the
// tokens marked Output, one row of Vocab values each, in batch order; the
// slice is owned by st and valid until its next use.
func (m *Model) Forward(st *State, c *Cache, b *Batch) ([]float32, error) {
	cfg := m.Config
	T := b.Len()
	if err := m.checkBatch(st, c, b); err != nil {
		return nil, err
	}
	if m.dev != nil {
		logits, _, err := m.forwardDevice(st, c, b, 0)
		return logits, err
	}
	D := cfg.Dim
	for i, tok := range b.Tokens {
		tensor.Dequantize(st.x[i*D:(i+1)*D], m.embed.Row(int(tok)), m.embed.Type, D)
		ropeTable(st.cos[i*cfg.HeadDim/2:(i+1)*cfg.HeadDim/2], st.sin[i*cfg.HeadDim/2:(i+1)*cfg.HeadDim/2], b.Pos[i], cfg.RopeTheta, cfg.HeadDim)
	}
	x, xn := st.x[:T*D], st.xn[:T*D]
	for l := range cfg.Layers {
		lw := &m.layers[l]
		for i := 0; i < T; i++ {
			rmsNorm(xn[i*D:(i+1)*D], x[i*D:(i+1)*D], lw.attnNorm, cfg.NormEps)
		}
		m.onShards(st, func(s *shard, ss *shardState) { m.attention(s, ss, st, c, b, l) })
		m.addParts(st, x)

		for i := 0; i < T; i++ {
			rmsNorm(xn[i*D:(i+1)*D], x[i*D:(i+1)*D], lw.ffnNorm, cfg.NormEps)
		}
		m.routeTokens(st, lw, T)
		m.onShards(st, func(s *shard, ss *shardState) { m.experts(s, ss, st, l, T) })
		m.addParts(st, x)
	}

	// Final norm and output head, only for the tokens that need logits.
	nOut := 0
	for i := 0; i < T; i++ {
		if b.Output[i] {
			nOut++
		}
	}
	if cap(st.outRows) < nOut*D {
		st.outRows = make([]float32, nOut*D)
	}
	if cap(st.logits) < nOut*cfg.Vocab {
		st.logits = make([]float32, nOut*cfg.Vocab)
	}
	outRows, logits := st.outRows[:nOut*D], st.logits[:nOut*cfg.Vocab]
	j := 0
	for i := 0; i < T; i++ {
		if b.Output[i] {
			rmsNorm(outRows[j*D:(j+1)*D], x[i*D:(i+1)*D], m.outNorm, cfg.NormEps)
			j++
		}
	}
	if nOut > 0 {
		m.onShards(st, func(s *shard, ss *shardState) {
			ss.acts.reset()
			a := ss.acts.get(s.output.Type.VecDotType(), outRows, nOut, D)
			if len(m.shards) == 1 {
				tensor.MatMul(s.pool, logits, s.output, a)
				return
			}
			rows := s.output.Rows
			part := grow(&ss.logits, nOut*rows)
			tensor.MatMul(s.pool, part, s.output, a)
			for j := 0; j < nOut; j++ {
				copy(logits[j*cfg.Vocab+s.vocabLo:j*cfg.Vocab+s.vocabLo+rows], part[j*rows:(j+1)*rows])
			}
		})
	}
	return logits, nil
}

// Candidate is one of a token's most likely next tokens.
type Candidate struct {
	Token int32
	Logit float32
}

// ForwardTop is Forward returning, instead of the logits, the k most
// likely tokens of every output (k at a time, best first, ties to the
// lower id), for samplers that need no more (greedy, top-k). On an
// accelerator the selection runs on the device, which then copies back
// k pairs per token instead of a row of Vocab logits. The slice is owned
// by st.
func (m *Model) ForwardTop(st *State, c *Cache, b *Batch, k int) ([]Candidate, error) {
	if k < 1 || k > MaxDeviceTopK || k > m.Config.Vocab {
		return nil, fmt.Errorf("%w: %d candidates asked for, want 1 to %d", ErrBatch, k, min(MaxDeviceTopK, m.Config.Vocab))
	}
	if m.dev != nil {
		if err := m.checkBatch(st, c, b); err != nil {
			return nil, err
		}
		_, top, err := m.forwardDevice(st, c, b, k)
		return top, err
	}
	logits, err := m.Forward(st, c, b)
	if err != nil {
		return nil, err
	}
	V := m.Config.Vocab
	st.top = st.top[:0]
	for j := 0; j < len(logits)/V; j++ {
		st.top = appendTop(st.top, logits[j*V:(j+1)*V], k)
	}
	return st.top, nil
}

// appendTop appends the k best of row (ties to the lower index), best first.
func appendTop(dst []Candidate, row []float32, k int) []Candidate {
	start := len(dst)
	for i, v := range row {
		n := len(dst) - start
		if n == k && !(v > dst[len(dst)-1].Logit) {
			continue
		}
		if n < k {
			dst = append(dst, Candidate{})
			n++
		}
		// insert at the first position with a smaller logit (an equal
		// logit came from a lower index and stays first)
		j := start + n - 1
		for j > start && v > dst[j-1].Logit {
			dst[j] = dst[j-1]
			j--
		}
		dst[j] = Candidate{int32(i), v}
	}
	return dst
}

func (m *Model) checkBatch(st *State, c *Cache, b *Batch) error {
	T := b.Len()
	if T == 0 {
		return fmt.Errorf("%w: no tokens", ErrBatch)
	}
	if T > st.MaxTokens {
		return fmt.Errorf("%w: %d tokens, the state holds %d", ErrBatch, T, st.MaxTokens)
	}
	if len(b.Pos) != T || len(b.Seqs) != T || len(b.Output) != T {
		return fmt.Errorf("%w: %d tokens but %d positions, %d sequences, %d output flags", ErrBatch, T, len(b.Pos), len(b.Seqs), len(b.Output))
	}
	for i, tok := range b.Tokens {
		if tok < 0 || int(tok) >= m.Config.Vocab {
			return fmt.Errorf("%w: token %d at batch index %d is outside the vocabulary of %d", ErrBatch, tok, i, m.Config.Vocab)
		}
		p := b.Pos[i]
		if p < 0 || p >= m.Config.Context {
			return fmt.Errorf("%w: position %d is outside the context of %d tokens", ErrBatch, p, m.Config.Context)
		}
		if p >= c.Capacity(b.Seqs[i]) {
			return fmt.Errorf("%w: position %d is beyond the %d positions reserved for its sequence", ErrBatch, p, c.Capacity(b.Seqs[i]))
		}
		if p >= st.context {
			return fmt.Errorf("%w: position %d is beyond the state's context of %d", ErrBatch, p, st.context)
		}
	}
	return nil
}

// onShards runs fn for every shard, concurrently when there are several.
func (m *Model) onShards(st *State, fn func(*shard, *shardState)) {
	if len(m.shards) == 1 {
		fn(m.shards[0], st.shards[0])
		return
	}
	var wg sync.WaitGroup
	for i, s := range m.shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(s, st.shards[i])
		}()
	}
	wg.Wait()
}

// addParts joins the shards' partial outputs and adds them to the residual.
func (m *Model) addParts(st *State, x []float32) {
	if len(st.parts) > 1 {
		for i, p := range st.parts {
			st.views[i] = p[:len(x)]
		}
		m.reducer.AllReduce(st.views)
	}
	for i, v := range st.parts[0][:len(x)] {
		x[i] += v
	}
}

// attention computes this shard's heads for the batch and leaves its share
// of the output projection in ss.part.
func (m *Model) attention(s *shard, ss *shardState, st *State, c *Cache, b *Batch, l int) {
	cfg := m.Config
	T, D, hd := b.Len(), cfg.Dim, cfg.HeadDim
	sl := &s.layers[l]
	qdim, kvdim := s.heads*hd, s.kvHeads*hd
	q, k, v := ss.q[:T*qdim], ss.k[:T*kvdim], ss.v[:T*kvdim]
	xn := st.xn[:T*D]

	ss.acts.reset()
	tensor.MatMul(s.pool, q, sl.wq, ss.acts.get(sl.wq.Type.VecDotType(), xn, T, D))
	tensor.MatMul(s.pool, k, sl.wk, ss.acts.get(sl.wk.Type.VecDotType(), xn, T, D))
	tensor.MatMul(s.pool, v, sl.wv, ss.acts.get(sl.wv.Type.VecDotType(), xn, T, D))

	half := hd / 2
	kc, vc := c.k[s.index][l], c.v[s.index][l]
	for i := 0; i < T; i++ {
		cos, sin := st.cos[i*half:(i+1)*half], st.sin[i*half:(i+1)*half]
		applyRope(q[i*qdim:(i+1)*qdim], s.heads, hd, cos, sin, cfg.Rope)
		applyRope(k[i*kvdim:(i+1)*kvdim], s.kvHeads, hd, cos, sin, cfg.Rope)
		row := c.row(b.Seqs[i], b.Pos[i])
		copy(kc[row*kvdim:(row+1)*kvdim], k[i*kvdim:(i+1)*kvdim])
		copy(vc[row*kvdim:(row+1)*kvdim], v[i*kvdim:(i+1)*kvdim])
	}

	// One work item per (token, head).
	att := ss.att[:T*qdim]
	scale := float32(1 / math.Sqrt(float64(hd)))
	group := cfg.Heads / cfg.KVHeads // query heads per kv head
	s.pool.ForWorker(T*s.heads, 1, func(worker, lo, hi int) {
		scores := ss.scores[worker]
		for item := lo; item < hi; item++ {
			i, h := item/s.heads, item%s.heads
			kvh := (s.headOffset+h)/group - s.kvOffset
			qh := q[i*qdim+h*hd : i*qdim+(h+1)*hd]
			out := att[i*qdim+h*hd : i*qdim+(h+1)*hd]
			seq, pos := b.Seqs[i], b.Pos[i]
			start := 0
			if w := cfg.SlidingWindow; w > 0 && pos-w+1 > 0 {
				start = pos - w + 1
			}
			sc := scores[:pos+1-start]
			for j := start; j <= pos; j++ {
				r := c.row(seq, j)
				sc[j-start] = dotF32(qh, kc[r*kvdim+kvh*hd:r*kvdim+(kvh+1)*hd]) * scale
			}
			softmax(sc)
			clear(out)
			for j := start; j <= pos; j++ {
				r := c.row(seq, j)
				axpy(out, sc[j-start], vc[r*kvdim+kvh*hd:r*kvdim+(kvh+1)*hd])
			}
		}
	})

	ss.actsAtt.Set(sl.wo.Type.VecDotType(), att, T, qdim)
	tensor.MatMul(s.pool, ss.part[:T*D], sl.wo, &ss.actsAtt)
}

// routeTokens picks each token's top-k experts and their renormalised
// weights from the router's softmax (computed once, shared by the shards).
func (m *Model) routeTokens(st *State, lw *sharedLayer, T int) {
	cfg := m.Config
	E, K := cfg.Experts, cfg.TopK
	if lw.router == nil { // dense: the one expert with weight 1
		for i := 0; i < T; i++ {
			st.route[i] = routed{0, 1}
		}
		return
	}
	logits := st.router[:T*E]
	st.acts.reset()
	tensor.MatMul(m.pool, logits, lw.router, st.acts.get(lw.router.Type.VecDotType(), st.xn[:T*cfg.Dim], T, cfg.Dim))
	for i := 0; i < T; i++ {
		p := logits[i*E : (i+1)*E]
		softmax(p)
		r := st.route[i*K : (i+1)*K]
		var sum float32
		for k := range r {
			// k-th largest probability; ties go to the lower expert index.
			best := -1
			for e, pe := range p {
				if !chosen(r[:k], e) && (best < 0 || pe > p[best]) {
					best = e
				}
			}
			r[k] = routed{int32(best), p[best]}
			sum += p[best]
		}
		sum = max(sum, 6.103515625e-5) // llama.cpp clamps to the smallest normal f16
		for k := range r {
			r[k].weight /= sum
		}
	}
}

func chosen(r []routed, e int) bool {
	for _, x := range r {
		if int(x.expert) == e {
			return true
		}
	}
	return false
}

// experts runs this shard's slice of every selected expert, grouping the
// batch's tokens by expert so each expert's weights are read once per
// batch, and leaves the weighted sum in ss.part.
func (m *Model) experts(s *shard, ss *shardState, st *State, l, T int) {
	cfg := m.Config
	D, K, F := cfg.Dim, cfg.TopK, s.ffn
	sl := &s.layers[l]
	for e := range ss.expertTokens {
		ss.expertTokens[e] = ss.expertTokens[e][:0]
		ss.expertSlot[e] = ss.expertSlot[e][:0]
	}
	for i := 0; i < T; i++ {
		for k := 0; k < K; k++ {
			e := st.route[i*K+k].expert
			ss.expertTokens[e] = append(ss.expertTokens[e], int32(i))
			ss.expertSlot[e] = append(ss.expertSlot[e], int32(k))
		}
	}
	part := ss.part[:T*D]
	clear(part)
	xn := st.xn[:T*D]
	// Expert order is fixed (by index), so a token's sum does not depend on
	// which other tokens share the batch.
	for e, toks := range ss.expertTokens {
		n := len(toks)
		if n == 0 || sl.gate[e] == nil { // unused, or held by another shard
			continue
		}
		xe := ss.xe[:n*D]
		for j, i := range toks {
			copy(xe[j*D:(j+1)*D], xn[int(i)*D:int(i+1)*D])
		}
		ss.actsE.Set(sl.gate[e].Type.VecDotType(), xe, n, D)
		g, u := ss.g[:n*F], ss.u[:n*F]
		tensor.MatMul(s.pool, g, sl.gate[e], &ss.actsE)
		if sl.up[e].Type.VecDotType() != sl.gate[e].Type.VecDotType() {
			ss.actsE.Set(sl.up[e].Type.VecDotType(), xe, n, D)
		}
		tensor.MatMul(s.pool, u, sl.up[e], &ss.actsE)
		tensor.SwiGLU(g, u)
		ss.actsH.Set(sl.down[e].Type.VecDotType(), g, n, F)
		ye := ss.ye[:n*D]
		tensor.MatMul(s.pool, ye, sl.down[e], &ss.actsH)
		for j, i := range toks {
			w := st.route[int(i)*K+int(ss.expertSlot[e][j])].weight
			axpy(part[int(i)*D:int(i+1)*D], w, ye[j*D:(j+1)*D])
		}
	}
}
