package gpu

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"unsafe"

	"github.com/moe-operator/moe-operator/engine/gpu/vk"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

// Limits of the shaders (see shaders/*.comp).
const (
	maxHeadDim = 256 // attention: four head dims per invocation
	maxTopK    = 8   // combine sorts a token's slots in registers
	maxExperts = 64  // moe_route keeps the probabilities in registers
)

// weight is one matrix on the device, bound in row chunks that each fit
// the device's largest storage binding.
type weight struct {
	typ        tensor.DType
	rows, cols int
	chunks     []chunk
}

type chunk struct {
	buf      *Buffer
	lo, rows int
}

type layer struct {
	attnNorm, ffnNorm *Buffer
	wq, wk, wv, wo    *weight
	router            *weight // nil: dense
	gate, up, down    []*weight
}

// Backend runs a model's layers on a Device. It implements
// model.Accelerator.
type Backend struct {
	d       *Device
	c       model.Config
	layers  []layer
	outNorm *Buffer
	output  *weight
	s       scratch
	caches  map[*Cache]bool // live, closed with the backend
	profile map[string]*Timing
	cands   []model.Candidate
	gpuTime float64 // seconds of device time of the last Forward (0: no timestamps)
	// rank of ranks: a Group's member holds the experts e with
	// e mod ranks == rank (ranks 0: alone, every expert).
	rank, ranks int
}

// NewBackend prepares d for a model of config c whose converted weights
// take weightBytes. It refuses shapes the shaders do not handle and a
// model that does not fit the device.
func NewBackend(d *Device, c model.Config, weightBytes int64) (*Backend, error) {
	switch {
	case c.HeadDim > maxHeadDim || c.HeadDim%2 != 0:
		return nil, fmt.Errorf("gpu: head dimension %d: the Vulkan backend handles even head dimensions up to %d", c.HeadDim, maxHeadDim)
	case c.TopK > maxTopK:
		return nil, fmt.Errorf("gpu: %d experts per token: the Vulkan backend handles up to %d", c.TopK, maxTopK)
	case c.Experts > maxExperts:
		return nil, fmt.Errorf("gpu: %d experts: the Vulkan backend handles up to %d", c.Experts, maxExperts)
	}
	if uint64(weightBytes) > d.limit {
		return nil, fmt.Errorf("%w: the model's weights take %s once converted, more than the %s the backend may use on %s; use a smaller --quantization (int8, int4), more devices, or --device cpu",
			ErrDeviceMemory, human(uint64(weightBytes)), human(d.limit), d.Info.Name)
	}
	return &Backend{d: d, c: c, layers: make([]layer, c.Layers), caches: map[*Cache]bool{}}, nil
}

// Factory returns the model.AcceleratorFactory that opens device index
// (-1: the best) with opts, for model.LoadOptions.Device.
func Factory(index int, allowCPU bool, opts Options) model.AcceleratorFactory {
	return func(c model.Config, weightBytes int64) (model.Accelerator, error) {
		d, err := Open(index, allowCPU, opts)
		if err != nil {
			return nil, err
		}
		b, err := NewBackend(d, c, weightBytes)
		if err != nil {
			d.Close()
			return nil, err
		}
		return b, nil
	}
}

// Device is the backend's device.
func (b *Backend) Device() *Device { return b.d }

// Name implements model.Accelerator.
func (b *Backend) Name() string { return fmt.Sprintf("vulkan:%d %s", b.d.Info.Index, b.d.Info.Name) }

// LastGPUSeconds is the device time the last Forward took, from timestamp
// queries (0 when the device has none).
func (b *Backend) LastGPUSeconds() float64 { return b.gpuTime }

