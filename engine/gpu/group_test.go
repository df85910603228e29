package gpu_test

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/gpu"
	"github.com/moe-operator/moe-operator/engine/internal/logitcheck"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

// A device group of N logical devices (lavapipe opened N times in CI) gives
// the logits of one device: the ranks compute identical attention, each its
// own experts, and the host adds their parts after every layer. Only the
// order in which a token's expert outputs are added can differ from one
// device (two experts on different ranks add as (x+a)+b instead of
// x+(a+b)), so the bound is relative float32 rounding, as the CPU's tensor
// parallelism test uses.
func TestTensorParallelAcrossDevicesEqualsOneDevice(t *testing.T) {
	tiny, _ := modelgen.Preset("tiny")
	cases := []struct {
		name  string
		ranks int
		edit  func(*modelgen.Config)
	}{
		{"f32 gqa4 8 experts top2", 2, func(c *modelgen.Config) { c.Heads, c.Experts = 8, 8 }},
		{"q8_0 5 experts top3 over 4 ranks (one holds two)", 4, func(c *modelgen.Config) {
			c.Type, c.Heads, c.Experts, c.TopK = tensor.Q8_0, 8, 5, 3
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tiny
			c.Seed = uint64(300 + i)
			tc.edit(&c)
			path := gen(t, c)
			one := openDevice(t, path, model.LoadOptions{Threads: 1, Device: gpu.Factory(-1, true, vulkan(t))})
			indexes := make([]int, tc.ranks)
			for r := range indexes {
				indexes[r] = deviceIndex(t)
			}
			group := openDevice(t, path, model.LoadOptions{Threads: 1, TensorParallel: tc.ranks, Device: gpu.GroupFactory(indexes, true, vulkan(t))})
			if got := group.TensorParallel(); got != tc.ranks {
				t.Fatalf("the model has %d shards, want %d", got, tc.ranks)
			}
			name, _ := group.Accelerated()
			if !strings.Contains(name, fmt.Sprintf("×%d", tc.ranks)) {
				t.Errorf("group name %q does not count its ranks", name)
			}
			mem, _ := group.DeviceMemory()
			solo, _ := one.DeviceMemory()
			if mem.Used >= solo.Used {
				t.Errorf("a rank holds %d bytes, not less than one device's %d: the experts are not split", mem.Used, solo.Used)
			}
			t.Logf("%s: one device holds %d bytes of weights, each of %d ranks at most %d", name, solo.Used, tc.ranks, mem.Used)
			V := one.Config.Vocab
			s1, sg := one.NewSession(64), group.NewSession(64)
			defer s1.Close()
			defer sg.Close()
			want, err := s1.Prefill(prompt, true)
			if err != nil {
				t.Fatal(err)
			}
			got, err := sg.Prefill(prompt, true)
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, got, want []float32) {
				t.Helper()
				worst := 0.0
				for i := range want {
					worst = math.Max(worst, math.Abs(float64(got[i]-want[i]))/math.Max(1, math.Abs(float64(want[i]))))
				}
				if worst > 1e-5 {
					d, _ := logitcheck.Diff(got, want, V)
					t.Fatalf("%s: largest relative difference from one device %.3g (max |Δlogit| %.3g)", what, worst, d)
				}
			}
			check("prefill", got, want)
			last := want[len(want)-V:]
			for step := range 8 {
				tok, _ := argmax2(last)
				w, err := s1.Decode(int32(tok))
				if err != nil {
					t.Fatal(err)
				}
				g, err := sg.Decode(int32(tok))
				if err != nil {
					t.Fatal(err)
				}
				check(fmt.Sprintf("decode step %d", step), g, w)
				last = w
			}
		})
	}
}

func TestTensorParallelNeedsADeviceGroup(t *testing.T) {
	c, _ := modelgen.Preset("tiny")
	_, err := model.Open(gen(t, c), model.LoadOptions{Threads: 1, TensorParallel: 2, Device: gpu.Factory(-1, true, vulkan(t))})
	if err == nil || !strings.Contains(err.Error(), "open a device group of 2") {
		t.Fatalf("err = %v, want a refusal that says how to open a device group", err)
	}
	if _, err := gpu.GroupFactory([]int{0}, true, gpu.Options{})(model.Config{}, 0); err == nil {
		t.Error("a group of one device was accepted")
	}
}

// openDevice opens path with opts and closes it when the test ends.
func openDevice(t *testing.T, path string, opts model.LoadOptions) *model.Model {
	t.Helper()
	m, err := model.Open(path, opts)
	if err != nil {
		t.Fatalf("the Vulkan backend did not open (CI installs lavapipe): %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Error(err)
		}
	})
	return m
}

// deviceIndex is the index of the device gpu.Factory(-1, true) picks.
func deviceIndex(t *testing.T) int {
	t.Helper()
	d, err := gpu.Open(-1, true, gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	return d.Info.Index
}

// BenchmarkGroupDecode decodes 16 sequences a step on the small preset (Q8_0) on one
// device and on device groups of two and four logical devices (lavapipe in CI: the
// ranks share the CPU, so this measures the group's overhead, not a speed-up), and
// reports the share of a step spent adding the ranks' parts on the host.
func BenchmarkGroupDecode(b *testing.B) {
	c, _ := modelgen.Preset("small")
	path := filepath.Join(b.TempDir(), "small.gguf")
	if err := modelgen.Write(path, c); err != nil {
		b.Fatal(err)
	}
	for _, ranks := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("ranks=%d", ranks), func(b *testing.B) {
			d, err := gpu.Open(-1, true, gpu.Options{})
			if err != nil {
				b.Fatal(err)
			}
			index := d.Info.Index
			d.Close()
			opts := model.LoadOptions{Threads: 1, Device: gpu.Factory(index, true, gpu.Options{})}
			if ranks > 1 {
				opts.TensorParallel = ranks
				opts.Device = gpu.GroupFactory(slices.Repeat([]int{index}, ranks), true, gpu.Options{})
			}
			var acc model.Accelerator
			open := opts.Device
			opts.Device = func(c model.Config, weightBytes int64) (model.Accelerator, error) {
				a, err := open(c, weightBytes)
				acc = a
				return a, err
			}
			m, err := model.Open(path, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			const seqs = 16
			cache, err := m.NewCache(seqs*64, 16)
			if err != nil {
				b.Fatal(err)
			}
			defer cache.Close()
			st := m.NewState(seqs, 64)
			var ss [seqs]model.Seq
			var batch model.Batch
			pos := 0
			step := func() {
				batch.Reset()
				for i := range ss {
					if err := cache.Reserve(&ss[i], pos+1); err != nil {
						b.Fatal(err)
					}
					batch.Add(int32(300+i), pos, &ss[i], true)
				}
				if _, err := m.Forward(st, cache, &batch); err != nil {
					b.Fatal(err)
				}
				pos++
			}
			step()
			b.ResetTimer()
			for range b.N {
				if pos == 60 {
					b.StopTimer()
					for i := range ss {
						cache.Release(&ss[i])
					}
					pos = 0
					b.StartTimer()
				}
				step()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e6, "ms/step")
			if g, ok := acc.(*gpu.Group); ok {
				b.ReportMetric(100*g.ReduceShare(), "%reduce")
			}
		})
	}
}
