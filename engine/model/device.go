package model

import (
	"fmt"

	"github.com/moe-operator/moe-operator/engine/tensor"
)

// An Accelerator executes the forward pass on a device (a GPU through
// Vulkan, for example). The model stays the owner of the structure: it
// binds the file's tensors by name, converts them as LoadOptions ask,
// hands each one to the accelerator once, keeps the token embedding on
// the host, and for every Forward passes a DeviceBatch that says which
// cache rows each token reads and writes. The accelerator runs the
// layers in the order the CPU does (see Forward) and returns the logits.
//
// The engine's GPU-vs-CPU parity tests hold the two implementations of
// the layer equal on every commit.
type Accelerator interface {
	// Name describes the device for logs ("vulkan:0 NVIDIA H100").
	Name() string
	// Upload stores one weight matrix, row-major and unpacked (GGUF's
	// block layout for quantized types). The model releases m afterwards.
	Upload(ref TensorRef, m *tensor.Matrix) error
	// UploadVector stores a norm's weights.
	UploadVector(ref TensorRef, v []float32) error
	// NewCache allocates rows rows of keys and values for every layer.
	NewCache(rows int) (DeviceCache, error)
	// Reserve allocates the working memory of a Forward of up to tokens
	// tokens, outputs of them needing logits, so that sizing the KV cache
	// from the memory left cannot starve a later batch.
	Reserve(tokens, outputs int) error
	// Memory reports the device memory this accelerator may use and has
	// allocated.
	Memory() DeviceMemory
	// Forward runs b and returns the logits of b.Outputs, one row of
	// Vocab values each, or with b.TopK set, each output's b.TopK most
	// likely tokens (best first, ties to the lower id) and no logits;
	// valid until the next Forward.
	Forward(b *DeviceBatch) ([]float32, []Candidate, error)
	// Close releases the device.
	Close() error
}

// DeviceMemory is an accelerator's memory as the KV cache sizing sees it.
type DeviceMemory struct {
	// Budget is what this process may allocate: the driver's budget for
	// the device-local heap, or a lower limit the accelerator was given.
	Budget int64
	// Used is what it holds: weights, working memory and caches.
	Used int64
	// MaxCacheRows bounds the rows one cache may have (one layer's keys
	// live in one storage binding); 0: no bound.
	MaxCacheRows int
}

// DeviceCache is an accelerator's KV cache storage.
type DeviceCache interface {
	// Bytes is the device memory the cache holds.
	Bytes() int64
	Close()
}

// AcceleratorFactory opens an accelerator for a model of config c whose
// weights take weightBytes once converted; it refuses a model that does
// not fit the device.
type AcceleratorFactory func(c Config, weightBytes int64) (Accelerator, error)

// TensorKind names a weight of a layer (or of the model, with Layer -1).
type TensorKind int

const (
	TensorAttnNorm TensorKind = iota
	TensorWq
	TensorWk
	TensorWv
	TensorWo
	TensorFFNNorm
	TensorRouter
	TensorGate
	TensorUp
	TensorDown
	TensorOutNorm // Layer -1
	TensorOutput  // Layer -1; the embedding when tied
)

// TensorRef identifies one weight: its kind, layer and expert (-1 for
// tensors that are not an expert's).
type TensorRef struct {
	Kind   TensorKind
	Layer  int
	Expert int
}

func (r TensorRef) String() string {
	names := [...]string{"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate_inp",
		"ffn_gate", "ffn_up", "ffn_down", "output_norm", "output"}
	n := names[r.Kind]
	if r.Layer < 0 {
		return n
	}
	if r.Expert >= 0 {
		return fmt.Sprintf("blk.%d.%s.%d", r.Layer, n, r.Expert)
	}
	return fmt.Sprintf("blk.%d.%s", r.Layer, n)
}