// Upload implements model.Accelerator.
func (b *Backend) Upload(ref model.TensorRef, m *tensor.Matrix) error {
	switch m.Type {
	case tensor.F32, tensor.F16, tensor.BF16, tensor.Q8_0, tensor.Q4_0:
	default:
		return fmt.Errorf("gpu: the Vulkan backend has no kernel for %s weights; load with --quantization int8 or int4 (from a higher-precision file) or use --device cpu", m.Type)
	}
	if m.Packed() {
		return fmt.Errorf("gpu: %s is packed for the CPU kernels", ref)
	}
	w := &weight{typ: m.Type, rows: m.Rows, cols: m.Cols}
	rb := uint64(m.RowBytes())
	per := max(1, int(b.d.info.MaxStorageBuffer/rb))
	for lo := 0; lo < m.Rows; lo += per {
		n := min(per, m.Rows-lo)
		buf, err := b.d.NewBuffer(uint64(n)*rb, false)
		if err != nil {
			w.close()
			return err
		}
		w.chunks = append(w.chunks, chunk{buf: buf, lo: lo, rows: n})
		if err := b.d.Write(buf, 0, m.Data[uint64(lo)*rb:uint64(lo+n)*rb]); err != nil {
			w.close()
			return err
		}
	}
	l := ref.Layer
	switch ref.Kind {
	case model.TensorWq:
		b.layers[l].wq = w
	case model.TensorWk:
		b.layers[l].wk = w
	case model.TensorWv:
		b.layers[l].wv = w
	case model.TensorWo:
		b.layers[l].wo = w
	case model.TensorRouter:
		b.layers[l].router = w
	case model.TensorGate, model.TensorUp, model.TensorDown:
		ly := &b.layers[l]
		if ly.gate == nil {
			ly.gate, ly.up, ly.down = make([]*weight, b.c.Experts), make([]*weight, b.c.Experts), make([]*weight, b.c.Experts)
		}
		[]([]*weight){ly.gate, ly.up, ly.down}[ref.Kind-model.TensorGate][ref.Expert] = w
	case model.TensorOutput:
		b.output = w
	default:
		w.close()
		return fmt.Errorf("gpu: %s is not a matrix", ref)
	}
	return nil
}

func (w *weight) close() {
	if w == nil {
		return
	}
	for _, c := range w.chunks {
		c.buf.Close()
	}
	w.chunks = nil
}

// UploadVector implements model.Accelerator.
func (b *Backend) UploadVector(ref model.TensorRef, v []float32) error {
	buf, err := b.d.NewBuffer(uint64(4*len(v)), false)
	if err != nil {
		return err
	}
	if err := b.d.Write(buf, 0, floatBytes(v)); err != nil {
		buf.Close()
		return err
	}
	switch ref.Kind {
	case model.TensorAttnNorm:
		b.layers[ref.Layer].attnNorm = buf
	case model.TensorFFNNorm:
		b.layers[ref.Layer].ffnNorm = buf
	case model.TensorOutNorm:
		b.outNorm = buf
	default:
		buf.Close()
		return fmt.Errorf("gpu: %s is not a vector", ref)
	}
	return nil
}

func floatBytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

// Cache is the KV cache on the device: one K and one V buffer per layer.
type Cache struct {
	d    *Device
	b    *Backend
	rows int
	k, v []*Buffer
}

// liveOn reports whether c is an open cache of b.
func (c *Cache) liveOn(b *Backend) bool { return c.k != nil && c.b == b }

// NewCache implements model.Accelerator.
func (b *Backend) NewCache(rows int) (model.DeviceCache, error) {
	kvDim := uint64(b.c.KVHeads * b.c.HeadDim)
	size := uint64(rows) * kvDim * 4
	if size > b.d.info.MaxStorageBuffer {
		return nil, fmt.Errorf("%w: one layer's keys take %s, beyond the device's largest storage binding of %s; use at most %d tokens",
			ErrDeviceMemory, human(size), human(b.d.info.MaxStorageBuffer), b.d.info.MaxStorageBuffer/(kvDim*4))
	}
	c := &Cache{d: b.d, b: b, rows: rows}
	for range b.c.Layers {
		k, err := b.d.NewBuffer(size, false)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.k = append(c.k, k)
		v, err := b.d.NewBuffer(size, false)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.v = append(c.v, v)
	}
	b.d.mu.Lock()
	b.caches[c] = true
	b.d.mu.Unlock()
	return c, nil
}

// Reserve implements model.Accelerator: it sizes the scratch for the
// largest batch, with a block table of a full context per token.
func (b *Backend) Reserve(tokens, outputs int) error {
	b.d.mu.Lock()
	defer b.d.mu.Unlock()
	return b.ensure(tokens, outputs, 0)
}

