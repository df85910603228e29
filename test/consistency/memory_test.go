// Package consistency checks that the operator's planner and the engine
// describe the same thing: the planner sizes deployments with a memory
// model, the engine allocates real shards, and the two must agree.
package consistency

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moe-operator/moe-operator/engine/gguf"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tensor"
	"github.com/moe-operator/moe-operator/planner"
)

// TestPlannerMemoryMatchesEngineShards compares the planner's weight bytes
// per GPU with what the engine's shards hold (`moe inspect
// --tensor-parallel N --quantization Q`) for every quantization and
// tensor-parallel degree: they must agree within 5%.
func TestPlannerMemoryMatchesEngineShards(t *testing.T) {
	cfg := modelgen.Config{Name: "consistency", Layers: 2, Dim: 512, Heads: 8, KVHeads: 2, FFN: 1792,
		Experts: 8, TopK: 2, Context: 4096, Type: tensor.F16, Vocab: "4096"}
	path := filepath.Join(t.TempDir(), "f16.gguf")
	if err := modelgen.Write(path, cfg); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	shape := planner.Model{Name: cfg.Name, HiddenSize: cfg.Dim, Layers: cfg.Layers, Heads: cfg.Heads, KVHeads: cfg.KVHeads,
		HeadDim: cfg.Dim / cfg.Heads, IntermediateSize: cfg.FFN, Experts: cfg.Experts, ExpertsUsed: cfg.TopK,
		VocabSize: 4096, ContextLength: cfg.Context}
	for _, q := range []struct {
		planner planner.Quantization
		engine  string
	}{{planner.BF16, "bf16"}, {planner.Int8, "int8"}, {planner.Int4, "int4"}} {
		for _, tp := range []int{1, 2, 4, 8} {
			t.Run(fmt.Sprintf("%s/tp=%d", q.planner, tp), func(t *testing.T) {
				shards, err := model.PlanShardBytes(f, model.LoadOptions{TensorParallel: tp, Quantization: q.engine})
				if err != nil {
					t.Fatal(err)
				}
				engine := slices.Max(shards)
				plan := shape.WeightBytesPerShard(q.planner, tp)
				ratio := float64(plan) / float64(engine)
				t.Logf("engine %d bytes per shard, planner %d (ratio %.4f)", engine, plan, ratio)
				if math.Abs(ratio-1) > 0.05 {
					t.Fatalf("planner's %d bytes per GPU differ from the engine's %d by %.1f%%", plan, engine, 100*(ratio-1))
				}
			})
		}
	}
}
