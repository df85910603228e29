package model

import (
	"errors"
	"fmt"
	"strings"

	"github.com/moe-operator/moe-operator/engine/gguf"
	"github.com/moe-operator/moe-operator/engine/tensor"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// Weights are the model's tensors, as views into the mapped file (or into
// memory the loader converted them to).
type Weights struct {
	Embed   *tensor.Matrix // Vocab rows of Dim
	OutNorm []float32
	Output  *tensor.Matrix // Vocab rows of Dim (the embedding when the file has no output head)
	Layers  []LayerWeights
	// Mapped lists the read-only file mappings the matrices point into.
	// Once a matrix has been converted or packed into memory of its own,
	// the pages of its mapped bytes are released.
	Mapped [][]byte
}

// LayerWeights are one transformer block's tensors. Matrices are stored as
// rows of inputs: Wq has QDim rows of Dim columns, Down[e] has Dim rows of
// FFN columns, and so on.
type LayerWeights struct {
	AttnNorm       []float32
	Wq, Wk, Wv, Wo *tensor.Matrix
	FFNNorm        []float32
	Router         *tensor.Matrix // Experts rows of Dim; nil for a dense model
	Gate, Up, Down []*tensor.Matrix
}

// ErrUnsupported reports a model file the engine cannot run.
var ErrUnsupported = errors.New("model: unsupported model")

// ConfigFromGGUF reads the hyperparameters of a llama-architecture GGUF
// file (Mixtral is "llama" with llama.expert_count > 0).
func ConfigFromGGUF(f *gguf.File) (Config, error) {
	arch, err := f.String("general.architecture")
	if err != nil {
		return Config{}, fmt.Errorf("model: %w", err)
	}
	if arch != "llama" {
		return Config{}, fmt.Errorf("%w: architecture %q; this engine runs Mixtral-architecture models (general.architecture \"llama\", with or without experts)", ErrUnsupported, arch)
	}
	c := Config{Rope: RopeAdjacent, RopeTheta: 10000, NormEps: 1e-5, Experts: 1, TopK: 1}
	if name, err := f.String("general.name"); err == nil {
		c.Name = name
	}
	ints := []struct {
		key      string
		dst      *int
		required bool
	}{
		{"llama.block_count", &c.Layers, true},
		{"llama.embedding_length", &c.Dim, true},
		{"llama.attention.head_count", &c.Heads, true},
		{"llama.feed_forward_length", &c.FFN, true},
		{"llama.context_length", &c.Context, true},
		{"llama.attention.head_count_kv", &c.KVHeads, false},
		{"llama.expert_count", &c.Experts, false},
		{"llama.expert_used_count", &c.TopK, false},
		{"llama.rope.dimension_count", &c.HeadDim, false},
		{"llama.attention.sliding_window", &c.SlidingWindow, false},
	}
	for _, k := range ints {
		v, err := f.Int(k.key)
		switch {
		case err == nil:
			if v < 0 || v >= 1<<31 {
				return Config{}, fmt.Errorf("%w: %s = %d is out of range", ErrConfig, k.key, v)
			}
			*k.dst = int(v)
		case errors.Is(err, gguf.ErrNotFound) && !k.required:
		default:
			return Config{}, fmt.Errorf("model: %w", err)
		}
	}
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	if c.Experts == 0 { // dense llama files may say 0
		c.Experts, c.TopK = 1, 1
	}
	if c.Heads > 0 && c.HeadDim == 0 {
		c.HeadDim = c.Dim / c.Heads
	}
	if v, err := f.Float("llama.rope.freq_base"); err == nil {
		c.RopeTheta = v
	}
	if v, err := f.Float("llama.attention.layer_norm_rms_epsilon"); err == nil {
		c.NormEps = float32(v)
	}
	if _, err := f.Float("llama.rope.scaling.factor"); err == nil {
		if t, _ := f.String("llama.rope.scaling.type"); t != "" && t != "none" {
			return Config{}, fmt.Errorf("%w: RoPE scaling %q is not implemented", ErrUnsupported, t)
		}
	}
	toks, err := f.Array("tokenizer.ggml.tokens")
	if err != nil {
		return Config{}, fmt.Errorf("model: %w", err)
	}
	c.Vocab = toks.Len()
	if v, err := f.Int("llama.vocab_size"); err == nil && int(v) != c.Vocab {
		return Config{}, fmt.Errorf("%w: llama.vocab_size is %d but the tokenizer has %d pieces", ErrConfig, v, c.Vocab)
	}
	return c, c.validate(ggufKeys)
}

// weightsFromGGUF binds the file's tensors to Weights, checking every shape
// and type.
func weightsFromGGUF(f *gguf.File, c Config) (*Weights, error) {
	l := ggufLoader{f: f}
	w := &Weights{Layers: make([]LayerWeights, c.Layers), Mapped: [][]byte{f.Bytes()}}
	var err error
	if w.Embed, err = l.matrix("token_embd.weight", c.Vocab, c.Dim); err != nil {
		return nil, err
	}
	if w.OutNorm, err = l.vector("output_norm.weight", c.Dim); err != nil {
		return nil, err
	}
	if _, ok := f.Tensor("output.weight"); ok {
		if w.Output, err = l.matrix("output.weight", c.Vocab, c.Dim); err != nil {
			return nil, err
		}
	} else {
		w.Output = w.Embed
	}
	for i := range w.Layers {
		lw := &w.Layers[i]
		p := fmt.Sprintf("blk.%d.", i)
		steps := []func() error{
			func() (err error) { lw.AttnNorm, err = l.vector(p+"attn_norm.weight", c.Dim); return },
			func() (err error) { lw.Wq, err = l.matrix(p+"attn_q.weight", c.QDim(), c.Dim); return },
			func() (err error) { lw.Wk, err = l.matrix(p+"attn_k.weight", c.KVDim(), c.Dim); return },
			func() (err error) { lw.Wv, err = l.matrix(p+"attn_v.weight", c.KVDim(), c.Dim); return },
			func() (err error) { lw.Wo, err = l.matrix(p+"attn_output.weight", c.Dim, c.QDim()); return },
			func() (err error) { lw.FFNNorm, err = l.vector(p+"ffn_norm.weight", c.Dim); return },
			func() (err error) { lw.Gate, err = l.experts(i, "gate", c.FFN, c.Dim, c.Experts); return },
			func() (err error) { lw.Up, err = l.experts(i, "up", c.FFN, c.Dim, c.Experts); return },
			func() (err error) { lw.Down, err = l.experts(i, "down", c.Dim, c.FFN, c.Experts); return },
		}
		if c.Experts > 1 {
			steps = append(steps, func() (err error) { lw.Router, err = l.matrix(p+"ffn_gate_inp.weight", c.Experts, c.Dim); return })
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return nil, err
			}
		}
	}
	return w, nil
}