// DeviceBatch is one Forward for an accelerator. Token i of T is at
// position Pos[i]; its key and value go to cache row Rows[i]; it attends
// to positions [0, Pos[i]] (or the sliding window's part of them) of its
// sequence, whose block table is Blocks[BlockOff[i]:] (position j lives in
// row Blocks[BlockOff[i]+j/BlockSize]*BlockSize + j%BlockSize).
type DeviceBatch struct {
	Cache     DeviceCache
	BlockSize int
	X         []float32 // [T][Dim] the tokens' embeddings
	Cos, Sin  []float32 // [T][HeadDim/2] the rotary angles of each position
	Pos       []int32
	Rows      []int32
	BlockOff  []int32
	Blocks    []int32
	Outputs   []int32 // batch indices of the tokens that need logits
	TopK      int     // > 0: return only each output's TopK best tokens
}

// MaxDeviceTopK is the most candidates ForwardTop selects per token.
const MaxDeviceTopK = 16

// buildDevice uploads every weight to the accelerator that opts.Device
// opens, one matrix at a time (converted first when the options ask), so
// the host's peak stays near one matrix beyond the mapped file; the token
// embedding alone stays on the host.
func (m *Model) buildDevice(b *builder, w *Weights, opts LoadOptions) error {
	c := m.Config
	dev, err := opts.Device(c, b.convertedBytes())
	if err != nil {
		return err
	}
	// Tensor parallelism on accelerators is the accelerator's own: a group
	// of devices that places the shards (gpu.Group).
	shards := 1
	if g, ok := dev.(interface{ Shards() int }); ok {
		shards = g.Shards()
	}
	if n := max(opts.TensorParallel, 1); n != shards {
		dev.Close()
		return fmt.Errorf("%w: tensor parallelism %d on %s, which runs %d shard(s); open a device group of %d (moe: --device vulkan --tensor-parallel %d) or use --device cpu",
			ErrConfig, n, dev.Name(), shards, n, n)
	}
	m.dev, m.devShards = dev, shards
	b.uploading = true
	upload := func(ref TensorRef, src *tensor.Matrix) error {
		mat, err := b.convert(src)
		if err != nil {
			return fmt.Errorf("model: %s: %w", ref, err)
		}
		if ref.Expert >= 0 {
			b.expertType = mat.Type
		}
		if err := dev.Upload(ref, mat); err != nil {
			return fmt.Errorf("model: %s on %s: %w", ref, dev.Name(), err)
		}
		if src != w.Embed {
			b.release(src)
		}
		return nil
	}
	vector := func(ref TensorRef, v []float32) error {
		if err := dev.UploadVector(ref, v); err != nil {
			return fmt.Errorf("model: %s on %s: %w", ref, dev.Name(), err)
		}
		return nil
	}
	for l := range w.Layers {
		lw := &w.Layers[l]
		ref := func(k TensorKind) TensorRef { return TensorRef{Kind: k, Layer: l, Expert: -1} }
		if err := vector(ref(TensorAttnNorm), lw.AttnNorm); err != nil {
			return err
		}
		if err := vector(ref(TensorFFNNorm), lw.FFNNorm); err != nil {
			return err
		}
		for _, s := range []struct {
			k   TensorKind
			src *tensor.Matrix
		}{{TensorWq, lw.Wq}, {TensorWk, lw.Wk}, {TensorWv, lw.Wv}, {TensorWo, lw.Wo}} {
			if err := upload(ref(s.k), s.src); err != nil {
				return err
			}
		}
		if lw.Router != nil {
			// The router stays in the file's type, as on the CPU.
			if err := dev.Upload(ref(TensorRouter), lw.Router); err != nil {
				return fmt.Errorf("model: %s on %s: %w", ref(TensorRouter), dev.Name(), err)
			}
		}
		for e := 0; e < c.Experts; e++ {
			for _, s := range []struct {
				k   TensorKind
				src *tensor.Matrix
			}{{TensorGate, lw.Gate[e]}, {TensorUp, lw.Up[e]}, {TensorDown, lw.Down[e]}} {
				if err := upload(TensorRef{Kind: s.k, Layer: l, Expert: e}, s.src); err != nil {
					return err
				}
			}
		}
	}
	if err := vector(TensorRef{Kind: TensorOutNorm, Layer: -1, Expert: -1}, w.OutNorm); err != nil {
		return err
	}
	m.tied = w.Output == w.Embed
	if m.embed, err = b.convert(w.Embed); err != nil {
		return err
	}
	out := TensorRef{Kind: TensorOutput, Layer: -1, Expert: -1}
	if m.tied {
		if err := dev.Upload(out, m.embed); err != nil {
			return fmt.Errorf("model: %s on %s: %w", out, dev.Name(), err)
		}
	} else if err := upload(out, w.Output); err != nil {
		return err
	}
	if m.embed != w.Embed {
		b.release(w.Embed)
	}
	for l := range w.Layers {
		m.layers = append(m.layers, sharedLayer{attnNorm: w.Layers[l].AttnNorm, ffnNorm: w.Layers[l].FFNNorm, router: w.Layers[l].Router})
	}
	m.weightType = b.expertType
	return nil
}