// Memory implements model.Accelerator.
func (b *Backend) Memory() model.DeviceMemory {
	b.d.mu.Lock()
	defer b.d.mu.Unlock()
	row := uint64(b.c.KVHeads*b.c.HeadDim) * 4
	return model.DeviceMemory{Budget: int64(b.d.limit), Used: int64(b.d.used), MaxCacheRows: int(b.d.info.MaxStorageBuffer / row)}
}

// Bytes implements model.DeviceCache.
func (c *Cache) Bytes() int64 {
	var n int64
	for i := range c.k {
		n += int64(c.k[i].size)
	}
	for i := range c.v {
		n += int64(c.v[i].size)
	}
	return n
}

// Close implements model.DeviceCache; it may be called more than once.
func (c *Cache) Close() {
	c.d.mu.Lock()
	defer c.d.mu.Unlock()
	c.close()
}

func (c *Cache) close() {
	if c.k == nil && c.v == nil {
		return
	}
	delete(c.b.caches, c)
	c.d.forget(append(append([]*Buffer(nil), c.k...), c.v...)...)
	for _, b := range c.k {
		b.Close()
	}
	for _, b := range c.v {
		b.Close()
	}
	c.k, c.v = nil, nil
}

// Close implements model.Accelerator.
func (b *Backend) Close() error {
	b.d.dev.WaitIdle()
	b.d.mu.Lock()
	for c := range b.caches {
		c.close()
	}
	b.d.mu.Unlock()
	for _, l := range b.layers {
		l.attnNorm.Close()
		l.ffnNorm.Close()
		for _, w := range []*weight{l.wq, l.wk, l.wv, l.wo, l.router} {
			w.close()
		}
		for e := range l.gate {
			l.gate[e].close()
			l.up[e].close()
			l.down[e].close()
		}
	}
	b.outNorm.Close()
	b.output.close()
	b.s.close()
	b.d.Close()
	return nil
}

// scratch holds a Forward's intermediate buffers, sized for up to tokens
// tokens (grown as batches grow).
type scratch struct {
	tokens, outputs, meta int
	xin, cos, sin, meta_  *Buffer // host-visible inputs
	logits, top           *Buffer // host-visible outputs: logits or top-k pairs
	logitsDev             *Buffer
	x, xn, q, k, v, att   *Buffer
	xq, xd                *Buffer // Q8_0 activations: quants (4 per uint) and scales
	router, route         *Buffer
	g, u, ye, outRows     *Buffer
	delta, xout           *Buffer // a Group's ranks: the experts' part, and the part for the host
}

func (s *scratch) all() []*Buffer {
	return []*Buffer{s.xin, s.cos, s.sin, s.meta_, s.logits, s.top, s.logitsDev, s.x, s.xn, s.q, s.k, s.v, s.att, s.xq, s.xd, s.router, s.route, s.g, s.u, s.ye, s.outRows, s.delta, s.xout}
}

func (s *scratch) close() {
	for _, b := range s.all() {
		b.Close()
	}
	*s = scratch{}
}

