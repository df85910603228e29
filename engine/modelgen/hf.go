package modelgen

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/moe-operator/moe-operator/engine/gguf"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/safetensors"
	"github.com/moe-operator/moe-operator/engine/tensor"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// HFOptions tune ExportHF.
type HFOptions struct {
	// DType of the weight matrices: F32, F16 or BF16; 0 keeps the file's
	// type (which must then be one of those).
	DType tensor.DType
	// MaxShardBytes splits the weights into shards of about this size
	// with a model.safetensors.index.json (0: one model.safetensors).
	MaxShardBytes int64
}

// ExportHF writes the llama-architecture GGUF model at ggufPath as a Hugging
// Face checkpoint in dir, the layout transformers' MixtralForCausalLM (or
// MistralForCausalLM, for one expert) loads: config.json, tokenizer.json,
// tokenizer_config.json and safetensors weights. The GGUF file must hold
// unquantized weights (F32, F16 or BF16).
//
// GGUF's converter permuted the rows of Q and K so that llama.cpp's
// adjacent-pair RoPE computes HF's rotate_half; within each head of
// headDim rows, GGUF row 2j+i holds HF row i*headDim/2+j (i in {0,1}).
// ExportHF undoes that, so the checkpoint is in HF's own order and runs
// with rotate_half. Stacked experts are written one by one
// (block_sparse_moe.experts.E.w1/w3/w2).
func ExportHF(ggufPath, dir string, opts HFOptions) error {
	f, err := gguf.Open(ggufPath)
	if err != nil {
		return err
	}
	defer f.Close()
	c, err := model.ConfigFromGGUF(f)
	if err != nil {
		return err
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	x := &exporter{f: f, c: c, dtype: opts.DType}
	var ts []safetensors.Tensor
	add := func(hfName, ggufName string, rows, cols int, perm int) error {
		t, err := x.tensor(hfName, ggufName, rows, cols, perm, -1)
		ts = append(ts, t)
		return err
	}
	steps := []error{add("model.embed_tokens.weight", "token_embd.weight", c.Vocab, c.Dim, 0)}
	for l := 0; l < c.Layers; l++ {
		hp, gp := fmt.Sprintf("model.layers.%d.", l), fmt.Sprintf("blk.%d.", l)
		steps = append(steps,
			add(hp+"input_layernorm.weight", gp+"attn_norm.weight", 0, c.Dim, 0),
			add(hp+"self_attn.q_proj.weight", gp+"attn_q.weight", c.QDim(), c.Dim, c.Heads),
			add(hp+"self_attn.k_proj.weight", gp+"attn_k.weight", c.KVDim(), c.Dim, c.KVHeads),
			add(hp+"self_attn.v_proj.weight", gp+"attn_v.weight", c.KVDim(), c.Dim, 0),
			add(hp+"self_attn.o_proj.weight", gp+"attn_output.weight", c.Dim, c.QDim(), 0),
			add(hp+"post_attention_layernorm.weight", gp+"ffn_norm.weight", 0, c.Dim, 0),
		)
		if c.Experts == 1 {
			for _, p := range []struct{ hf, gg string }{{"gate_proj", "gate"}, {"up_proj", "up"}, {"down_proj", "down"}} {
				rows, cols := c.FFN, c.Dim
				if p.gg == "down" {
					rows, cols = c.Dim, c.FFN
				}
				t, err := x.expert(hp+"mlp."+p.hf+".weight", gp, p.gg, 0, rows, cols)
				ts, steps = append(ts, t), append(steps, err)
			}
			continue
		}
		steps = append(steps, add(hp+"block_sparse_moe.gate.weight", gp+"ffn_gate_inp.weight", c.Experts, c.Dim, 0))
		for e := 0; e < c.Experts; e++ {
			for _, p := range []struct{ hf, gg string }{{"w1", "gate"}, {"w2", "down"}, {"w3", "up"}} {
				rows, cols := c.FFN, c.Dim
				if p.gg == "down" {
					rows, cols = c.Dim, c.FFN
				}
				t, err := x.expert(fmt.Sprintf("%sblock_sparse_moe.experts.%d.%s.weight", hp, e, p.hf), gp, p.gg, e, rows, cols)
				ts, steps = append(ts, t), append(steps, err)
			}
		}
	}
	steps = append(steps, add("model.norm.weight", "output_norm.weight", 0, c.Dim, 0))
	tied := true
	if _, ok := f.Tensor("output.weight"); ok {
		tied = false
		steps = append(steps, add("lm_head.weight", "output.weight", c.Vocab, c.Dim, 0))
	}
	for _, err := range steps {
		if err != nil {
			return err
		}
	}
	if _, err := safetensors.WriteCheckpoint(dir, ts, opts.MaxShardBytes); err != nil {
		return err
	}

	tj, tcj, err := tok.Vocab().HFJSON()
	if err != nil {
		return err
	}
	cfg, err := hfConfigJSON(c, x.outType(), tied, tok.Vocab())
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{"config.json": cfg, "tokenizer.json": tj, "tokenizer_config.json": tcj} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// hfConfigJSON writes a transformers config.json for c.
func hfConfigJSON(c model.Config, t tensor.DType, tied bool, v tokenizer.Vocab) ([]byte, error) {
	dtype := map[tensor.DType]string{tensor.F32: "float32", tensor.F16: "float16", tensor.BF16: "bfloat16"}[t]
	cfg := map[string]any{
		"hidden_size": c.Dim, "num_hidden_layers": c.Layers, "num_attention_heads": c.Heads,
		"num_key_value_heads": c.KVHeads, "head_dim": c.HeadDim, "intermediate_size": c.FFN,
		"vocab_size": c.Vocab, "max_position_embeddings": c.Context, "rope_theta": c.RopeTheta,
		"rms_norm_eps": c.NormEps, "hidden_act": "silu", "tie_word_embeddings": tied, "torch_dtype": dtype,
		"bos_token_id": v.BOS, "eos_token_id": v.EOS, "attention_dropout": 0.0, "initializer_range": 0.02,
		"use_cache": true, "_name_or_path": c.Name,
	}
	if c.SlidingWindow > 0 {
		cfg["sliding_window"] = c.SlidingWindow
	} else {
		cfg["sliding_window"] = nil
	}
	if c.Experts > 1 {
		cfg["architectures"] = []string{"MixtralForCausalLM"}
		cfg["model_type"] = "mixtral"
		cfg["num_local_experts"] = c.Experts
		cfg["num_experts_per_tok"] = c.TopK
		cfg["output_router_logits"] = false
		cfg["router_aux_loss_coef"] = 0.02
	} else {
		cfg["architectures"] = []string{"MistralForCausalLM"}
		cfg["model_type"] = "mistral"
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	return append(b, '\n'), err
}

type exporter struct {
	f     *gguf.File
	c     model.Config
	dtype tensor.DType
}

// outType is the type matrices are written in.
func (x *exporter) outType() tensor.DType {
	if x.dtype != 0 {
		return x.dtype
	}
	if ti, ok := x.f.Tensor("blk.0.attn_q.weight"); ok {
		return ti.Type
	}
	return tensor.F32
}

// tensor describes GGUF tensor ggufName as HF tensor hfName: a vector of
// cols values when rows == 0, else a rows × cols matrix; heads > 0 undoes
// the Q/K row permutation over that many heads; expert >= 0 takes that
// expert's rows out of a stacked tensor.
func (x *exporter) tensor(hfName, ggufName string, rows, cols, heads, expert int) (safetensors.Tensor, error) {
	ti, ok := x.f.Tensor(ggufName)
	if !ok {
		return safetensors.Tensor{}, fmt.Errorf("modelgen: tensor %q is missing", ggufName)
	}
	src := ti.Type
	if src != tensor.F32 && src != tensor.F16 && src != tensor.BF16 {
		return safetensors.Tensor{}, fmt.Errorf("modelgen: tensor %q is %s; only F32, F16 and BF16 models can be exported as safetensors", ggufName, src)
	}
	dst := src
	shape := []int64{int64(rows), int64(cols)}
	if rows == 0 {
		shape, rows = []int64{int64(cols)}, 1
		dst = tensor.F32 // norms stay F32, as in the GGUF files modelgen writes
		if src != tensor.F32 && x.dtype != 0 {
			dst = x.dtype
		}
	} else if x.dtype != 0 {
		dst = x.dtype
	}
	st, ok := safetensors.FromEngine(dst)
	if !ok {
		return safetensors.Tensor{}, fmt.Errorf("modelgen: cannot export as %s", dst)
	}
	data, _ := x.f.TensorData(ggufName)
	srcRow, _ := src.RowBytes(cols)
	if expert >= 0 {
		data = data[expert*rows*srcRow : (expert+1)*rows*srcRow]
	}
	if len(data) != rows*srcRow {
		return safetensors.Tensor{}, fmt.Errorf("modelgen: tensor %q has %d bytes, want %d rows of %d", ggufName, len(data), rows, srcRow)
	}
	return safetensors.Tensor{Name: hfName, DType: st, Shape: shape, Data: func() ([]byte, error) {
		dstRow, _ := dst.RowBytes(cols)
		out := make([]byte, rows*dstRow)
		vals := make([]float32, cols)
		headDim := x.c.HeadDim
		for r := 0; r < rows; r++ {
			from := r
			if heads > 0 {
				// HF row r = head h, half i, index j comes from GGUF row h*headDim + 2j + i.
				h, k := r/headDim, r%headDim
				i, j := k/(headDim/2), k%(headDim/2)
				from = h*headDim + 2*j + i
			}
			row := data[from*srcRow : (from+1)*srcRow]
			if src == dst {
				copy(out[r*dstRow:], row)
				continue
			}
			tensor.Dequantize(vals, row, src, cols)
			tensor.Quantize(out[r*dstRow:(r+1)*dstRow], vals, dst, cols)
		}
		return out, nil
	}}, nil
}

// expert describes one expert's projection (or the dense model's) from
// either GGUF layout.
func (x *exporter) expert(hfName, prefix, kind string, e, rows, cols int) (safetensors.Tensor, error) {
	if _, ok := x.f.Tensor(prefix + "ffn_" + kind + "_exps.weight"); ok {
		return x.tensor(hfName, prefix+"ffn_"+kind+"_exps.weight", rows, cols, 0, e)
	}
	if _, ok := x.f.Tensor(prefix + "ffn_" + kind + ".weight"); ok && x.c.Experts == 1 {
		return x.tensor(hfName, prefix+"ffn_"+kind+".weight", rows, cols, 0, -1)
	}
	return x.tensor(hfName, fmt.Sprintf("%sffn_%s.%d.weight", prefix, kind, e), rows, cols, 0, -1)
}
