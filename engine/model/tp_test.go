package model_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

func TestTensorParallelIsInvisibleInTheLogits(t *testing.T) {
	shapes := []struct {
		name string
		edit func(*modelgen.Config)
	}{
		// 8 heads over 2 kv heads: TP 4 and 8 exceed the kv heads, which are
		// then replicated.
		{"gqa4 with kv heads fewer than shards", func(c *modelgen.Config) { c.Heads, c.KVHeads, c.Dim = 8, 2, 64; c.Experts = 4 }},
		// 3 experts: not a multiple of 2, 4 or 8 shards.
		{"3 experts", func(c *modelgen.Config) { c.Heads, c.KVHeads, c.Dim = 8, 8, 64; c.Experts, c.TopK = 3, 2 }},
	}
	for _, sh := range shapes {
		path := tinyModel(t, func(c *modelgen.Config) { c.FFN = 256; c.Type = tensor.F32; sh.edit(c) })
		ref := tpLogits(t, path, model.LoadOptions{Threads: 2})
		for _, ep := range []bool{false, true} {
			for _, n := range []int{2, 4, 8} {
				t.Run(fmt.Sprintf("%s/tp=%d/expert-parallel=%v", sh.name, n, ep), func(t *testing.T) {
					got := tpLogits(t, path, model.LoadOptions{Threads: 2, TensorParallel: n, ExpertParallel: ep})
					worst := 0.0
					for i := range ref {
						worst = math.Max(worst, math.Abs(float64(got[i]-ref[i]))/math.Max(1, math.Abs(float64(ref[i]))))
					}
					if worst > 1e-5 {
						t.Fatalf("largest relative difference from TP=1 is %.3g", worst)
					}
				})
			}
		}
	}
}

func tpLogits(t *testing.T, path string, opts model.LoadOptions) []float32 {
	t.Helper()
	m, err := model.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got := m.TensorParallel(); got != max(1, opts.TensorParallel) {
		t.Fatalf("model has %d shards", got)
	}
	logits, err := m.NewSession(0).Prefill(m.Tokenizer.Encode("tensor parallel shards must not change a thing", true), true)
	if err != nil {
		t.Fatal(err)
	}
	return logits
}

func TestTensorParallelRefusesSplitsThatDoNotDivide(t *testing.T) {
	path := tinyModel(t, func(c *modelgen.Config) { c.Heads, c.KVHeads, c.Dim = 4, 2, 64 })
	if _, err := model.Open(path, model.LoadOptions{TensorParallel: 8}); err == nil {
		t.Fatal("8 shards of 4 heads accepted")
	}
	path = tinyModel(t, func(c *modelgen.Config) { c.Heads, c.KVHeads, c.Dim = 6, 3, 96 })
	if _, err := model.Open(path, model.LoadOptions{TensorParallel: 2}); err == nil {
		t.Fatal("3 kv heads over 2 shards accepted")
	}
}
