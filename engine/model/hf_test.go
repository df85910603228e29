package model_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/internal/logitcheck"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/safetensors"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

// hfPair writes a generated model as GGUF and, through modelgen.ExportHF,
// as a Hugging Face checkpoint (rotate_half Q/K order, per-expert tensors,
// config.json, tokenizer.json), returning both paths.
func hfPair(t *testing.T, c modelgen.Config, opts modelgen.HFOptions) (ggufPath, hfDir string) {
	t.Helper()
	dir := t.TempDir()
	ggufPath, hfDir = filepath.Join(dir, "m.gguf"), filepath.Join(dir, "hf")
	if err := modelgen.Write(ggufPath, c); err != nil {
		t.Fatal(err)
	}
	if err := modelgen.ExportHF(ggufPath, hfDir, opts); err != nil {
		t.Fatal(err)
	}
	return ggufPath, hfDir
}

// logits runs the prompt through the model at path and returns every
// position's logits.
func logits(t *testing.T, path string, opts model.LoadOptions, prompt []int32) []float32 {
	t.Helper()
	if opts.Threads == 0 {
		opts.Threads = 2
	}
	m, err := model.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out, err := m.NewSession(0).Prefill(prompt, true)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// formatTolerance bounds the HF-vs-GGUF logit difference. The two files
// order Q and K's head dimensions differently (rotate_half against
// interleaved pairs), so attention sums in another order; in F32 that stays
// at rounding level (the 1e-4), but F16 and BF16 models round their
// activations to the weight type, where a last-bit difference can move a
// value by one half-precision step, so those get llama.cpp parity's bounds.
var formatTolerance = map[tensor.DType]float64{tensor.F32: 1e-4, tensor.F16: 5e-3, tensor.BF16: 0.05}

var parityPrompt = []int32{1, 300, 301, 302, 350, 420, 299, 310, 311, 460, 303, 305, 400, 401, 330, 331}

func TestHFCheckpointGivesTheGGUFLogits(t *testing.T) {
	tiny, _ := modelgen.Preset("tiny")
	cases := []struct {
		name string
		edit func(*modelgen.Config)
		opts modelgen.HFOptions
	}{
		{"f32 gqa2 top2 4 experts", nil, modelgen.HFOptions{}},
		{"f32 gqa1 top1 sharded", func(c *modelgen.Config) { c.KVHeads, c.TopK = c.Heads, 1 }, modelgen.HFOptions{MaxShardBytes: 100 << 10}},
		{"f32 gqa4 8 experts per-expert gguf layout, 3 layers", func(c *modelgen.Config) {
			c.Heads, c.KVHeads, c.Experts, c.Layers, c.PerExpert = 8, 2, 8, 3, true
		}, modelgen.HFOptions{}},
		{"f32 dense (one expert: a Mistral checkpoint)", func(c *modelgen.Config) { c.Experts, c.TopK = 1, 1 }, modelgen.HFOptions{}},
		{"f16 stays f16", func(c *modelgen.Config) { c.Type = tensor.F16 }, modelgen.HFOptions{}},
		{"bf16 stays bf16", func(c *modelgen.Config) { c.Type = tensor.BF16 }, modelgen.HFOptions{MaxShardBytes: 200 << 10}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tiny
			c.Seed = uint64(len(tc.name))
			if tc.edit != nil {
				tc.edit(&c)
			}
			g, h := hfPair(t, c, tc.opts)
			want := logits(t, g, model.LoadOptions{}, parityPrompt)
			got := logits(t, h, model.LoadOptions{}, parityPrompt)
			worst, _ := logitcheck.Diff(got, want, len(got)/len(parityPrompt))
			tol := formatTolerance[c.Type]
			t.Logf("max |Δlogit| HF vs GGUF: %.3g (tolerance %g)", worst, tol)
			if worst > tol {
				t.Fatalf("max logit difference %.3g exceeds %g", worst, tol)
			}
		})
	}
}