// ensure sizes the scratch for T tokens, nOut outputs and a meta area of
// metaInts ints. The caller holds d.mu.
func (b *Backend) ensure(T, nOut, metaInts int) error {
	s := &b.s
	if T <= s.tokens && nOut <= s.outputs && metaInts <= s.meta {
		return nil
	}
	d := b.d
	d.forget(s.all()...)
	s.close()
	c := b.c
	T = max(T, 16)
	nOut = max(nOut, T)
	metaInts = max(metaInts, 4*T+T*((c.Context+15)/16))
	S := T * c.TopK
	qdim, kvdim := c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	actMax := max(T*c.Dim, T*qdim, S*c.FFN)
	f := func(n int) uint64 { return uint64(4 * n) }
	type alloc struct {
		dst  **Buffer
		size uint64
		host bool
	}
	allocs := []alloc{
		{&s.xin, f(T * c.Dim), true}, {&s.cos, f(T * c.HeadDim / 2), true}, {&s.sin, f(T * c.HeadDim / 2), true},
		{&s.meta_, f(metaInts), true}, {&s.logits, f(nOut * c.Vocab), true}, {&s.top, f(2 * nOut * model.MaxDeviceTopK), true},
		{&s.logitsDev, f(nOut * c.Vocab), false},
		{&s.x, f(T * c.Dim), false}, {&s.xn, f(T * c.Dim), false}, {&s.q, f(T * qdim), false}, {&s.att, f(T * qdim), false},
		{&s.k, f(T * kvdim), false}, {&s.v, f(T * kvdim), false},
		{&s.xq, uint64(actMax), false}, {&s.xd, f(actMax / 32), false},
		{&s.router, f(T * c.Experts), false}, {&s.route, f(8*c.Experts + 5*S), false},
		{&s.g, f(S * c.FFN), false}, {&s.u, f(S * c.FFN), false}, {&s.ye, f(S * c.Dim), false}, {&s.outRows, f(nOut * c.Dim), false},
	}
	if b.ranks > 1 {
		allocs = append(allocs, alloc{&s.delta, f(T * c.Dim), false}, alloc{&s.xout, f(T * c.Dim), true})
	}
	for _, a := range allocs {
		buf, err := d.NewBuffer(a.size, a.host)
		if err != nil {
			s.close()
			return fmt.Errorf("scratch for %d tokens: %w", T, err)
		}
		*a.dst = buf
	}
	s.tokens, s.outputs, s.meta = T, nOut, metaInts
	return nil
}

// Forward implements model.Accelerator: the whole forward pass is one
// command buffer, one submission and one wait.
func (b *Backend) Forward(in *model.DeviceBatch) ([]float32, []model.Candidate, error) {
	cache, ok := in.Cache.(*Cache)
	if !ok || !cache.liveOn(b) {
		return nil, nil, fmt.Errorf("gpu: the batch's cache is not a live cache of this device")
	}
	d := b.d
	d.mu.Lock()
	defer d.mu.Unlock()
	r, err := b.prepare(in, cache)
	if err != nil {
		return nil, nil, err
	}
	err = d.submit(func(cmd vk.CommandBuffer) {
		r.cmd = cmd
		if d.timers != 0 {
			cmd.ResetQueries(d.timers, 0, maxTimers)
			cmd.WriteTimestamp(vk.PipelineStageTopOfPipe, d.timers, 0)
		}
		r.loadX(b.s.xin)
		for l := range b.layers {
			r.layer(l)
		}
		r.head()
		if d.timers != 0 {
			cmd.WriteTimestamp(vk.PipelineStageBottomOfPipe, d.timers, 1)
		}
	})
	if err == nil {
		err = r.err
	}
	if err != nil {
		return nil, nil, err
	}
	b.readTimers(r.names)
	return b.results(in)
}

// prepare checks in, sizes the scratch for it and writes its inputs (the
// embeddings, rotary angles and block tables) to the host-visible buffers;
// it returns the recorder of its dispatches. The caller holds d.mu.
func (b *Backend) prepare(in *model.DeviceBatch, cache *Cache) (*recorder, error) {
	T, nOut := len(in.Pos), len(in.Outputs)
	if in.TopK < 0 || in.TopK > model.MaxDeviceTopK {
		return nil, fmt.Errorf("gpu: top %d: the device selects at most %d", in.TopK, model.MaxDeviceTopK)
	}
	metaInts := 4*T + len(in.Blocks)
	if err := b.ensure(T, nOut, metaInts); err != nil {
		return nil, err
	}
	s := &b.s
	copy(s.xin.Floats(), in.X)
	copy(s.cos.Floats(), in.Cos)
	copy(s.sin.Floats(), in.Sin)
	meta := s.meta_.Ints()
	r := &recorder{d: b.d, b: b, tokens: T, outputs: nOut, in: in, cache: cache,
		posOff: 0, rowsOff: T, blockOffOff: 2 * T, outOff: 3 * T, blocksOff: 3*T + nOut}
	copy(meta[r.posOff:], in.Pos)
	copy(meta[r.rowsOff:], in.Rows)
	copy(meta[r.blockOffOff:], in.BlockOff)
	copy(meta[r.outOff:], in.Outputs)
	copy(meta[r.blocksOff:], in.Blocks)
	return r, nil
}

