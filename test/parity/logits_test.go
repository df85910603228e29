package parity

import (
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

// Tolerances on the largest absolute logit difference from llama.cpp, the
// issue's bounds (BF16 has none there; llama.cpp's batched BF16 path differs
// from its own one-token path by about 0.01, so 0.05).
//
// The quantized types are held much tighter than 0.15 in a second way. The
// engine quantizes activations exactly as llama.cpp's CPU backend does (Q8_0
// with round-half-even for Q8_0/Q4_0 weights, Q8_K for K-quants), so both
// compute the same integer block sums and differ only in float summation
// order, and positions agree to about 1e-6. The maximum still needs the
// issue's bound: a router near-tie (two experts' probabilities within
// float rounding, which random models hit) flips an expert choice, and
// through the KV cache that shifts every later position by a few hundredths;
// llama.cpp's repacked K-quant kernels also deviate from its own plain
// kernels at rare positions. So for quantized types the median position
// must agree within tight, which an engine that dequantized weights (or
// quantized activations differently) would miss by an order of magnitude.
var tolerance = map[tensor.DType]float64{
	tensor.F32:  1e-4,
	tensor.F16:  5e-3,
	tensor.BF16: 0.05,
	tensor.Q8_0: 0.15,
	tensor.Q4_0: 0.15,
	tensor.Q4_K: 0.15,
	tensor.Q6_K: 0.15,
}

const tight = 1e-3

type parityCase struct {
	name string
	cfg  modelgen.Config
}

func parityCases() []parityCase {
	base := func(name string, typ tensor.DType, layers, dim, heads, kv, ffn, experts, topk int, vocab string) parityCase {
		return parityCase{name, modelgen.Config{Name: name, Layers: layers, Dim: dim, Heads: heads, KVHeads: kv, FFN: ffn,
			Experts: experts, TopK: topk, Context: 256, Type: typ, Vocab: vocab, Seed: uint64(len(name))}}
	}
	perExpert := base("q8_0 per-expert layout", tensor.Q8_0, 2, 64, 4, 2, 96, 4, 2, "512")
	perExpert.cfg.PerExpert = true
	return []parityCase{
		base("f32 gqa1 top1 4 experts 1 layer", tensor.F32, 1, 64, 4, 4, 96, 4, 1, "512"),
		base("f32 gqa4 top2 8 experts 3 layers", tensor.F32, 3, 128, 8, 2, 160, 8, 2, "512"),
		base("f16 gqa4 top2 8 experts mistral vocab", tensor.F16, 2, 128, 8, 2, 192, 8, 2, "mistral"),
		base("bf16 gqa1 top2 4 experts", tensor.BF16, 2, 64, 2, 2, 96, 4, 2, "512"),
		base("q8_0 gqa4 top2 8 experts mistral vocab", tensor.Q8_0, 2, 128, 8, 2, 192, 8, 2, "mistral"),
		base("q4_0 gqa1 top1 4 experts 3 layers", tensor.Q4_0, 3, 128, 4, 4, 160, 4, 1, "512"),
		base("q4_k gqa4 top2 8 experts", tensor.Q4_K, 2, 256, 4, 1, 512, 8, 2, "512"),
		base("q6_k gqa4 top2 4 experts", tensor.Q6_K, 1, 256, 8, 2, 256, 4, 2, "512"),
		perExpert,
	}
}

func TestLogitsMatchLlamaCpp(t *testing.T) {
	dir := t.TempDir()
	for _, pc := range parityCases() {
		t.Run(pc.name, func(t *testing.T) {
			path := filepath.Join(dir, sanitize(pc.name)+".gguf")
			if err := modelgen.Write(path, pc.cfg); err != nil {
				t.Fatal(err)
			}
			// llama.cpp no longer loads the per-expert layout, so it runs the
			// stacked file with the same weights.
			refPath := path
			if pc.cfg.PerExpert {
				stacked := pc.cfg
				stacked.PerExpert = false
				refPath = filepath.Join(dir, sanitize(pc.name)+"-stacked.gguf")
				if err := modelgen.Write(refPath, stacked); err != nil {
					t.Fatal(err)
				}
			}
			m, err := model.Open(path, model.LoadOptions{Threads: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			prompt := m.Tokenizer.Encode("The quick brown fox jumps over the lazy dog, 12345 times!\nAgain: naïve café ☕.", true)
			tol := tolerance[pc.cfg.Type]

			// A greedy continuation by the engine, then the whole sequence
			// through llama.cpp; every position is compared.
			s := m.NewSession(0)
			ours, err := s.Prefill(prompt, true)
			if err != nil {
				t.Fatal(err)
			}
			seq := append([]int32(nil), prompt...)
			V := m.Config.Vocab
			next := argmax(ours[len(ours)-V:])
			for i := 0; i < 8; i++ {
				seq = append(seq, next)
				row, err := s.Decode(next)
				if err != nil {
					t.Fatal(err)
				}
				ours = append(ours, row...)
				next = argmax(row)
			}
			// llama.cpp evaluates the sequence once in one batch (its prefill
			// kernels) and once a token at a time (its decode kernels).
			for _, mode := range []struct {
				name       string
				sequential bool
			}{{"prefill", false}, {"decode", true}} {
				ref := referenceLogits(t, refPath, seq, mode.sequential)
				worst, median, checked := compare(t, ours, ref, seq, len(prompt), V, tol)
				t.Logf("%s vs llama.cpp %s kernels: %d positions, max |Δlogit| = %.3g (tolerance %g), median position %.3g, greedy agreed on %d steps",
					pc.name, mode.name, len(seq), worst, tol, median, checked)
				if worst > tol {
					t.Errorf("%s: max logit difference %.3g exceeds %g", mode.name, worst, tol)
				}
				if pc.cfg.Type.BlockSize() > 1 && median > tight {
					t.Errorf("%s: the median position differs by %.3g, more than %g", mode.name, median, tight)
				}
			}
		})
	}
}

// compare returns the largest logit difference, the median over positions
// of each position's largest difference, and the number of greedy steps
// checked: greedy choices must agree wherever the engine's top-2 margin is
// wider than twice the tolerance (thin margins may legitimately flip).
func compare(t *testing.T, ours []float32, ref [][]float32, seq []int32, promptLen, V int, tol float64) (worst, median float64, checked int) {
	t.Helper()
	rows := make([]float64, len(seq))
	defer func() {
		slices.Sort(rows)
		median = rows[len(rows)/2]
	}()
	for p := range seq {
		our := ours[p*V : (p+1)*V]
		var rowWorst float64
		for i, r := range ref[p] {
			rowWorst = math.Max(rowWorst, math.Abs(float64(our[i])-float64(r)))
		}
		worst = math.Max(worst, rowWorst)
		rows[p] = rowWorst
		if p < promptLen-1 || p == len(seq)-1 {
			continue
		}
		top, margin := topMargin(our)
		if margin <= 2*tol {
			continue
		}
		checked++
		if refTop := argmax(ref[p]); refTop != top {
			t.Errorf("position %d: engine picks %d, llama.cpp %d (margin %.3g)", p, top, refTop, margin)
		}
		if seq[p+1] != top {
			t.Fatalf("position %d: continuation token %d is not the argmax %d", p, seq[p+1], top)
		}
	}
	return worst, median, checked
}

func argmax(x []float32) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}

// topMargin returns the argmax and the gap to the runner-up.
func topMargin(x []float32) (int32, float64) {
	top := argmax(x)
	second := float32(math.Inf(-1))
	for i, v := range x {
		if int32(i) != top && v > second {
			second = v
		}
	}
	return top, float64(x[top] - second)
}

func sanitize(s string) string {
	out := []byte(s)
	for i, c := range out {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			out[i] = '-'
		}
	}
	return string(out)
}