type ggufLoader struct{ f *gguf.File }

func (l ggufLoader) info(name string) (*gguf.TensorInfo, error) {
	t, ok := l.f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%w: tensor %q is missing", ErrUnsupported, name)
	}
	return t, nil
}

func checkType(name string, t tensor.DType) error {
	if !t.Storable() {
		return fmt.Errorf("%w: tensor %q has type %s; the engine runs F32, F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K weights", ErrUnsupported, name, t)
	}
	return nil
}

func shapeErr(name string, dims []uint64, want ...int) error {
	w := make([]string, len(want))
	for i, x := range want {
		w[i] = fmt.Sprint(x)
	}
	return fmt.Errorf("%w: tensor %q has shape %v, want [%s]", ErrUnsupported, name, dims, strings.Join(w, " "))
}

// matrix binds a [cols, rows] (ggml order) tensor.
func (l ggufLoader) matrix(name string, rows, cols int) (*tensor.Matrix, error) {
	t, err := l.info(name)
	if err != nil {
		return nil, err
	}
	if len(t.Dims) != 2 || t.Dims[0] != uint64(cols) || t.Dims[1] != uint64(rows) {
		return nil, shapeErr(name, t.Dims, cols, rows)
	}
	if err := checkType(name, t.Type); err != nil {
		return nil, err
	}
	data, _ := l.f.TensorData(name)
	return tensor.NewMatrix(t.Type, rows, cols, data)
}

// vector loads a 1-D tensor of n values as float32.
func (l ggufLoader) vector(name string, n int) ([]float32, error) {
	t, err := l.info(name)
	if err != nil {
		return nil, err
	}
	if len(t.Dims) != 1 || t.Dims[0] != uint64(n) {
		return nil, shapeErr(name, t.Dims, n)
	}
	if err := checkType(name, t.Type); err != nil {
		return nil, err
	}
	data, _ := l.f.TensorData(name)
	out := make([]float32, n)
	tensor.Dequantize(out, data, t.Type, n)
	return out, nil
}

