package planner

import (
	"bytes"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// benchShapes are generated models of the Mixtral architecture at three
// sizes, like those `moe bench` runs on the cpu profile.
var benchShapes = []Model{
	{Name: "bench-s", HiddenSize: 512, Layers: 4, Heads: 8, KVHeads: 2, HeadDim: 64, IntermediateSize: 1408, Experts: 8, ExpertsUsed: 2, VocabSize: 32000, ContextLength: 2048},
	{Name: "bench-m", HiddenSize: 1024, Layers: 8, Heads: 16, KVHeads: 4, HeadDim: 64, IntermediateSize: 2816, Experts: 8, ExpertsUsed: 2, VocabSize: 32000, ContextLength: 2048},
	{Name: "bench-l", HiddenSize: 2048, Layers: 8, Heads: 16, KVHeads: 4, HeadDim: 128, IntermediateSize: 5632, Experts: 8, ExpertsUsed: 2, VocabSize: 32000, ContextLength: 2048},
}

// synthetic measures m with the performance model itself at eff.
func synthetic(a Accelerator, m Model, q Quantization, batch int, eff Efficiency) Measurement {
	meas := Measurement{Model: m, Quantization: q, TensorParallelism: 1, BatchSize: batch, PromptTokens: 128, OutputTokens: 64}
	c := meas.candidate(a, Runtime{}, eff)
	meas.PrefillTokensPerSecond = float64(batch*meas.PromptTokens) / c.prefill(batch)
	meas.DecodeTokensPerSecond = float64(batch) / c.decodeStep(batch, meas.decodeContext())
	return meas
}

func TestCalibrationRoundTrips(t *testing.T) {
	a, _ := AcceleratorByName("cpu")
	c := &Calibration{
		Version: CalibrationVersion, Engine: "moe", Accelerator: "cpu",
		CreatedAt:    time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC),
		Efficiency:   map[Quantization]Efficiency{Int4: {Bandwidth: 0.5, Compute: 0.08}},
		Measurements: []Measurement{synthetic(a, benchShapes[1], Int8, 1, Efficiency{0.6, 0.1})},
	}
	path := filepath.Join(t.TempDir(), "calibration.json")
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := LoadCalibration(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, got); diff != "" {
		t.Errorf("round trip differs (-saved +loaded):\n%s", diff)
	}
}

