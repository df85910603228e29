package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/moe-operator/moe-operator/engine/safetensors"
	"github.com/moe-operator/moe-operator/engine/tensor"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// Hugging Face checkpoints: config.json, tokenizer.json (with
// tokenizer_config.json) and safetensors weights named as transformers
// names them. Their Q and K rows are in HF's order, so they run with
// RopeHalf; nothing is permuted at load.

// hfConfig is the part of a transformers config.json the engine reads.
// Pointers tell absent fields from zeros.
type hfConfig struct {
	Architectures     []string        `json:"architectures"`
	ModelType         string          `json:"model_type"`
	NameOrPath        string          `json:"_name_or_path"`
	HiddenSize        *int            `json:"hidden_size"`
	Layers            *int            `json:"num_hidden_layers"`
	Heads             *int            `json:"num_attention_heads"`
	KVHeads           *int            `json:"num_key_value_heads"`
	HeadDim           *int            `json:"head_dim"`
	Intermediate      *int            `json:"intermediate_size"`
	Experts           *int            `json:"num_local_experts"`
	ExpertsPerTok     *int            `json:"num_experts_per_tok"`
	Vocab             *int            `json:"vocab_size"`
	MaxPositions      *int            `json:"max_position_embeddings"`
	RopeTheta         *float64        `json:"rope_theta"`
	RMSNormEps        *float64        `json:"rms_norm_eps"`
	SlidingWindow     *int            `json:"sliding_window"`
	RopeScaling       json.RawMessage `json:"rope_scaling"`
	HiddenAct         string          `json:"hidden_act"`
	AttentionBias     bool            `json:"attention_bias"`
	MLPBias           bool            `json:"mlp_bias"`
	TieWordEmbeddings *bool           `json:"tie_word_embeddings"`
}

// ConfigFromHF reads a transformers config.json of a Mixtral
// (model_type "mixtral") or a dense Mistral or Llama model (run as one
// expert). Absent optional fields take transformers' defaults for the
// model type.
func ConfigFromHF(b []byte) (Config, error) {
	var h hfConfig
	if err := json.Unmarshal(b, &h); err != nil {
		return Config{}, fmt.Errorf("%w: config.json: %v", ErrConfig, err)
	}
	mt := h.ModelType
	if mt == "" && len(h.Architectures) > 0 {
		mt = strings.ToLower(strings.TrimSuffix(h.Architectures[0], "ForCausalLM"))
	}
	c := Config{Name: h.NameOrPath, Rope: RopeHalf, Experts: 1, TopK: 1}
	var eps float64
	switch mt {
	case "mixtral":
		c.RopeTheta, eps, c.Experts, c.TopK = 1e6, 1e-5, 8, 2
	case "mistral":
		c.RopeTheta, eps = 1e4, 1e-6
	case "llama":
		c.RopeTheta, eps = 1e4, 1e-6
	default:
		return Config{}, fmt.Errorf("%w: model_type %q; this engine runs Mixtral-architecture models (mixtral, or dense mistral/llama)", ErrUnsupported, mt)
	}
	if h.HiddenAct != "" && h.HiddenAct != "silu" {
		return Config{}, fmt.Errorf("%w: hidden_act %q (the engine's experts use SiLU)", ErrUnsupported, h.HiddenAct)
	}
	if h.AttentionBias || h.MLPBias {
		return Config{}, fmt.Errorf("%w: attention or MLP biases are not implemented", ErrUnsupported)
	}
	if len(h.RopeScaling) > 0 && string(h.RopeScaling) != "null" {
		var rs struct {
			Type     string `json:"type"`
			RopeType string `json:"rope_type"`
		}
		_ = json.Unmarshal(h.RopeScaling, &rs)
		if t := rs.RopeType + rs.Type; t != "default" && t != "" {
			return Config{}, fmt.Errorf("%w: RoPE scaling %q is not implemented", ErrUnsupported, t)
		}
	}
	required := []struct {
		name string
		v    *int
		dst  *int
	}{
		{"hidden_size", h.HiddenSize, &c.Dim}, {"num_hidden_layers", h.Layers, &c.Layers},
		{"num_attention_heads", h.Heads, &c.Heads}, {"intermediate_size", h.Intermediate, &c.FFN},
		{"vocab_size", h.Vocab, &c.Vocab}, {"max_position_embeddings", h.MaxPositions, &c.Context},
	}
	for _, r := range required {
		if r.v == nil {
			return Config{}, fmt.Errorf("%w: config.json has no %s", ErrConfig, r.name)
		}
		*r.dst = *r.v
	}
	for _, o := range []struct {
		v   *int
		dst *int
	}{{h.KVHeads, &c.KVHeads}, {h.HeadDim, &c.HeadDim}, {h.Experts, &c.Experts}, {h.ExpertsPerTok, &c.TopK}, {h.SlidingWindow, &c.SlidingWindow}} {
		if o.v != nil {
			*o.dst = *o.v
		}
	}
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	if c.HeadDim == 0 && c.Heads > 0 {
		c.HeadDim = c.Dim / c.Heads
	}
	if c.Experts == 1 {
		c.TopK = 1
	}
	if h.RopeTheta != nil {
		c.RopeTheta = *h.RopeTheta
	}
	if h.RMSNormEps != nil {
		eps = *h.RMSNormEps
	}
	c.NormEps = float32(eps)
	return c, c.validate(hfKeys)
}