// results reads the logits or the top-k pairs of the last head.
func (b *Backend) results(in *model.DeviceBatch) ([]float32, []model.Candidate, error) {
	s := &b.s
	nOut := len(in.Outputs)
	if in.TopK > 0 {
		pairs := s.top.Ints()[:2*nOut*in.TopK]
		b.cands = b.cands[:0]
		for i := 0; i < len(pairs); i += 2 {
			b.cands = append(b.cands, model.Candidate{Token: pairs[i], Logit: math.Float32frombits(uint32(pairs[i+1]))})
		}
		return nil, b.cands, nil
	}
	return s.logits.Floats()[:nOut*b.c.Vocab], nil, nil
}

// loadX copies the residual stream from src (host-visible) into x.
func (r *recorder) loadX(src *Buffer) {
	T, D := r.tokens, r.b.c.Dim
	r.cmd.CopyBuffer(src.buf, r.b.s.x.buf, 0, 0, uint64(4*T*D))
	r.cmd.Barrier(vk.PipelineStageTransfer, vk.PipelineStageCompute, vk.AccessTransferWrite, vk.AccessShaderRead|vk.AccessShaderWrite)
}

// layer records layer l. A backend that is one rank of a Group runs only
// its own experts: the slots of the others read zeros, and a rank other
// than the first adds its experts' sum into delta instead of the residual
// (the group adds the ranks' parts on the host).
func (r *recorder) layer(l int) {
	b, c, s, cmd, cache := r.b, r.b.c, &r.b.s, r.cmd, r.cache
	T, D := r.tokens, c.Dim
	qdim := c.Heads * c.HeadDim
	S := T * c.TopK
	ly := &b.layers[l]
	r.rmsNorm(s.x, ly.attnNorm, s.xn, s.meta_, T, D, c.NormEps, false, 0)
	r.barrier()
	xn := r.act(s.xn, T, D)
	r.matmul(ly.wq, xn, s.q, T, 0)
	r.matmul(ly.wk, xn, s.k, T, 0)
	r.matmul(ly.wv, xn, s.v, T, 0)
	r.barrier()
	adjacent := uint32(0)
	if c.Rope == model.RopeAdjacent {
		adjacent = 1
	}
	r.dispatch("rope_store", [3]uint32{uint32(T), 1, 1}, []*Buffer{s.q, s.k, s.v, cache.k[l], cache.v[l], s.cos, s.sin, s.meta_},
		uint32(c.Heads), uint32(c.KVHeads), uint32(c.HeadDim), adjacent, uint32(r.rowsOff))
	r.barrier()
	r.dispatch("attention", [3]uint32{uint32(c.Heads), uint32(T), 1}, []*Buffer{s.q, cache.k[l], cache.v[l], s.att, s.meta_},
		uint32(c.Heads), uint32(c.KVHeads), uint32(c.HeadDim), uint32(c.SlidingWindow), uint32(r.in.BlockSize),
		math.Float32bits(float32(1/math.Sqrt(float64(c.HeadDim)))), uint32(r.posOff), uint32(r.blockOffOff), uint32(r.blocksOff))
	r.barrier()
	att := r.act(s.att, T, qdim)
	r.matmul(ly.wo, att, s.x, T, modeAccumulate)
	r.barrier()

	r.rmsNorm(s.x, ly.ffnNorm, s.xn, s.meta_, T, D, c.NormEps, false, 0)
	r.barrier()
	xn = r.act(s.xn, T, D)
	dense := uint32(1)
	if ly.router != nil {
		dense = 0
		r.matmul(ly.router, xn, s.router, T, 0)
		r.barrier()
	}
	r.dispatch("moe_route", [3]uint32{1, 1, 1}, []*Buffer{s.router, s.route}, uint32(T), uint32(c.Experts), uint32(c.TopK), dense,
		uint32(groups(c.FFN)), uint32(groups(D)))
	sum := s.x
	if b.ranks > 1 {
		// Zeros for the slots of other ranks' experts, and for this rank's
		// sum, once the previous layer's combine has read them.
		cmd.Barrier(vk.PipelineStageCompute, vk.PipelineStageTransfer, vk.AccessShaderRead|vk.AccessShaderWrite, vk.AccessTransferWrite)
		cmd.FillBuffer(s.ye.buf, 0, uint64(4*S*D), 0)
		if b.rank > 0 {
			sum = s.delta
			cmd.FillBuffer(s.delta.buf, 0, uint64(4*T*D), 0)
		}
		cmd.Barrier(vk.PipelineStageTransfer, vk.PipelineStageCompute, vk.AccessTransferWrite, vk.AccessShaderRead|vk.AccessShaderWrite)
	}
	cmd.Barrier(vk.PipelineStageCompute, vk.PipelineStageCompute|vk.PipelineStageDrawIndirect, vk.AccessShaderWrite,
		vk.AccessShaderRead|vk.AccessShaderWrite|vk.AccessIndirectCommandRead)
	r.argsOff = uint64(4 * (2*c.Experts + 5*S))
	r.label = " experts"
	for e, w := range ly.gate {
		if w == nil {
			continue // another rank's
		}
		r.matmulExpert(w, xn, s.g, s.route, e, true)
		r.matmulExpert(ly.up[e], xn, s.u, s.route, e, true)
	}
	r.barrier()
	r.dispatch1D("swiglu", S*c.FFN, 256, []*Buffer{s.g, s.u}, uint32(S*c.FFN))
	r.barrier()
	g := r.act(s.g, S, c.FFN)
	for e, w := range ly.down {
		if w != nil {
			r.matmulExpert(w, g, s.ye, s.route, e, false)
		}
	}
	r.barrier()
	r.label = ""
	r.dispatch("combine", [3]uint32{uint32(T), 1, 1}, []*Buffer{sum, s.ye, s.route}, uint32(D), uint32(c.Experts), uint32(c.TopK), uint32(T))
	r.barrier()
}

