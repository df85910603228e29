// Package modelgen writes deterministic random Mixtral-architecture models
// as GGUF files that both this engine and llama.cpp load. Tests, benchmarks
// and demos use them in place of real checkpoints, which are far too large
// for CI; they have exactly the real architecture, only random weights.
package modelgen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"

	"github.com/moe-operator/moe-operator/engine/gguf"
	"github.com/moe-operator/moe-operator/engine/tensor"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// Config describes a generated model.
type Config struct {
	Name      string
	Layers    int
	Dim       int
	Heads     int
	KVHeads   int
	FFN       int
	Experts   int
	TopK      int
	Context   int
	Type      tensor.DType // type of the weight matrices; norms and router stay F32
	Seed      uint64
	Vocab     string // "mistral" or a size such as "512"
	RopeTheta float32
	NormEps   float32
	// PerExpert writes the pre-2024 layout (blk.N.ffn_gate.E.weight ...)
	// instead of stacked blk.N.ffn_gate_exps.weight tensors.
	PerExpert bool
	// SlidingWindow, if > 0, is written as llama.attention.sliding_window.
	SlidingWindow int
}

// Presets are the named model sizes of `moe gen-model --preset`.
var Presets = map[string]Config{
	// tiny: a few hundred kilobytes; unit tests.
	"tiny": {Name: "tiny", Layers: 2, Dim: 64, Heads: 4, KVHeads: 2, FFN: 128, Experts: 4, TopK: 2, Context: 512, Type: tensor.F32, Vocab: "512"},
	// small: the real vocabulary at a size that runs instantly; demos and e2e.
	"small": {Name: "small", Layers: 4, Dim: 256, Heads: 8, KVHeads: 2, FFN: 512, Experts: 8, TopK: 2, Context: 2048, Type: tensor.Q8_0, Vocab: "mistral"},
	// mini: Mixtral's proportions at benchmark size (about 0.75 B parameters,
	// head dim 128, 4 query heads per kv head, 8 experts, top-2).
	"mini": {Name: "mini", Layers: 8, Dim: 1024, Heads: 8, KVHeads: 2, FFN: 3584, Experts: 8, TopK: 2, Context: 4096, Type: tensor.Q8_0, Vocab: "mistral"},
}

// Preset returns a copy of a named preset.
func Preset(name string) (Config, error) {
	c, ok := Presets[name]
	if !ok {
		return Config{}, fmt.Errorf("modelgen: unknown preset %q (have tiny, small, mini)", name)
	}
	return c, nil
}

func (c *Config) defaults() {
	if c.RopeTheta == 0 {
		c.RopeTheta = 1e6
	}
	if c.NormEps == 0 {
		c.NormEps = 1e-5
	}
	if c.Name == "" {
		c.Name = "generated"
	}
	if c.Vocab == "" {
		c.Vocab = "512"
	}
}

// vocab resolves the Vocab setting.
func (c *Config) vocab() (tokenizer.Vocab, error) {
	if c.Vocab == "mistral" {
		return MistralVocab(), nil
	}
	n, err := strconv.Atoi(c.Vocab)
	if err != nil {
		return tokenizer.Vocab{}, fmt.Errorf("modelgen: vocabulary %q is neither \"mistral\" nor a size", c.Vocab)
	}
	return SyntheticVocab(n)
}