func TestHFCheckpointLoadsWithMixtralShapeAndTokenizer(t *testing.T) {
	c, _ := modelgen.Preset("tiny")
	c.Vocab = "mistral"
	g, h := hfPair(t, c, modelgen.HFOptions{MaxShardBytes: 1 << 20})
	mg, err := model.Open(g, model.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer mg.Close()
	for _, path := range []string{h, filepath.Join(h, safetensors.IndexName)} {
		mh, err := model.Open(path, model.LoadOptions{Threads: 1})
		if err != nil {
			t.Fatal(err)
		}
		want := mg.Config
		want.Rope = model.RopeHalf
		if mh.Config != want {
			t.Errorf("config\n HF   %+v\n GGUF %+v", mh.Config, want)
		}
		text := "[INST] Wie geht's? 😀 [/INST]\n  code := 42"
		if got, want := mh.Tokenizer.Encode(text, true), mg.Tokenizer.Encode(text, true); !slices.Equal(got, want) {
			t.Errorf("tokens\n HF   %v\n GGUF %v", got, want)
		}
		mh.Close()
	}
}

// TestOnLoadQuantizationOfHFMatchesGGUF holds the HF checkpoint quantized at
// load to the GGUF file quantized the same ways (at load, and by
// QuantizeFile), and reports both against the F32 logits.
func TestOnLoadQuantizationOfHFMatchesGGUF(t *testing.T) {
	c, _ := modelgen.Preset("tiny")
	c.Layers, c.Seed = 3, 7
	g, h := hfPair(t, c, modelgen.HFOptions{})
	ref := logits(t, g, model.LoadOptions{}, parityPrompt)
	V := len(ref) / len(parityPrompt)
	for _, q := range []struct {
		name string
		typ  tensor.DType
	}{{"int8", tensor.Q8_0}, {"int4", tensor.Q4_0}} {
		t.Run(q.name, func(t *testing.T) {
			var progressed int64
			hq := logits(t, h, model.LoadOptions{Quantization: q.name, Progress: func(done, total int64) {
				if done > total {
					t.Errorf("progress %d of %d", done, total)
				}
				progressed = done
			}}, parityPrompt)
			if progressed == 0 {
				t.Error("no quantization progress reported")
			}
			gq := logits(t, g, model.LoadOptions{Quantization: q.name}, parityPrompt)
			file := filepath.Join(t.TempDir(), "q.gguf")
			pool := tensor.NewPool(2)
			err := model.QuantizeFile(g, file, q.typ, pool, nil)
			pool.Close()
			if err != nil {
				t.Fatal(err)
			}
			fq := logits(t, file, model.LoadOptions{}, parityPrompt)
			// Quantization works on rows, and the HF checkpoint differs only
			// by a permutation of Q/K rows, so the quantized weights are the
			// same numbers: the logits agree as closely as at F32, far inside
			// the 0.15 that Q8_0/Q4_0 are held to against llama.cpp.
			for _, other := range []struct {
				name string
				l    []float32
			}{{"GGUF quantized at load", gq}, {"GGUF quantized by QuantizeFile", fq}} {
				worst, median := logitcheck.Diff(hq, other.l, V)
				t.Logf("HF %s vs %s: max |Δlogit| %.3g, median position %.3g", q.name, other.name, worst, median)
				if worst > 1e-3 {
					t.Errorf("HF %s differs from %s by %.3g", q.name, other.name, worst)
				}
			}
			// Against F32 the error is the quantization's own, large on a
			// 64-wide random model at 4 bits; only a gross bound is held.
			worst, median := logitcheck.Diff(hq, ref, V)
			t.Logf("HF %s vs F32: max |Δlogit| %.3g, median position %.3g", q.name, worst, median)
			if sanity := map[string]float64{"int8": 0.5, "int4": 3}[q.name]; worst > sanity {
				t.Errorf("HF %s differs from F32 by %.3g, more than %g", q.name, worst, sanity)
			}
		})
	}
}

func TestHFConfigOfMixtral8x7B(t *testing.T) {
	// The published Mixtral-8x7B-v0.1 config.json, less fields the engine ignores.
	js := `{"architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
	"hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
	"max_position_embeddings": 32768, "model_type": "mixtral", "num_attention_heads": 32, "num_experts_per_tok": 2,
	"num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8, "output_router_logits": false,
	"rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02, "sliding_window": null,
	"tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true, "vocab_size": 32000}`
	c, err := model.ConfigFromHF([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	want := model.Config{Layers: 32, Dim: 4096, Heads: 32, KVHeads: 8, HeadDim: 128, FFN: 14336, Experts: 8, TopK: 2,
		Vocab: 32000, Context: 32768, RopeTheta: 1e6, NormEps: 1e-5, Rope: model.RopeHalf}
	if c != want {
		t.Errorf("config\n got  %+v\n want %+v", c, want)
	}
	// Mistral-7B-v0.1: dense, sliding window 4096, rope theta 1e4.
	mistral := `{"architectures": ["MistralForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
	"max_position_embeddings": 32768, "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 32,
	"num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "sliding_window": 4096, "vocab_size": 32000}`
	c, err = model.ConfigFromHF([]byte(mistral))
	if err != nil {
		t.Fatal(err)
	}
	if c.Experts != 1 || c.TopK != 1 || c.SlidingWindow != 4096 || c.RopeTheta != 1e4 || c.HeadDim != 128 {
		t.Errorf("mistral config %+v", c)
	}
}

func TestBadHFCheckpointsAreRefusedWithAReason(t *testing.T) {
	c, _ := modelgen.Preset("tiny")
	_, good := hfPair(t, c, modelgen.HFOptions{})
	clone := func(t *testing.T, edit func(dir string)) string {
		dir := t.TempDir()
		entries, _ := os.ReadDir(good)
		for _, e := range entries {
			b, _ := os.ReadFile(filepath.Join(good, e.Name()))
			os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644)
		}
		edit(dir)
		return dir
	}
	editJSON := func(file string, f func(m map[string]any)) func(dir string) {
		return func(dir string) {
			p := filepath.Join(dir, file)
			b, _ := os.ReadFile(p)
			var m map[string]any
			json.Unmarshal(b, &m)
			f(m)
			b, _ = json.Marshal(m)
			os.WriteFile(p, b, 0o644)
		}
	}
	rewrite := func(f func(ts []safetensors.Tensor) []safetensors.Tensor) func(dir string) {
		return func(dir string) {
			ck, err := safetensors.OpenCheckpoint(dir)
			if err != nil {
				t.Fatal(err)
			}
			var ts []safetensors.Tensor
			for _, name := range ck.Names() {
				info, data, _ := ck.Tensor(name)
				d := append([]byte(nil), data...)
				ts = append(ts, safetensors.Tensor{Name: name, DType: info.DType, Shape: info.Shape, Data: func() ([]byte, error) { return d, nil }})
			}
			ck.Close()
			if err := safetensors.WriteFile(filepath.Join(dir, safetensors.SingleName), f(ts), nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name string
		edit func(dir string)
		want string
	}{
		{"no config.json", func(dir string) { os.Remove(filepath.Join(dir, "config.json")) }, "needs its config.json"},
		{"no tokenizer.json", func(dir string) { os.Remove(filepath.Join(dir, "tokenizer.json")) }, "tokenizer.json is missing"},
		{"unsupported architecture", editJSON("config.json", func(m map[string]any) { m["model_type"] = "qwen2_moe" }), `model_type "qwen2_moe"`},
		{"rope scaling", editJSON("config.json", func(m map[string]any) { m["rope_scaling"] = map[string]any{"type": "yarn", "factor": 4} }), `RoPE scaling "yarn"`},
		{"vocabulary size disagrees", editJSON("config.json", func(m map[string]any) { m["vocab_size"] = 600 }), "vocab_size 600"},
		{"shape disagrees", editJSON("config.json", func(m map[string]any) { m["intermediate_size"] = 96 }), "has shape"},
		// config.json is untrusted: sizes are bounded before anything is allocated from them.
		{"a huge vocabulary", editJSON("config.json", func(m map[string]any) { m["vocab_size"] = 1 << 40 }), "vocab_size (vocabulary size) is 1099511627776, more than"},
		{"a million layers", editJSON("config.json", func(m map[string]any) { m["num_hidden_layers"] = 1 << 20 }), "num_hidden_layers (layers) is 1048576"},
		{"a huge hidden size", editJSON("config.json", func(m map[string]any) { m["hidden_size"] = 1 << 30 }), "hidden_size (embedding size)"},
		{"many experts", editJSON("config.json", func(m map[string]any) { m["num_local_experts"] = 1 << 16 }), "num_local_experts (experts) is 65536"},
		{"negative heads", editJSON("config.json", func(m map[string]any) { m["num_attention_heads"] = -4 }), "num_attention_heads (heads) is -4, want > 0"},
		{"a huge context", editJSON("config.json", func(m map[string]any) { m["max_position_embeddings"] = 1 << 40 }), "max_position_embeddings (context length)"},
		{"a zero rope theta", editJSON("config.json", func(m map[string]any) { m["rope_theta"] = 0 }), "rope_theta (rope theta) is 0"},
		{"a negative norm epsilon", editJSON("config.json", func(m map[string]any) { m["rms_norm_eps"] = -1 }), "rms_norm_eps (norm epsilon) is -1"},
		{"a norm epsilon too big for float32", editJSON("config.json", func(m map[string]any) { m["rms_norm_eps"] = 1e300 }), "rms_norm_eps (norm epsilon) is +Inf"},
		{"missing tensor", rewrite(func(ts []safetensors.Tensor) []safetensors.Tensor {
			return slices.DeleteFunc(ts, func(x safetensors.Tensor) bool {
				return x.Name == "model.layers.1.block_sparse_moe.experts.3.w2.weight"
			})
		}), `"model.layers.1.block_sparse_moe.experts.3.w2.weight" is missing`},
		{"integer weights", rewrite(func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if ts[i].Name == "model.layers.0.self_attn.q_proj.weight" {
					ts[i].DType = safetensors.I32
				}
			}
			return ts
		}), "dtype I32"},
		{"truncated weights", func(dir string) {
			p := filepath.Join(dir, safetensors.SingleName)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-100], 0o644)
		}, "truncated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := model.Open(clone(t, tt.edit), model.LoadOptions{Threads: 1})
			if err == nil {
				m.Close()
				t.Fatal("loaded without error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
	if _, err := model.Open(t.TempDir(), model.LoadOptions{}); !errors.Is(err, model.ErrUnsupported) {
		t.Errorf("empty directory: %v", err)
	}
}

// FuzzConfigFromHF holds config.json to its contract: it is untrusted, so
// it is refused with a reason or gives a configuration within the engine's
// bounds, whose sizes multiply without overflow.
func FuzzConfigFromHF(f *testing.F) {
	for _, s := range []string{
		`{"model_type":"mixtral","hidden_size":4096,"intermediate_size":14336,"max_position_embeddings":32768,"num_attention_heads":32,"num_experts_per_tok":2,"num_hidden_layers":32,"num_key_value_heads":8,"num_local_experts":8,"rms_norm_eps":1e-05,"rope_theta":1000000.0,"vocab_size":32000}`,
		`{"model_type":"mistral","hidden_size":64,"intermediate_size":128,"max_position_embeddings":512,"num_attention_heads":4,"num_hidden_layers":2,"vocab_size":512,"sliding_window":4096}`,
		`{"model_type":"llama","hidden_size":64,"intermediate_size":128,"max_position_embeddings":512,"num_attention_heads":4,"num_hidden_layers":2,"vocab_size":512,"head_dim":16}`,
		`{"model_type":"mixtral","hidden_size":1099511627776,"num_local_experts":-1,"rope_theta":0}`,
		`{"model_type":"mixtral","rope_scaling":{"type":"yarn"}}`,
		`{}`, `[]`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, js []byte) {
		c, err := model.ConfigFromHF(js)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a reason")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted a configuration that does not validate: %v", err)
		}
		if c.Layers > model.MaxLayers || c.Dim > model.MaxDim || c.Vocab > model.MaxVocab || c.Context > model.MaxContext ||
			c.Experts > model.MaxExperts || c.FFN > model.MaxFFN || c.HeadDim > model.MaxHeadDim || c.Heads > model.MaxHeads {
			t.Fatalf("accepted sizes past the bounds: %+v", c)
		}
		if total, active := c.Params(); total <= 0 || active <= 0 || active > total {
			t.Fatalf("parameter counts %d total, %d active for %+v", total, active, c)
		}
	})
}