// storeX copies this rank's part of the residual (x on the first rank,
// delta on the others) to the host-visible xout.
func (r *recorder) storeX() {
	s := &r.b.s
	src := s.x
	if r.b.rank > 0 {
		src = s.delta
	}
	r.cmd.Barrier(vk.PipelineStageCompute, vk.PipelineStageTransfer, vk.AccessShaderWrite, vk.AccessTransferRead)
	r.cmd.CopyBuffer(src.buf, s.xout.buf, 0, 0, uint64(4*r.tokens*r.b.c.Dim))
	r.cmd.Barrier(vk.PipelineStageTransfer, vk.PipelineStageHost, vk.AccessTransferWrite, vk.AccessHostRead)
}

// head records the final norm over the rows that need logits, the output
// head, and the top-k selection or the logits' copy to the host.
func (r *recorder) head() {
	b, c, s, cmd, in := r.b, r.b.c, &r.b.s, r.cmd, r.in
	nOut := r.outputs
	if nOut == 0 {
		return
	}
	r.rmsNorm(s.x, b.outNorm, s.outRows, s.meta_, nOut, c.Dim, c.NormEps, true, r.outOff)
	r.barrier()
	out := r.act(s.outRows, nOut, c.Dim)
	r.label = " output"
	r.matmul(b.output, out, s.logitsDev, nOut, 0)
	r.label = ""
	if in.TopK > 0 {
		r.barrier()
		r.dispatch("topk", [3]uint32{uint32(nOut), 1, 1}, []*Buffer{s.logitsDev, s.top}, uint32(c.Vocab), uint32(in.TopK))
		cmd.Barrier(vk.PipelineStageCompute, vk.PipelineStageHost, vk.AccessShaderWrite, vk.AccessHostRead)
	} else {
		cmd.Barrier(vk.PipelineStageCompute, vk.PipelineStageTransfer, vk.AccessShaderWrite, vk.AccessTransferRead)
		cmd.CopyBuffer(s.logitsDev.buf, s.logits.buf, 0, 0, uint64(4*nOut*c.Vocab))
		cmd.Barrier(vk.PipelineStageTransfer, vk.PipelineStageHost, vk.AccessTransferWrite, vk.AccessHostRead)
	}
}

// act is an activation matrix a matmul reads: buf's contents between two
// writes, numbered so the Q8_0 form is made once per activation.
type act struct {
	buf        *Buffer
	rows, cols int
	gen        int
}

const (
	modeAccumulate = 1
	modeExpert     = 2
	modeGather     = 4
)

