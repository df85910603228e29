package model_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/moe-operator/moe-operator/engine/gguf"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

func TestPlannedShardMemoryEqualsTheLoadedModel(t *testing.T) {
	f16 := tinyModel(t, func(c *modelgen.Config) { c.Type = tensor.F16; c.Dim, c.Heads, c.KVHeads, c.FFN = 512, 8, 2, 256 })
	q8 := tinyModel(t, func(c *modelgen.Config) { c.Type = tensor.Q8_0; c.Dim, c.Heads, c.KVHeads, c.FFN = 512, 8, 2, 256 })
	tied := rewrite(t, q8, func(w *gguf.Writer, f *gguf.File) bool {
		for _, ti := range f.Tensors {
			if ti.Name != "output.weight" {
				data, _ := f.TensorData(ti.Name)
				w.AddTensorBytes(ti.Name, ti.Type, ti.Dims, data)
			}
		}
		return false
	})
	for name, path := range map[string]string{"f16": f16, "q8_0": q8, "q8_0 tied embedding": tied} {
		for _, opts := range []model.LoadOptions{
			{}, {TensorParallel: 2}, {TensorParallel: 4}, {TensorParallel: 8}, {TensorParallel: 2, ExpertParallel: true},
			{Quantization: "int4"}, {Quantization: "int4", TensorParallel: 4},
		} {
			t.Run(fmt.Sprintf("%s/%+v", name, opts), func(t *testing.T) {
				f, err := gguf.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				planned, err := model.PlanShardBytes(f, opts)
				f.Close()
				if err != nil {
					t.Fatal(err)
				}
				opts.Threads = 2
				m, err := model.Open(path, opts)
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				if got := m.ShardBytes(); !slices.Equal(got, planned) {
					t.Fatalf("loaded shards hold %v bytes, planned %v", got, planned)
				}
			})
		}
	}
}

func TestPlannedShardMemoryRefusesMisalignedSplits(t *testing.T) {
	path := tinyModel(t, func(c *modelgen.Config) { c.Type = tensor.Q8_0; c.Heads, c.KVHeads, c.FFN = 8, 2, 256 })
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := model.PlanShardBytes(f, model.LoadOptions{TensorParallel: 4}); err == nil {
		t.Fatal("16-column Q8_0 slices planned without error")
	}
	if _, err := model.Open(path, model.LoadOptions{TensorParallel: 4}); err == nil {
		t.Fatal("16-column Q8_0 slices loaded without error")
	}
}
