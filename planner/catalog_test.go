package planner

import (
	"errors"
	"math"
	"testing"
)

func TestModelShapesMatchTheReleasedConfigs(t *testing.T) {
	tests := []struct {
		name            string
		model           string
		params, active  float64 // billions
		bf16GB          float64
		kvBytesPerToken float64 // fp16
	}{
		{"Mixtral-8x7B has 46.7B parameters, 12.8B multiplied per token (12.9B with the embedding table), 128 KiB of KV per token", "mixtral-8x7b", 46.7, 12.8, 93.4, 128 << 10},
		{"Mixtral-8x7B-Instruct has the same shape", "mixtral-8x7b-instruct", 46.7, 12.8, 93.4, 128 << 10},
		{"Mixtral-8x22B has 141B parameters, 39B multiplied per token, 224 KiB of KV per token", "mixtral-8x22b", 140.6, 39.0, 281.2, 224 << 10},
		{"Mixtral-8x22B-Instruct has the v3 vocabulary", "mixtral-8x22b-instruct", 140.6, 39.0, 281.3, 224 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ModelPreset(tt.model)
			if err != nil {
				t.Fatal(err)
			}
			if got := float64(m.Parameters()) / 1e9; math.Abs(got-tt.params) > 0.1 {
				t.Errorf("Parameters = %.2fB, want %.1fB", got, tt.params)
			}
			if got := float64(m.ActiveParameters()) / 1e9; math.Abs(got-tt.active) > 0.1 {
				t.Errorf("ActiveParameters = %.2fB, want %.1fB", got, tt.active)
			}
			if got := float64(m.WeightBytes(BF16)) / 1e9; math.Abs(got-tt.bf16GB) > 0.05 {
				t.Errorf("WeightBytes(BF16) = %.2f GB, want %.1f", got, tt.bf16GB)
			}
			if got := m.KVBytesPerToken(2); got != tt.kvBytesPerToken {
				t.Errorf("KVBytesPerToken(2) = %v, want %v", got, tt.kvBytesPerToken)
			}
		})
	}
}

func TestWeightBytesFollowTheEngineFormats(t *testing.T) {
	m, _ := ModelPreset("mixtral-8x7b")
	split := float64(m.splitParameters())
	f32 := 4 * float64(m.replicatedParameters())
	tests := []struct {
		name  string
		quant Quantization
		want  float64
	}{
		{"BF16 stores 2 bytes per weight", BF16, 2*split + f32},
		{"FP8 stores 1 byte per weight", FP8, split + f32},
		{"Int8 is Q8_0: 34 bytes per 32 weights", Int8, split*34/32 + f32},
		{"Int4 is Q4_0/Q4_K: 18 bytes per 32 weights", Int4, split*18/32 + f32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := float64(m.WeightBytes(tt.quant)); math.Abs(got-tt.want) > 1 {
				t.Errorf("WeightBytes(%s) = %.0f, want %.0f", tt.quant, got, tt.want)
			}
			// Shards split everything but the F32 norms and routers.
			for _, tp := range []int{1, 2, 4, 8} {
				shards := float64(tp) * float64(m.WeightBytesPerShard(tt.quant, tp))
				if want := tt.want + float64(tp-1)*f32; math.Abs(shards-want) > float64(tp) {
					t.Errorf("TP%d: shards hold %.0f bytes, want %.0f", tp, shards, want)
				}
			}
		})
	}
	if f32 > 0.001*split {
		t.Errorf("norms and routers (%.0f bytes) should be a rounding error next to the weights", f32)
	}
}

func TestModelValidateRejectsImpossibleShapes(t *testing.T) {
	good, _ := ModelPreset("mixtral-8x7b")
	tests := []struct {
		name   string
		mutate func(*Model)
	}{
		{"a zero dimension", func(m *Model) { m.Layers = 0 }},
		{"heads that are not a multiple of kv heads", func(m *Model) { m.KVHeads = 5 }},
		{"more experts used than exist", func(m *Model) { m.ExpertsUsed = 9 }},
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("preset does not validate: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := good
			tt.mutate(&m)
			if err := m.Validate(); !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("Validate = %v, want ErrInvalidRequest", err)
			}
		})
	}
}

func TestLookupsAcceptCatalogNamesOnly(t *testing.T) {
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"a model name in another case", func() error { _, err := ModelPreset("Mixtral-8x7B"); return err }, nil},
		{"an unknown model", func() error { _, err := ModelPreset("llama-3-70b"); return err }, ErrUnknownModel},
		{"the h100 alias", func() error { _, err := AcceleratorByName("H100"); return err }, nil},
		{"an unknown accelerator", func() error { _, err := AcceleratorByName("tpu-v5e"); return err }, ErrUnknownAccelerator},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestEveryCatalogAcceleratorIsUsableAndSourced(t *testing.T) {
	for _, name := range AcceleratorNames() {
		t.Run(name, func(t *testing.T) {
			a, err := AcceleratorByName(name)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Validate(); err != nil {
				t.Error(err)
			}
			if a.Source == "" || a.Description == "" {
				t.Error("every accelerator names its sources")
			}
			if a.Int8OPS < a.BF16FLOPS {
				t.Errorf("int8 rate %g below bf16 rate %g", a.Int8OPS, a.BF16FLOPS)
			}
			if (a.ResourceName == "") != (name == "cpu") {
				t.Errorf("resource name %q: only the cpu profile requests no GPU", a.ResourceName)
			}
		})
	}
}

func TestAcceleratorByNameReturnsACopy(t *testing.T) {
	a, _ := AcceleratorByName("cpu")
	a.Efficiency[Int8] = Efficiency{Bandwidth: 1, Compute: 1}
	a.GPUsPerNode = 99
	b, _ := AcceleratorByName("cpu")
	if b.Efficiency[Int8].Bandwidth == 1 || b.GPUsPerNode == 99 {
		t.Error("mutating a lookup result changed the catalog")
	}
}

func TestCPUProfileDescribesTheBuildMachines(t *testing.T) {
	a, _ := AcceleratorByName("cpu")
	if a.MemoryBandwidth != 10e9 || a.MemoryBytes != 24<<30 || a.GPUsPerNode != 1 || a.KVBytesPerElement != 4 {
		t.Errorf("cpu profile = %+v, want 10 GB/s, 24 GiB, one device, f32 KV", a)
	}
	if a.SupportsQuantization(FP8) {
		t.Error("the CPU engine has no FP8")
	}
}

func TestParseQuantization(t *testing.T) {
	tests := []struct {
		in   string
		want Quantization
		err  error
	}{
		{"", Auto, nil},
		{"auto", Auto, nil},
		{"bf16", BF16, nil},
		{"FP8", FP8, nil},
		{"int8", Int8, nil},
		{"INT4", Int4, nil},
		{"fp16", "", ErrUnknownQuantization},
	}
	for _, tt := range tests {
		t.Run("parsing "+tt.in, func(t *testing.T) {
			got, err := ParseQuantization(tt.in)
			if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
				t.Errorf("ParseQuantization(%q) = %q, %v; want %q, %v", tt.in, got, err, tt.want, tt.err)
			}
		})
	}
}

func TestExpertsTouchedGrowsWithTheBatch(t *testing.T) {
	prev := 0.0
	for n := 1.0; n <= 256; n *= 2 {
		got := expertsTouched(8, 2, n)
		if got < prev || got > 8 {
			t.Errorf("expertsTouched(8, 2, %v) = %v after %v", n, got, prev)
		}
		prev = got
	}
}