func (c *Config) validate() error {
	for _, p := range []struct {
		name string
		v    int
	}{{"layers", c.Layers}, {"dim", c.Dim}, {"heads", c.Heads}, {"kv-heads", c.KVHeads}, {"ffn", c.FFN}, {"experts", c.Experts}, {"top-k", c.TopK}, {"context", c.Context}} {
		if p.v <= 0 {
			return fmt.Errorf("modelgen: %s must be positive, have %d", p.name, p.v)
		}
	}
	if c.Dim%c.Heads != 0 || (c.Dim/c.Heads)%2 != 0 {
		return fmt.Errorf("modelgen: dim %d must split into %d heads of even size", c.Dim, c.Heads)
	}
	if c.Heads%c.KVHeads != 0 {
		return fmt.Errorf("modelgen: heads %d must be a multiple of kv-heads %d", c.Heads, c.KVHeads)
	}
	if c.TopK > c.Experts {
		return fmt.Errorf("modelgen: top-k %d exceeds experts %d", c.TopK, c.Experts)
	}
	if !c.Type.Storable() {
		return fmt.Errorf("modelgen: type %s cannot be generated (use f32, f16, bf16, q8_0, q4_0, q4_k or q6_k)", c.Type)
	}
	bs := c.Type.BlockSize()
	for _, d := range []struct {
		name string
		v    int
	}{{"dim", c.Dim}, {"ffn", c.FFN}} {
		if d.v%bs != 0 {
			return fmt.Errorf("modelgen: %s %d is not a multiple of the %s block size %d", d.name, d.v, c.Type, bs)
		}
	}
	return nil
}

// fileType is llama.cpp's general.file_type for a model mostly of type t.
func fileType(t tensor.DType) uint32 {
	switch t {
	case tensor.F32:
		return 0
	case tensor.F16:
		return 1
	case tensor.Q4_0:
		return 2
	case tensor.Q8_0:
		return 7
	case tensor.Q4_K:
		return 15
	case tensor.Q6_K:
		return 18
	case tensor.BF16:
		return 32
	}
	return 0
}

