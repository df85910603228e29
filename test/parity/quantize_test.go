package parity

import (
	"path/filepath"
	"testing"

	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

// TestOnLoadQuantizationMatchesMoeQuantizeAndLlamaCpp: a model generated in
// F16 and quantized at load gives exactly the logits of the same weights
// quantized to a file by `moe quantize`, and llama.cpp, loading that file,
// agrees within the quantized tolerances.
func TestOnLoadQuantizationMatchesMoeQuantizeAndLlamaCpp(t *testing.T) {
	dir := t.TempDir()
	f16 := filepath.Join(dir, "f16.gguf")
	cfg := modelgen.Config{Name: "f16", Layers: 2, Dim: 128, Heads: 8, KVHeads: 2, FFN: 192, Experts: 8, TopK: 2,
		Context: 256, Type: tensor.F16, Vocab: "512", Seed: 7}
	if err := modelgen.Write(f16, cfg); err != nil {
		t.Fatal(err)
	}
	pool := tensor.NewPool(2)
	defer pool.Close()
	for _, q := range []struct {
		flag string
		typ  tensor.DType
	}{{"int8", tensor.Q8_0}, {"int4", tensor.Q4_0}} {
		t.Run(q.flag, func(t *testing.T) {
			file := filepath.Join(dir, q.flag+".gguf")
			if err := model.QuantizeFile(f16, file, q.typ, pool, nil); err != nil {
				t.Fatal(err)
			}
			onLoad := logitsOf(t, f16, model.LoadOptions{Threads: 2, Quantization: q.flag})
			fromFile := logitsOf(t, file, model.LoadOptions{Threads: 2})
			for i := range onLoad.logits {
				if onLoad.logits[i] != fromFile.logits[i] {
					t.Fatalf("logit %d: quantized on load %g, from the moe quantize file %g", i, onLoad.logits[i], fromFile.logits[i])
				}
			}
			ref := referenceLogits(t, file, fromFile.tokens, false)
			worst, median, _ := compare(t, fromFile.logits, ref, fromFile.tokens, len(fromFile.tokens), fromFile.vocab, tolerance[q.typ])
			t.Logf("%s: on-load = moe quantize bit for bit; vs llama.cpp on the quantized file: max %.3g, median %.3g", q.flag, worst, median)
			if worst > tolerance[q.typ] || median > tight {
				t.Fatalf("llama.cpp differs: max %.3g (tolerance %g), median %.3g", worst, tolerance[q.typ], median)
			}
		})
	}
}

type runLogits struct {
	tokens []int32
	logits []float32
	vocab  int
}

func logitsOf(t *testing.T, path string, opts model.LoadOptions) runLogits {
	t.Helper()
	m, err := model.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tokens := m.Tokenizer.Encode("quantized at load or by moe quantize, the weights are the same", true)
	logits, err := m.NewSession(0).Prefill(tokens, true)
	if err != nil {
		t.Fatal(err)
	}
	return runLogits{tokens, logits, m.Config.Vocab}
}