// experts binds one projection of every expert, from the stacked layout
// (blk.N.ffn_gate_exps, ggml dims [cols, rows, experts]), the per-expert
// layout of older files (blk.N.ffn_gate.E) or, for a dense model, the plain
// blk.N.ffn_gate tensor.
func (l ggufLoader) experts(layer int, kind string, rows, cols, n int) ([]*tensor.Matrix, error) {
	stacked := fmt.Sprintf("blk.%d.ffn_%s_exps.weight", layer, kind)
	if t, ok := l.f.Tensor(stacked); ok {
		if len(t.Dims) != 3 || t.Dims[0] != uint64(cols) || t.Dims[1] != uint64(rows) || t.Dims[2] != uint64(n) {
			return nil, shapeErr(stacked, t.Dims, cols, rows, n)
		}
		if err := checkType(stacked, t.Type); err != nil {
			return nil, err
		}
		data, _ := l.f.TensorData(stacked)
		all, err := tensor.NewMatrix(t.Type, rows*n, cols, data)
		if err != nil {
			return nil, err
		}
		out := make([]*tensor.Matrix, n)
		for e := range out {
			out[e] = all.RowRange(e*rows, (e+1)*rows)
		}
		return out, nil
	}
	out := make([]*tensor.Matrix, n)
	if dense := fmt.Sprintf("blk.%d.ffn_%s.weight", layer, kind); n == 1 {
		if _, ok := l.f.Tensor(dense); ok {
			m, err := l.matrix(dense, rows, cols)
			out[0] = m
			return out, err
		}
	}
	for e := range out {
		name := fmt.Sprintf("blk.%d.ffn_%s.%d.weight", layer, kind, e)
		if _, ok := l.f.Tensor(name); !ok && e == 0 {
			return nil, fmt.Errorf("%w: layer %d has neither %q nor per-expert %q tensors", ErrUnsupported, layer, stacked, name)
		}
		m, err := l.matrix(name, rows, cols)
		if err != nil {
			return nil, err
		}
		out[e] = m
	}
	return out, nil
}

// LoadOptions tune how a model is loaded.
type LoadOptions struct {
	// Threads is the total number of compute threads (0: GOMAXPROCS).
	Threads int
	// TensorParallel splits the model into this many shards (0 or 1: none).
	TensorParallel int
	// Quantization converts the weights at load: "auto" or "" keeps the
	// file's types; "bf16", "int8" (Q8_0) and "int4" (Q4_0) convert
	// higher-precision weights, never upcasting (see ParseQuantization).
	Quantization string
	// Progress, if set, receives the bytes converted so far and the total
	// while weights are quantized at load or uploaded to a Device.
	Progress func(done, total int64)
	// ExpertParallel places whole experts on shards (expert e on shard
	// e mod TensorParallel) instead of splitting every expert's
	// intermediate dimension.
	ExpertParallel bool
	// Device, if set, opens the accelerator that runs the layers; the
	// weights are uploaded to it as they are converted. Nil: the CPU.
	Device AcceleratorFactory
}

// Open maps a model and loads it: a GGUF file, or a Hugging Face
// checkpoint (a directory with config.json, tokenizer.json and safetensors
// weights, or its .safetensors or .safetensors.index.json file; see
// OpenHF). A file is recognised by its content, not its name.
func Open(path string, opts LoadOptions) (*Model, error) {
	path, hf, err := modelPath(path)
	if err != nil {
		return nil, err
	}
	if hf {
		return OpenHF(path, opts)
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	m, err := FromGGUF(f, opts)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	m.closer = f.Close
	return m, nil
}

// FromGGUF builds a model from a parsed GGUF file. The model refers to the
// file's data, which must stay mapped while the model is in use.
func FromGGUF(f *gguf.File, opts LoadOptions) (*Model, error) {
	c, err := ConfigFromGGUF(f)
	if err != nil {
		return nil, err
	}
	w, err := weightsFromGGUF(f, c)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return nil, err
	}
	return New(c, w, tok, opts)
}

// ggufKeys names the GGUF keys behind Config's fields, for errors.
var ggufKeys = map[string]string{
	"layers": "llama.block_count", "embedding size": "llama.embedding_length", "heads": "llama.attention.head_count",
	"kv heads": "llama.attention.head_count_kv", "head dim": "llama.rope.dimension_count", "feed-forward size": "llama.feed_forward_length",
	"experts": "llama.expert_count", "experts used": "llama.expert_used_count", "vocabulary size": "tokenizer.ggml.tokens",
	"context length": "llama.context_length", "rope theta": "llama.rope.freq_base", "norm epsilon": "llama.attention.layer_norm_rms_epsilon",
	"sliding window": "llama.attention.sliding_window",
}