func TestCalibrationFileShapeIsTheDocumentedOne(t *testing.T) {
	const file = `{
  "version": 1,
  "engine": "moe",
  "accelerator": "cpu",
  "createdAt": "2026-11-27T12:00:00Z",
  "efficiency": {"Int8": {"bandwidth": 0.55, "compute": 0.07}},
  "measurements": [{
    "model": {"name": "bench-m", "hiddenSize": 1024, "layers": 8, "heads": 16, "kvHeads": 4, "headDim": 64,
              "intermediateSize": 2816, "experts": 8, "expertsUsed": 2, "vocabSize": 32000, "contextLength": 2048},
    "quantization": "Int4", "tensorParallelism": 1, "batchSize": 1, "promptTokens": 128, "outputTokens": 64,
    "prefillTokensPerSecond": 210.5, "decodeTokensPerSecond": 21.3
  }]
}`
	c, err := ReadCalibration(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if c.Efficiency[Int8].Bandwidth != 0.55 || c.Measurements[0].DecodeTokensPerSecond != 21.3 {
		t.Errorf("decoded %+v", c)
	}
}

func TestInvalidCalibrationsAreRefused(t *testing.T) {
	tests := []struct{ name, file string }{
		{"an unknown version", `{"version": 2, "accelerator": "cpu"}`},
		{"a factor above one", `{"version": 1, "accelerator": "cpu", "efficiency": {"Int8": {"bandwidth": 1.5, "compute": 0.1}}}`},
		{"an unknown quantization", `{"version": 1, "accelerator": "cpu", "efficiency": {"Q5_K": {"bandwidth": 0.5, "compute": 0.1}}}`},
		{"an unknown field", `{"version": 1, "accelerator": "cpu", "bandwith": 3}`},
		{"a measurement without a rate", `{"version": 1, "accelerator": "cpu", "measurements": [{"model": {"hiddenSize": 64, "layers": 1, "heads": 1, "kvHeads": 1, "headDim": 64, "intermediateSize": 64, "experts": 2, "expertsUsed": 1, "vocabSize": 10, "contextLength": 64}, "quantization": "Int8", "tensorParallelism": 1, "batchSize": 1, "promptTokens": 1, "outputTokens": 1}]}`},
		{"not JSON", `version: 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ReadCalibration(strings.NewReader(tt.file)); !errors.Is(err, ErrInvalidCalibration) {
				t.Errorf("err = %v, want ErrInvalidCalibration", err)
			}
		})
	}
}

func TestFitRecoversTheFactorsThatProducedTheMeasurements(t *testing.T) {
	a, _ := AcceleratorByName("cpu")
	tests := []struct {
		name  string
		quant Quantization
		eff   Efficiency
		batch int
	}{
		{"memory-bound single-stream Int8", Int8, Efficiency{Bandwidth: 0.55, Compute: 0.2}, 1},
		{"compute-heavy Int4 at batch 8", Int4, Efficiency{Bandwidth: 0.7, Compute: 0.04}, 8},
		{"BF16 at batch 4", BF16, Efficiency{Bandwidth: 0.45, Compute: 0.12}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ms []Measurement
			for _, m := range benchShapes {
				ms = append(ms, synthetic(a, m, tt.quant, tt.batch, tt.eff))
			}
			got := (&Calibration{Version: CalibrationVersion, Measurements: ms}).Fit(a)[tt.quant]
			if math.Abs(got.Compute/tt.eff.Compute-1) > 0.01 {
				t.Errorf("compute = %.4f, want %.4f", got.Compute, tt.eff.Compute)
			}
			// Bandwidth is observable only where decode is memory-bound;
			// either way decode predictions must match.
			for _, m := range ms {
				c := m.candidate(a, Runtime{}, got)
				pred := float64(m.BatchSize) / c.decodeStep(m.BatchSize, m.decodeContext())
				if math.Abs(pred/m.DecodeTokensPerSecond-1) > 0.01 {
					t.Errorf("%s: fitted factors predict %.2f tok/s, measured %.2f", m.Model.Name, pred, m.DecodeTokensPerSecond)
				}
			}
		})
	}
}

func TestOneCalibrationRunPredictsOtherSizes(t *testing.T) {
	// The shape of the own-engine check: calibrate on one size, predict the
	// others. Here the "measurements" come from the model, so this checks
	// the plumbing (Fit → Solve), not the model's accuracy.
	a, _ := AcceleratorByName("cpu")
	truth := Efficiency{Bandwidth: 0.62, Compute: 0.09}
	cal := &Calibration{Version: CalibrationVersion, Accelerator: "cpu",
		Measurements: []Measurement{synthetic(a, benchShapes[1], Int8, 1, truth)}}
	for _, m := range []Model{benchShapes[0], benchShapes[2]} {
		want := synthetic(a, m, Int8, 1, truth).DecodeTokensPerSecond
		p, err := Predict(Request{Model: m, Accelerator: a, Calibration: cal,
			Targets: Targets{PromptTokens: 128, OutputTokens: 64, Context: 192}}, Int8, 1, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.DecodeTokensPerSecond; math.Abs(got/want-1) > 0.01 {
			t.Errorf("%s: predicted %.1f tok/s, calibrated truth %.1f", m.Name, p.DecodeTokensPerSecond, want)
		}
	}
}

func TestCalibrationWriteIsIndentedJSON(t *testing.T) {
	var b bytes.Buffer
	if err := (&Calibration{Version: 1, Accelerator: "cpu"}).Write(&b); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != "{\n  \"version\": 1,\n  \"accelerator\": \"cpu\"\n}\n" {
		t.Errorf("Write = %q", got)
	}
}