// hfLoader binds checkpoint tensors by their transformers names.
type hfLoader struct{ ck *safetensors.Checkpoint }

func (l hfLoader) tensor(name string, shape ...int) (tensor.DType, []byte, error) {
	info, data, ok := l.ck.Tensor(name)
	if !ok {
		return 0, nil, fmt.Errorf("%w: tensor %q is missing", ErrUnsupported, name)
	}
	match := len(info.Shape) == len(shape)
	for i := 0; match && i < len(shape); i++ {
		match = info.Shape[i] == int64(shape[i])
	}
	if !match {
		return 0, nil, fmt.Errorf("%w: tensor %q has shape %v, want %v", ErrUnsupported, name, info.Shape, shape)
	}
	t, ok := info.DType.Engine()
	if !ok {
		return 0, nil, fmt.Errorf("%w: tensor %q has dtype %s; the engine loads F32, F16 and BF16 safetensors", ErrUnsupported, name, info.DType)
	}
	return t, data, nil
}

// matrix binds a [rows, cols] (PyTorch [out, in]) tensor.
func (l hfLoader) matrix(name string, rows, cols int) (*tensor.Matrix, error) {
	t, data, err := l.tensor(name, rows, cols)
	if err != nil {
		return nil, err
	}
	return tensor.NewMatrix(t, rows, cols, data)
}

func (l hfLoader) vector(name string, n int) ([]float32, error) {
	t, data, err := l.tensor(name, n)
	if err != nil {
		return nil, err
	}
	out := make([]float32, n)
	tensor.Dequantize(out, data, t, n)
	return out, nil
}

// weightsFromHF binds a checkpoint's tensors to Weights, checking every
// shape and type. Mixtral names its experts
// model.layers.N.block_sparse_moe.experts.E.{w1,w3,w2} (gate, up, down);
// dense models use model.layers.N.mlp.{gate,up,down}_proj.
func weightsFromHF(ck *safetensors.Checkpoint, c Config, tied bool) (*Weights, error) {
	l := hfLoader{ck}
	w := &Weights{Layers: make([]LayerWeights, c.Layers), Mapped: ck.Mapped()}
	var err error
	if w.Embed, err = l.matrix("model.embed_tokens.weight", c.Vocab, c.Dim); err != nil {
		return nil, err
	}
	if w.OutNorm, err = l.vector("model.norm.weight", c.Dim); err != nil {
		return nil, err
	}
	if _, _, ok := ck.Tensor("lm_head.weight"); ok {
		if w.Output, err = l.matrix("lm_head.weight", c.Vocab, c.Dim); err != nil {
			return nil, err
		}
	} else if tied {
		w.Output = w.Embed
	} else {
		return nil, fmt.Errorf("%w: tensor \"lm_head.weight\" is missing and config.json does not tie it to the embedding", ErrUnsupported)
	}
	for i := range w.Layers {
		lw := &w.Layers[i]
		p := fmt.Sprintf("model.layers.%d.", i)
		steps := []func() error{
			func() (err error) { lw.AttnNorm, err = l.vector(p+"input_layernorm.weight", c.Dim); return },
			func() (err error) { lw.Wq, err = l.matrix(p+"self_attn.q_proj.weight", c.QDim(), c.Dim); return },
			func() (err error) { lw.Wk, err = l.matrix(p+"self_attn.k_proj.weight", c.KVDim(), c.Dim); return },
			func() (err error) { lw.Wv, err = l.matrix(p+"self_attn.v_proj.weight", c.KVDim(), c.Dim); return },
			func() (err error) { lw.Wo, err = l.matrix(p+"self_attn.o_proj.weight", c.Dim, c.QDim()); return },
			func() (err error) {
				lw.FFNNorm, err = l.vector(p+"post_attention_layernorm.weight", c.Dim)
				return
			},
		}
		moe := p + "block_sparse_moe."
		if _, _, ok := ck.Tensor(moe + "gate.weight"); ok || c.Experts > 1 {
			steps = append(steps, func() (err error) { lw.Router, err = l.matrix(moe+"gate.weight", c.Experts, c.Dim); return })
			lw.Gate, lw.Up, lw.Down = make([]*tensor.Matrix, c.Experts), make([]*tensor.Matrix, c.Experts), make([]*tensor.Matrix, c.Experts)
			for e := 0; e < c.Experts; e++ {
				ep := fmt.Sprintf("%sexperts.%d.", moe, e)
				steps = append(steps,
					func() (err error) { lw.Gate[e], err = l.matrix(ep+"w1.weight", c.FFN, c.Dim); return },
					func() (err error) { lw.Up[e], err = l.matrix(ep+"w3.weight", c.FFN, c.Dim); return },
					func() (err error) { lw.Down[e], err = l.matrix(ep+"w2.weight", c.Dim, c.FFN); return })
			}
		} else {
			lw.Gate, lw.Up, lw.Down = make([]*tensor.Matrix, 1), make([]*tensor.Matrix, 1), make([]*tensor.Matrix, 1)
			steps = append(steps,
				func() (err error) { lw.Gate[0], err = l.matrix(p+"mlp.gate_proj.weight", c.FFN, c.Dim); return },
				func() (err error) { lw.Up[0], err = l.matrix(p+"mlp.up_proj.weight", c.FFN, c.Dim); return },
				func() (err error) { lw.Down[0], err = l.matrix(p+"mlp.down_proj.weight", c.Dim, c.FFN); return })
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return nil, err
			}
		}
		if c.Experts == 1 {
			lw.Router = nil
		}
	}
	return w, nil
}