// NewWriter builds the GGUF writer for c; the tensors are generated while
// the file is written. The same Config always gives the same bytes.
func NewWriter(c Config) (*gguf.Writer, error) {
	c.defaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	v, err := c.vocab()
	if err != nil {
		return nil, err
	}
	hd := c.Dim / c.Heads
	w := gguf.NewWriter()
	w.Set("general.architecture", gguf.String("llama"))
	w.Set("general.name", gguf.String(c.Name))
	w.Set("general.file_type", gguf.Uint32(fileType(c.Type)))
	w.Set("llama.context_length", gguf.Uint32(uint32(c.Context)))
	w.Set("llama.embedding_length", gguf.Uint32(uint32(c.Dim)))
	w.Set("llama.block_count", gguf.Uint32(uint32(c.Layers)))
	w.Set("llama.feed_forward_length", gguf.Uint32(uint32(c.FFN)))
	w.Set("llama.rope.dimension_count", gguf.Uint32(uint32(hd)))
	w.Set("llama.attention.head_count", gguf.Uint32(uint32(c.Heads)))
	w.Set("llama.attention.head_count_kv", gguf.Uint32(uint32(c.KVHeads)))
	w.Set("llama.attention.layer_norm_rms_epsilon", gguf.Float32(c.NormEps))
	w.Set("llama.rope.freq_base", gguf.Float32(c.RopeTheta))
	w.Set("llama.expert_count", gguf.Uint32(uint32(c.Experts)))
	w.Set("llama.expert_used_count", gguf.Uint32(uint32(c.TopK)))
	w.Set("llama.vocab_size", gguf.Uint32(uint32(len(v.Pieces))))
	if c.SlidingWindow > 0 {
		w.Set("llama.attention.sliding_window", gguf.Uint32(uint32(c.SlidingWindow)))
	}
	tokenizer.SetGGUF(w, v)

	g := &gen{c: c}
	V := len(v.Pieces)
	add := func(name string, t tensor.DType, rows, cols int, std float32) error {
		id := g.next()
		return w.AddTensor(name, t, []uint64{uint64(cols), uint64(rows)}, func() ([]byte, error) { return g.matrix(id, t, rows, cols, std, 0), nil })
	}
	addNorm := func(name string) error {
		id := g.next()
		return w.AddTensor(name, tensor.F32, []uint64{uint64(c.Dim)}, func() ([]byte, error) { return g.matrix(id, tensor.F32, 1, c.Dim, 0.1, 1), nil })
	}
	// Experts are generated as one stacked matrix; the per-expert layout
	// writes its slices, so both layouts hold the same weights.
	addExperts := func(prefix, kind string, rows, cols int, std float32) error {
		id := g.next()
		all := func() []byte { return g.stacked(id, c.Type, rows*c.Experts, cols, std) }
		if !c.PerExpert {
			dims := []uint64{uint64(cols), uint64(rows), uint64(c.Experts)}
			return w.AddTensor(prefix+"ffn_"+kind+"_exps.weight", c.Type, dims, func() ([]byte, error) { return all(), nil })
		}
		rb, _ := c.Type.RowBytes(cols)
		size := rb * rows
		for e := 0; e < c.Experts; e++ {
			name := fmt.Sprintf("%sffn_%s.%d.weight", prefix, kind, e)
			if err := w.AddTensor(name, c.Type, []uint64{uint64(cols), uint64(rows)}, func() ([]byte, error) {
				return all()[e*size : (e+1)*size], nil
			}); err != nil {
				return err
			}
		}
		return nil
	}
	inStd := float32(1 / math.Sqrt(float64(c.Dim)))
	ffnStd := float32(1 / math.Sqrt(float64(c.FFN)))
	steps := []error{
		add("token_embd.weight", c.Type, V, c.Dim, 1),
		addNorm("output_norm.weight"),
		add("output.weight", c.Type, V, c.Dim, inStd),
	}
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		steps = append(steps,
			addNorm(p+"attn_norm.weight"),
			add(p+"attn_q.weight", c.Type, c.Dim, c.Dim, inStd),
			add(p+"attn_k.weight", c.Type, c.KVHeads*hd, c.Dim, inStd),
			add(p+"attn_v.weight", c.Type, c.KVHeads*hd, c.Dim, inStd),
			add(p+"attn_output.weight", c.Type, c.Dim, c.Dim, inStd),
			addNorm(p+"ffn_norm.weight"),
			add(p+"ffn_gate_inp.weight", tensor.F32, c.Experts, c.Dim, 4*inStd),
		)
		for _, p3 := range []struct {
			kind       string
			rows, cols int
			std        float32
		}{{"gate", c.FFN, c.Dim, inStd}, {"down", c.Dim, c.FFN, ffnStd}, {"up", c.FFN, c.Dim, inStd}} {
			steps = append(steps, addExperts(p, p3.kind, p3.rows, p3.cols, p3.std))
		}
	}
	for _, err := range steps {
		if err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Write generates the model described by c into path.
func Write(path string, c Config) error {
	w, err := NewWriter(c)
	if err != nil {
		return err
	}
	return w.WriteFile(path)
}

type gen struct {
	c        Config
	ids      int
	cachedID int // the stacked expert matrix generated last, kept for its slices
	cached   []byte
}

func (g *gen) next() int { g.ids++; return g.ids }

func (g *gen) stacked(id int, t tensor.DType, rows, cols int, std float32) []byte {
	if g.cachedID != id {
		g.cached, g.cachedID = g.matrix(id, t, rows, cols, std, 0), id
	}
	return g.cached
}

// matrix returns rows × cols values, uniform with the given standard
// deviation around offset, in type t. Rows are generated in fixed chunks,
// each from its own stream seeded by (seed, tensor, chunk), in parallel:
// the result does not depend on the number of threads.
func (g *gen) matrix(id int, t tensor.DType, rows, cols int, std, offset float32) []byte {
	rb, _ := t.RowBytes(cols)
	out := make([]byte, rows*rb)
	const chunk = 16
	nChunks := (rows + chunk - 1) / chunk
	a := std * float32(math.Sqrt(3))
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < runtime.NumCPU(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vals := make([]float32, cols)
			for ch := range work {
				rng := rand.New(rand.NewPCG(g.c.Seed, uint64(id)<<32|uint64(ch)))
				for r := ch * chunk; r < min((ch+1)*chunk, rows); r++ {
					for i := range vals {
						vals[i] = offset + a*(2*rng.Float32()-1)
					}
					tensor.Quantize(out[r*rb:(r+1)*rb], vals, t, cols)
				}
			}
		}()
	}
	for ch := 0; ch < nChunks; ch++ {
		work <- ch
	}
	close(work)
	wg.Wait()
	return out
}