// convertedBytes is the size of every matrix once converted.
func (b *builder) convertedBytes() int64 {
	var n int64
	for _, m := range b.matrices() {
		n += int64(m.Bytes())
		if b.target != nil && needsConversion(m.Type, *b.target) {
			if rb, err := b.target.RowBytes(m.Cols); err == nil {
				n += int64(m.Rows*rb) - int64(m.Bytes())
			}
		}
	}
	return n
}

// Accelerated reports whether the model runs on an accelerator, and which.
func (m *Model) Accelerated() (string, bool) {
	if m.dev == nil {
		return "", false
	}
	return m.dev.Name(), true
}

// DeviceMemory reports the accelerator's memory; ok is false on the CPU.
func (m *Model) DeviceMemory() (mem DeviceMemory, ok bool) {
	if m.dev == nil {
		return DeviceMemory{}, false
	}
	return m.dev.Memory(), true
}

// ReserveDevice allocates the accelerator's working memory for batches of
// up to tokens tokens and outputs outputs; nothing on the CPU.
func (m *Model) ReserveDevice(tokens, outputs int) error {
	if m.dev == nil {
		return nil
	}
	if err := m.dev.Reserve(tokens, outputs); err != nil {
		return fmt.Errorf("model: working memory for %d tokens on %s: %w", tokens, m.dev.Name(), err)
	}
	return nil
}

// forwardDevice runs b on the accelerator: the host looks up the
// embeddings and rotary angles and lays out the block tables; the device
// does the rest. With topK > 0 it returns candidates, not logits.
func (m *Model) forwardDevice(st *State, c *Cache, b *Batch, topK int) ([]float32, []Candidate, error) {
	cfg := m.Config
	T, D, half := b.Len(), cfg.Dim, cfg.HeadDim/2
	db := &st.dev
	db.Cache, db.BlockSize = c.dev, c.BlockSize
	db.X, db.Cos, db.Sin = st.x[:T*D], st.cos[:T*half], st.sin[:T*half]
	db.Pos, db.Rows, db.BlockOff, db.Blocks, db.Outputs = db.Pos[:0], db.Rows[:0], db.BlockOff[:0], db.Blocks[:0], db.Outputs[:0]
	for i, tok := range b.Tokens {
		tensor.Dequantize(db.X[i*D:(i+1)*D], m.embed.Row(int(tok)), m.embed.Type, D)
		ropeTable(db.Cos[i*half:(i+1)*half], db.Sin[i*half:(i+1)*half], b.Pos[i], cfg.RopeTheta, cfg.HeadDim)
		s := b.Seqs[i]
		db.Pos = append(db.Pos, int32(b.Pos[i]))
		db.Rows = append(db.Rows, int32(c.row(s, b.Pos[i])))
		// Tokens of one sequence share its table.
		if i > 0 && b.Seqs[i-1] == s {
			db.BlockOff = append(db.BlockOff, db.BlockOff[i-1])
		} else {
			db.BlockOff = append(db.BlockOff, int32(len(db.Blocks)))
			db.Blocks = append(db.Blocks, s.Blocks...)
		}
		if b.Output[i] {
			db.Outputs = append(db.Outputs, int32(i))
		}
	}
	db.TopK = topK
	logits, top, err := m.dev.Forward(db)
	if err != nil {
		return nil, nil, fmt.Errorf("model: forward on %s: %w", m.dev.Name(), err)
	}
	if topK > 0 {
		st.top = append(st.top[:0], top...)
		return nil, st.top, nil
	}
	st.logits = append(st.logits[:0], logits...)
	return st.logits, nil, nil
}