// HF file names beside the weights.
const (
	hfConfigName          = "config.json"
	hfTokenizerName       = "tokenizer.json"
	hfTokenizerConfigName = "tokenizer_config.json"
)

// OpenHF maps a Hugging Face checkpoint (see safetensors.Locate for the
// forms path may take) and loads the model, with config.json, tokenizer.json
// and tokenizer_config.json (optional) from the checkpoint's directory.
func OpenHF(path string, opts LoadOptions) (*Model, error) {
	dir, _, err := safetensors.Locate(path)
	if err != nil {
		return nil, err
	}
	cfgJSON, err := os.ReadFile(filepath.Join(dir, hfConfigName))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: a Hugging Face checkpoint needs its config.json: %v", ErrUnsupported, dir, err)
	}
	c, err := ConfigFromHF(cfgJSON)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, hfConfigName), err)
	}
	if c.Name == "" {
		c.Name = filepath.Base(dir)
	}
	var tied hfConfig
	_ = json.Unmarshal(cfgJSON, &tied)
	tokJSON, err := os.ReadFile(filepath.Join(dir, hfTokenizerName))
	if err != nil {
		hint := ""
		if _, e := os.Stat(filepath.Join(dir, "tokenizer.model")); e == nil {
			hint = " (tokenizer.model, SentencePiece's own format, is not read: the repository's tokenizer.json is)"
		}
		return nil, fmt.Errorf("%w: %s: tokenizer.json is missing%s", ErrUnsupported, dir, hint)
	}
	tokCfg, err := os.ReadFile(filepath.Join(dir, hfTokenizerConfigName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	tok, err := tokenizer.FromHFJSON(tokJSON, tokCfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, hfTokenizerName), err)
	}
	if tok.Size() != c.Vocab {
		return nil, fmt.Errorf("%w: %s: tokenizer.json has %d pieces but config.json says vocab_size %d", ErrConfig, dir, tok.Size(), c.Vocab)
	}
	ck, err := safetensors.OpenCheckpoint(path)
	if err != nil {
		return nil, err
	}
	w, err := weightsFromHF(ck, c, tied.TieWordEmbeddings != nil && *tied.TieWordEmbeddings)
	var m *Model
	if err == nil {
		m, err = New(c, w, tok, opts)
	}
	if err != nil {
		ck.Close()
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	m.closer = ck.Close
	return m, nil
}

// modelPath decides how Open reads path: a Hugging Face checkpoint (a
// directory holding safetensors, a .safetensors file or an index) or a
// GGUF file, recognised by its magic. A directory with no safetensors but
// exactly one .gguf file stands for that file.
func modelPath(path string) (p string, hf bool, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", false, err
	}
	if st.IsDir() {
		if _, _, err := safetensors.Locate(path); err == nil {
			return path, true, nil
		}
		ggufs, _ := filepath.Glob(filepath.Join(path, "*.gguf"))
		if len(ggufs) == 1 {
			return ggufs[0], false, nil
		}
		return "", false, fmt.Errorf("%w: %s holds neither a Hugging Face checkpoint (config.json, tokenizer.json, *.safetensors) nor a single .gguf file", ErrUnsupported, path)
	}
	if f, err := os.Open(path); err == nil {
		var magic [4]byte
		_, _ = f.Read(magic[:])
		f.Close()
		if string(magic[:]) == "GGUF" {
			return path, false, nil
		}
	}
	if strings.HasSuffix(path, ".safetensors") || strings.HasSuffix(path, ".json") {
		return path, true, nil
	}
	return path, false, nil
}

// hfKeys names the config.json keys behind Config's fields, for errors.
var hfKeys = map[string]string{
	"layers": "num_hidden_layers", "embedding size": "hidden_size", "heads": "num_attention_heads",
	"kv heads": "num_key_value_heads", "head dim": "head_dim", "feed-forward size": "intermediate_size",
	"experts": "num_local_experts", "experts used": "num_experts_per_tok", "vocabulary size": "vocab_size",
	"context length": "max_position_embeddings", "rope theta": "rope_theta", "norm epsilon": "rms_norm_eps",
	"sliding window": "sliding_window",
}
