package model_test

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/moe-operator/moe-operator/engine/bench"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/sample"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

// benchModel is mini's width at two layers and a small vocabulary, so
// generating it takes a second; per-layer costs are those of mini.
func benchModel(b *testing.B, typ tensor.DType) *model.Model { return benchModelThreads(b, typ, 1) }

func benchModelThreads(b *testing.B, typ tensor.DType, threads int) *model.Model {
	b.Helper()
	c, _ := modelgen.Preset("mini")
	c.Layers, c.Type, c.Vocab = 2, typ, "4096"
	path := filepath.Join(b.TempDir(), "bench.gguf")
	if err := modelgen.Write(path, c); err != nil {
		b.Fatal(err)
	}
	m, err := model.Open(path, model.LoadOptions{Threads: threads})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { m.Close() })
	return m
}

func BenchmarkDecode(b *testing.B) {
	for _, typ := range []tensor.DType{tensor.Q8_0, tensor.Q4_0, tensor.Q4_K, tensor.F16} {
		b.Run(typ.String(), func(b *testing.B) {
			m := benchModel(b, typ)
			s := m.NewSession(0)
			logits, err := s.Prefill(bench.Prompt(16, m.Config.Vocab), false)
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for b.Loop() {
				if s.Pos() == s.Context() {
					b.Fatal("context exhausted")
				}
				logits, _ = s.Decode(sample.Argmax(logits))
				n++
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}

func BenchmarkPrefill(b *testing.B) {
	for _, typ := range []tensor.DType{tensor.Q8_0, tensor.Q4_0, tensor.Q4_K, tensor.F16} {
		b.Run(typ.String(), func(b *testing.B) {
			m := benchModel(b, typ)
			prompt := bench.Prompt(128, m.Config.Vocab)
			n := 0
			for b.Loop() {
				if _, err := m.NewSession(256).Prefill(prompt, false); err != nil {
					b.Fatal(err)
				}
				n += len(prompt)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}

// BenchmarkDecodeThreads shows how decode scales with threads on Q4_0.
func BenchmarkDecodeThreads(b *testing.B) {
	for _, threads := range []int{1, 2} {
		b.Run(fmt.Sprintf("threads=%d", threads), func(b *testing.B) {
			m := benchModelThreads(b, tensor.Q4_0, threads)
			s := m.NewSession(0)
			logits, err := s.Prefill(bench.Prompt(16, m.Config.Vocab), false)
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for b.Loop() {
				logits, _ = s.Decode(sample.Argmax(logits))
				n++
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}

// BenchmarkDecodeBatch runs decode steps of 1, 4 and 16 sequences together
// (one Forward per step), as continuous batching does; tok/s counts every
// sequence's token.
func BenchmarkDecodeBatch(b *testing.B) {
	for _, n := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("seqs=%d", n), func(b *testing.B) {
			m := benchModelThreads(b, tensor.Q8_0, 1)
			benchBatchedDecode(b, m, n, 16)
		})
	}
}

// BenchmarkTensorParallel compares decode with one shard, two shards that
// split every expert, and two shards that place whole experts (expert
// parallelism), at batch 1 and 16, on 2 threads.
func BenchmarkTensorParallel(b *testing.B) {
	c, _ := modelgen.Preset("mini")
	c.Layers, c.Vocab = 2, "4096"
	path := filepath.Join(b.TempDir(), "tp.gguf")
	if err := modelgen.Write(path, c); err != nil {
		b.Fatal(err)
	}
	for _, mode := range []struct {
		name string
		opts model.LoadOptions
	}{
		{"tp=1", model.LoadOptions{Threads: 2}},
		{"tp=2/split-experts", model.LoadOptions{Threads: 2, TensorParallel: 2}},
		{"tp=2/whole-experts", model.LoadOptions{Threads: 2, TensorParallel: 2, ExpertParallel: true}},
	} {
		for _, n := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/seqs=%d", mode.name, n), func(b *testing.B) {
				m, err := model.Open(path, mode.opts)
				if err != nil {
					b.Fatal(err)
				}
				defer m.Close()
				benchBatchedDecode(b, m, n, 8)
			})
		}
	}
}

// benchBatchedDecode prefills n sequences with a prompt of promptLen tokens,
// then times decode steps of all n together (one Forward per step) and
// reports tok/s over every sequence's token. Past 256 positions the steps
// overwrite the cache from just after the prompt again.
func benchBatchedDecode(b *testing.B, m *model.Model, n, promptLen int) {
	b.Helper()
	const ctx = 256
	cache, err := m.NewCache(n*ctx, 16)
	if err != nil {
		b.Fatal(err)
	}
	st := m.NewState(64, ctx)
	seqs := make([]model.Seq, n)
	var batch model.Batch
	for i := range seqs {
		if err := cache.Reserve(&seqs[i], ctx); err != nil {
			b.Fatal(err)
		}
		batch.Reset()
		for p, tok := range bench.Prompt(promptLen, m.Config.Vocab) {
			batch.Add(tok+int32(i), p, &seqs[i], false)
		}
		if _, err := m.Forward(st, cache, &batch); err != nil {
			b.Fatal(err)
		}
	}
	pos, tokens := promptLen, 0
	for b.Loop() {
		if pos == ctx {
			pos = promptLen
		}
		batch.Reset()
		for i := range seqs {
			batch.Add(int32(1000+7*i+pos), pos, &seqs[i], true)
		}
		if _, err := m.Forward(st, cache, &batch); err != nil {
			b.Fatal(err)
		}
		pos++
		tokens += n
	}
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tok/s")
}