// recorder records one Forward's dispatches. Set lookups can fail (pool
// exhaustion); the first error is kept and the rest of the recording is
// skipped.
type recorder struct {
	d     *Device
	b     *Backend
	cmd   vk.CommandBuffer
	err   error
	in    *model.DeviceBatch
	cache *Cache
	// the meta buffer's areas: positions, cache rows, block-table offsets,
	// output rows and block tables
	posOff, rowsOff, blockOffOff, outOff, blocksOff int
	outputs                                         int      // the batch's tokens that need logits
	gen                                             int      // activations made so far
	inXQ                                            int      // the activation the Q8_0 buffers hold (0: none)
	names                                           []string // the profiled dispatches, by timestamp
	tokens                                          int      // the batch's
	label                                           string   // appended to the profiled names (" experts", " output")
	// argsOff is where the route buffer's indirect dispatch arguments
	// start: an expert without tokens launches no workgroups.
	argsOff     uint64
	indirect    *Buffer // set for the next dispatch only
	indirectOff uint64
}

// groups is the matmul workgroups for rows weight rows.
func groups(rows int) int { return (rows + matmulRows - 1) / matmulRows }

// act names the current contents of buf as an activation.
func (r *recorder) act(buf *Buffer, rows, cols int) *act {
	r.gen++
	return &act{buf: buf, rows: rows, cols: cols, gen: r.gen}
}

func (r *recorder) barrier() {
	r.cmd.Barrier(vk.PipelineStageCompute, vk.PipelineStageCompute, vk.AccessShaderWrite, vk.AccessShaderRead|vk.AccessShaderWrite)
}

// dispatch binds the named pipeline with bufs and push constants.
func (r *recorder) dispatch(name string, groups [3]uint32, bufs []*Buffer, push ...uint32) {
	if r.err != nil {
		return
	}
	set, err := r.d.set(bufs...)
	if err != nil {
		r.err = err
		return
	}
	r.cmd.BindPipeline(r.d.pipelines[name])
	r.cmd.BindSet(r.d.layout, set)
	if len(push) > 0 {
		r.cmd.PushConstants(r.d.layout, unsafe.Pointer(&push[0]), uint32(4*len(push)))
	}
	if r.indirect != nil {
		r.cmd.DispatchIndirect(r.indirect.buf, r.indirectOff)
	} else {
		r.cmd.Dispatch(groups[0], groups[1], groups[2])
	}
	if r.d.opts.Profile && r.d.timers != 0 && len(r.names) < maxTimers-2 {
		r.cmd.WriteTimestamp(vk.PipelineStageCompute, r.d.timers, uint32(2+len(r.names)))
		r.names = append(r.names, name+r.label)
	}
}

// dispatchIndirect is dispatch with the group counts read from the route
// buffer at off.
func (r *recorder) dispatchIndirect(name string, off uint64, bufs []*Buffer, push ...uint32) {
	r.indirect, r.indirectOff = r.b.s.route, off
	r.dispatch(name, [3]uint32{}, bufs, push...)
	r.indirect = nil
}

// Timing is the device time one shader took over the profiled Forwards.
type Timing struct {
	Name       string
	Seconds    float64
	Dispatches int
}

// Profile returns the device time per shader since the backend opened
// (with Options.Profile), largest first.
func (b *Backend) Profile() []Timing {
	b.d.mu.Lock()
	defer b.d.mu.Unlock()
	var out []Timing
	for _, t := range b.profile {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b Timing) int { return cmp.Compare(b.Seconds, a.Seconds) })
	return out
}

// readTimers records the last Forward's timestamps. The caller holds d.mu.
func (b *Backend) readTimers(names []string) {
	d := b.d
	b.gpuTime = 0
	if d.timers == 0 {
		return
	}
	ts := make([]uint64, 2+len(names))
	if d.dev.Timestamps(d.timers, ts) != nil || ts[1] <= ts[0] {
		return
	}
	tick := float64(d.info.TimestampPeriod) * 1e-9
	b.gpuTime = float64(ts[1]-ts[0]) * tick
	if b.profile == nil {
		b.profile = map[string]*Timing{}
	}
	prev := ts[0]
	for i, name := range names {
		t := b.profile[name]
		if t == nil {
			t = &Timing{Name: name}
			b.profile[name] = t
		}
		t.Seconds += float64(ts[2+i]-prev) * tick
		t.Dispatches++
		prev = ts[2+i]
	}
}

