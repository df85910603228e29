package model_test

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/gguf"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

func tinyModel(t *testing.T, edit func(*modelgen.Config)) string {
	t.Helper()
	c, _ := modelgen.Preset("tiny")
	if edit != nil {
		edit(&c)
	}
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := modelgen.Write(path, c); err != nil {
		t.Fatal(err)
	}
	return path
}

// rewrite copies a GGUF file, letting edit change metadata and tensors.
func rewrite(t *testing.T, in string, edit func(w *gguf.Writer, f *gguf.File) bool) string {
	t.Helper()
	f, err := gguf.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := gguf.NewWriter()
	for _, kv := range f.KVs {
		w.Set(kv.Key, kv.Value)
	}
	if edit(w, f) {
		for _, ti := range f.Tensors {
			data, _ := f.TensorData(ti.Name)
			if err := w.AddTensorBytes(ti.Name, ti.Type, ti.Dims, data); err != nil {
				t.Fatal(err)
			}
		}
	}
	out := filepath.Join(t.TempDir(), "edited.gguf")
	if err := w.WriteFile(out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestBadModelsAreRefusedWithAReason(t *testing.T) {
	good := tinyModel(t, nil)
	data, _ := os.ReadFile(good)
	write := func(b []byte) string {
		p := filepath.Join(t.TempDir(), "bad.gguf")
		os.WriteFile(p, b, 0o644)
		return p
	}
	tests := []struct {
		name string
		path string
		want string
	}{
		{"missing file", filepath.Join(t.TempDir(), "nope.gguf"), "no such file"},
		{"not a gguf file", write([]byte("this is not a model at all")), "bad magic"},
		{"truncated", write(data[:len(data)/2]), "truncated"},
		{"unsupported architecture", rewrite(t, good, func(w *gguf.Writer, _ *gguf.File) bool {
			w.Set("general.architecture", gguf.String("gpt2"))
			return true
		}), `architecture "gpt2"`},
		{"unsupported tensor type", rewrite(t, good, func(w *gguf.Writer, f *gguf.File) bool {
			for _, ti := range f.Tensors {
				data, _ := f.TensorData(ti.Name)
				typ := ti.Type
				if ti.Name == "blk.0.attn_q.weight" {
					typ = tensor.I32 // same size as F32: the file is valid, the model is not
				}
				w.AddTensorBytes(ti.Name, typ, ti.Dims, data)
			}
			return false
		}), `"blk.0.attn_q.weight" has type I32`},
		{"missing tensor", rewrite(t, good, func(w *gguf.Writer, f *gguf.File) bool {
			for _, ti := range f.Tensors {
				if ti.Name != "blk.1.ffn_norm.weight" {
					data, _ := f.TensorData(ti.Name)
					w.AddTensorBytes(ti.Name, ti.Type, ti.Dims, data)
				}
			}
			return false
		}), `"blk.1.ffn_norm.weight" is missing`},
		{"shape mismatch", rewrite(t, good, func(w *gguf.Writer, _ *gguf.File) bool {
			w.Set("llama.embedding_length", gguf.Uint32(32))
			return true
		}), "has shape"},
		{"inconsistent heads", rewrite(t, good, func(w *gguf.Writer, _ *gguf.File) bool {
			w.Set("llama.attention.head_count_kv", gguf.Uint32(3))
			return true
		}), "not a multiple of 3 kv heads"},
		{"more experts used than exist", rewrite(t, good, func(w *gguf.Writer, _ *gguf.File) bool {
			w.Set("llama.expert_used_count", gguf.Uint32(9))
			return true
		}), "9 experts used"},
		// Metadata is untrusted: sizes are bounded before anything is allocated from them.
		{"a context of 2^31", rewrite(t, good, func(w *gguf.Writer, _ *gguf.File) bool {
			w.Set("llama.context_length", gguf.Uint32(1<<31))
			return true
		}), "llama.context_length = 2147483648 is out of range"},
		{"a context past the engine's bound", rewrite(t, good, func(w *gguf.Writer, _ *gguf.File) bool {
			w.Set("llama.context_length", gguf.Uint32(model.MaxContext+1))
			return true
		}), "llama.context_length (context length) is 16777217, more than the 16777216"},
		{"a million layers", rewrite(t, good, func(w *gguf.Writer, _ *gguf.File) bool {
			w.Set("llama.block_count", gguf.Uint32(1<<20))
			return true
		}), "llama.block_count (layers) is 1048576"},
		{"a NaN rope base", rewrite(t, good, func(w *gguf.Writer, _ *gguf.File) bool {
			w.Set("llama.rope.freq_base", gguf.Float32(float32(math.NaN())))
			return true
		}), "llama.rope.freq_base (rope theta) is NaN"},
		{"an infinite rope base", rewrite(t, good, func(w *gguf.Writer, _ *gguf.File) bool {
			w.Set("llama.rope.freq_base", gguf.Float32(float32(math.Inf(1))))
			return true
		}), "llama.rope.freq_base (rope theta) is +Inf"},
		{"a zero norm epsilon", rewrite(t, good, func(w *gguf.Writer, _ *gguf.File) bool {
			w.Set("llama.attention.layer_norm_rms_epsilon", gguf.Float32(0))
			return true
		}), "llama.attention.layer_norm_rms_epsilon (norm epsilon) is 0"},
		{"a negative norm epsilon", rewrite(t, good, func(w *gguf.Writer, _ *gguf.File) bool {
			w.Set("llama.attention.layer_norm_rms_epsilon", gguf.Float32(-1e-5))
			return true
		}), "layer_norm_rms_epsilon (norm epsilon) is -1e-05"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := model.Open(tt.path, model.LoadOptions{Threads: 1})
			if err == nil {
				m.Close()
				t.Fatal("loaded without error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestPromptsBeyondTheContextAreErrors(t *testing.T) {
	m, err := model.Open(tinyModel(t, func(c *modelgen.Config) { c.Context = 16 }), model.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s := m.NewSession(0)
	long := make([]int32, 17)
	if _, err := s.Prefill(long, false); !errors.Is(err, model.ErrBatch) {
		t.Fatalf("17 tokens in a 16-token context: err %v", err)
	}
	if _, err := s.Prefill(make([]int32, 16), false); err != nil {
		t.Fatalf("16 tokens: %v", err)
	}
	if _, err := s.Decode(1); !errors.Is(err, model.ErrBatch) {
		t.Fatalf("decoding past the context: err %v", err)
	}
	s2 := m.NewSession(0)
	if _, err := s2.Prefill([]int32{1, 99999}, false); err == nil || !strings.Contains(err.Error(), "outside the vocabulary") {
		t.Fatalf("out-of-vocabulary token: err %v", err)
	}
}

func TestPrefillEqualsTokenByTokenDecode(t *testing.T) {
	// Batched prefill (matrix products, tokens grouped by expert) must give
	// the same logits as feeding the tokens one at a time through the cache.
	for _, typ := range []tensor.DType{tensor.F32, tensor.Q8_0, tensor.Q4_0} {
		m, err := model.Open(tinyModel(t, func(c *modelgen.Config) { c.Type = typ }), model.LoadOptions{Threads: 2})
		if err != nil {
			t.Fatal(err)
		}
		tokens := m.Tokenizer.Encode("one two three four five six seven", true)
		all, err := m.NewSession(0).Prefill(tokens, true)
		if err != nil {
			t.Fatal(err)
		}
		s := m.NewSession(0)
		V := m.Config.Vocab
		for i, tok := range tokens {
			row, err := s.Decode(tok)
			if err != nil {
				t.Fatal(err)
			}
			for j := range row {
				if d := row[j] - all[i*V+j]; d > 1e-5 || d < -1e-5 {
					t.Fatalf("%s position %d logit %d: decode %g, prefill %g", typ, i, j, row[j], all[i*V+j])
				}
			}
		}
		m.Close()
	}
}

func TestSlidingWindowLimitsAttention(t *testing.T) {
	// With a window of 4, the logits at position p depend only on tokens
	// p-3..p: changing token 0 must not change the logits at position 5.
	path := tinyModel(t, func(c *modelgen.Config) { c.SlidingWindow = 4; c.Layers = 1 })
	m, err := model.Open(path, model.LoadOptions{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Config.SlidingWindow != 4 {
		t.Fatalf("sliding window %d, want 4", m.Config.SlidingWindow)
	}
	a, _ := m.NewSession(0).Prefill([]int32{300, 301, 302, 303, 304, 305}, true)
	b, _ := m.NewSession(0).Prefill([]int32{400, 301, 302, 303, 304, 305}, true)
	V := m.Config.Vocab
	same := func(p int) bool {
		for i := 0; i < V; i++ {
			if a[p*V+i] != b[p*V+i] {
				return false
			}
		}
		return true
	}
	if !same(5) {
		t.Fatal("position 5 changed although token 0 is outside its window")
	}
	if same(3) {
		t.Fatal("position 3 did not change although token 0 is inside its window")
	}
}