// grid spreads n workgroups over x and y (x at most 65535).
func grid(n int) [3]uint32 {
	const maxX = 65535
	if n <= maxX {
		return [3]uint32{uint32(max(n, 1)), 1, 1}
	}
	return [3]uint32{maxX, uint32((n + maxX - 1) / maxX), 1}
}

func (r *recorder) dispatch1D(name string, n, local int, bufs []*Buffer, push ...uint32) {
	r.dispatch(name, grid((n+local-1)/local), bufs, push...)
}

func (r *recorder) rmsNorm(x, w, out, meta *Buffer, rows, dim int, eps float32, gather bool, rowsOff int) {
	g := uint32(0)
	if gather {
		g = 1
	}
	r.dispatch("rmsnorm", [3]uint32{uint32(rows), 1, 1}, []*Buffer{x, w, out, meta}, uint32(dim), math.Float32bits(eps), g, uint32(rowsOff))
}

// quantize makes sure the Q8_0 buffers hold a.
func (r *recorder) quantize(a *act) {
	if r.inXQ == a.gen {
		return
	}
	n := a.rows * a.cols
	s := &r.b.s
	r.dispatch1D("quant_q8", n/32, 64, []*Buffer{a.buf, s.xq, s.xd}, uint32(n/32))
	r.barrier()
	r.inXQ = a.gen
}

// matmulRows is the weight rows per matmul workgroup (ROWS in matmul.comp).
const matmulRows = 4

// matmulPass are the matmul variants' activation rows per pass (NR in
// matmul.comp): a pass reads each weight once for up to that many rows.
var matmulPass = []int{1, 2, 4, 8}

// passFor picks the variant for at most n activation rows.
func passFor(n int) int {
	for _, nr := range matmulPass {
		if n <= nr {
			return nr
		}
	}
	return matmulPass[len(matmulPass)-1]
}

var matmulShader = map[tensor.DType]string{
	tensor.F32: "matmul_f32", tensor.F16: "matmul_f16", tensor.BF16: "matmul_bf16", tensor.Q8_0: "matmul_q8_0", tensor.Q4_0: "matmul_q4_0",
}

// matmul records y (+)= W·a for a's first n rows, chunk by chunk.
func (r *recorder) matmul(w *weight, a *act, y *Buffer, n int, mode uint32) {
	r.matmulRoute(w, a, y, nil, n, n, mode, 0)
}

// matmulExpert records expert e's matmul over the slots the route buffer
// assigns it, reading a's rows by token (gather) or by slot.
func (r *recorder) matmulExpert(w *weight, a *act, y, route *Buffer, e int, gather bool) {
	mode := uint32(modeExpert)
	if gather {
		mode |= modeGather
	}
	r.matmulRoute(w, a, y, route, 0, r.tokens, mode, e)
}

// matmulRoute records the matmul over n rows (or the expert's, at most
// maxRows).
func (r *recorder) matmulRoute(w *weight, a *act, y, route *Buffer, n, maxRows int, mode uint32, e int) {
	s := &r.b.s
	quant := w.typ == tensor.Q8_0 || w.typ == tensor.Q4_0
	if quant {
		r.quantize(a)
	}
	for _, ch := range w.chunks {
		bufs := []*Buffer{ch.buf, a.buf, nil, y, route}
		if quant {
			bufs[1], bufs[2] = s.xq, s.xd
		}
		name := fmt.Sprintf("%s/%d", matmulShader[w.typ], passFor(maxRows))
		push := []uint32{uint32(ch.rows), uint32(w.cols), uint32(n), mode, uint32(e), uint32(r.b.c.Experts), uint32(w.rows), uint32(ch.lo)}
		g := grid(groups(ch.rows))
		if mode&modeExpert != 0 && len(w.chunks) == 1 && g[1] == 1 {
			// moe_route wrote this expert's group count: gate and up
			// have FFN rows, down has Dim rows.
			off := r.argsOff + uint64(4*6*e)
			if w.rows != r.b.c.FFN {
				off += 12
			}
			r.dispatchIndirect(name, off, bufs, push...)
			continue
		}
		r.dispatch(name, g, bufs, push...)
	}
}
