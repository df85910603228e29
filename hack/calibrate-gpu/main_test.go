package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moe-operator/moe-operator/planner"
)

// syntheticSample is testdata/gpu-check-synthetic.txt: SYNTHETIC output shaped
// like `hack/gpu-check.sh run`, made from the planner's own model and perturbed
// by a few percent. It is not a measurement of any GPU.
const syntheticSample = "testdata/gpu-check-synthetic.txt"

func readSample(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(syntheticSample)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func h100(t *testing.T) planner.Accelerator {
	t.Helper()
	a, err := planner.AcceleratorByName("h100-80gb")
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestParseReadsTheSyntheticSample(t *testing.T) {
	o, err := parse(strings.NewReader(readSample(t)))
	if err != nil {
		t.Fatal(err)
	}
	if o.Device != "NVIDIA H100 80GB HBM3" || o.Bandwidth != 2987.4e9 {
		t.Errorf("device %q at %g B/s, want NVIDIA H100 80GB HBM3 at 2987.4 GB/s", o.Device, o.Bandwidth)
	}
	if o.Layers != 2 || o.WeightType != "Q8_0" {
		t.Errorf("model %d layers of %s, want 2 of Q8_0", o.Layers, o.WeightType)
	}
	if o.Bench.PrefillTokensPerSecond != 14310.6 || o.Bench.DecodeTokensPerSecond != 1031.4 {
		t.Errorf("bench = %+v, want prefill 14310.6, decode 1031.4", o.Bench)
	}
	if len(o.Loads) != 2 {
		t.Fatalf("%d loadgen rows, want 2", len(o.Loads))
	}
	for i, want := range []struct {
		concurrency int
		itlP50      float64
	}{{16, 0.003174}, {64, 0.004465}} {
		r := o.Loads[i]
		if r.Concurrency != want.concurrency || r.ITL.P50 != want.itlP50 || r.Requests != want.concurrency || r.OutputTokens != 64*want.concurrency {
			t.Errorf("row %d = concurrency %d, ITL p50 %g, %d requests, %d output tokens; want %d, %g, %d, %d",
				i, r.Concurrency, r.ITL.P50, r.Requests, r.OutputTokens, want.concurrency, want.itlP50, want.concurrency, 64*want.concurrency)
		}
	}
}

func TestTheWrittenCalibrationLoadsAndReproducesTheMeasurements(t *testing.T) {
	o, err := parse(strings.NewReader(readSample(t)))
	if err != nil {
		t.Fatal(err)
	}
	acc := h100(t)
	cal, err := calibration(o, acc, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "cal.json")
	if err := writeFile(path, cal); err != nil {
		t.Fatal(err)
	}
	loaded, err := planner.LoadCalibration(path)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Engine != planner.RuntimeMoE || loaded.Accelerator != "h100-80gb" || len(loaded.Measurements) != 3 {
		t.Fatalf("calibration for %q on %q with %d measurements, want moe on h100-80gb with 3", loaded.Engine, loaded.Accelerator, len(loaded.Measurements))
	}
	for i, want := range []struct {
		batch, prompt, output int
		decode                float64
	}{{1, 512, 64, 1031.4}, {16, 21, 64, 16 / 0.003174}, {64, 21, 64, 64 / 0.004465}} {
		m := loaded.Measurements[i]
		if m.BatchSize != want.batch || m.PromptTokens != want.prompt || m.OutputTokens != want.output ||
			m.Quantization != planner.Int8 || m.Model.Layers != 2 || abs(m.DecodeTokensPerSecond/want.decode-1) > 1e-9 {
			t.Errorf("measurement %d = %+v, want batch %d, %d/%d tokens, Int8, 2 layers, decode %.1f", i, m, want.batch, want.prompt, want.output, want.decode)
		}
	}
	rs, assumed, fitted, err := rows(loaded, acc)
	if err != nil {
		t.Fatal(err)
	}
	if assumed == fitted {
		t.Errorf("the fitted factors %+v are the assumed ones", fitted)
	}
	for _, r := range rs {
		if e := r.predicted/r.measured - 1; abs(e) > targetError {
			t.Errorf("%s: fitted prediction %.1f against %.1f measured, error %+.1f%% outside ±%.0f%%", r.name, r.predicted, r.measured, 100*e, 100*targetError)
		}
	}
	var out bytes.Buffer
	if err := report(&out, o, loaded, acc); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"batch 1 decode tok/s", "batch 1 prefill tok/s", "batch 16 decode tok/s", "batch 64 decode tok/s", "within the ±25% target", "assumed; not calibrated"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestMalformedOutputNamesWhatIsMissing(t *testing.T) {
	sample := readSample(t)
	drop := func(substr string) string {
		var keep []string
		for _, l := range strings.Split(sample, "\n") {
			if !strings.Contains(l, substr) {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	tests := []struct {
		name    string
		input   string
		missing bool // wraps errMissing
		says    string
	}{
		{"empty input", "", true, "memory bandwidth N GB/s"},
		{"no bandwidth line", drop("memory bandwidth 2987.4"), true, "memory bandwidth N GB/s"},
		{"no model line", drop("generating a"), true, "generating a N-layer TYPE model"},
		{"no bench line", drop(`"decodeTokensPerSecond"`), true, "moe bench --json"},
		{"a truncated bench line", strings.Replace(sample, `"peakRSSBytes":3712471040}`, `"peakRSSBytes":`, 1), false, "moe bench JSON"},
		{"a truncated loadgen object", drop("concurrency 64:   }"), false, "concurrency 64: moe loadgen JSON"},
		{"failed requests", strings.Replace(sample, `concurrency 16:   "errors": 0`, `concurrency 16:   "errors": 3`, 1), false, "3 of 16 requests failed"},
		{"no streamed latencies", strings.Replace(sample, "concurrency 64:     \"p50\": 0.004465", "concurrency 64:     \"p50\": 0", 1), true, "concurrency 64: no inter-token latency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(strings.NewReader(tt.input))
			if err == nil {
				t.Fatal("parse accepted it")
			}
			if errors.Is(err, errMissing) != tt.missing || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("err = %v; want one that says %q (missing: %v)", err, tt.says, tt.missing)
			}
		})
	}
}

func TestAModelWithoutAPlannerQuantizationIsRefused(t *testing.T) {
	o, err := parse(strings.NewReader(strings.Replace(readSample(t), "2-layer Q8_0", "2-layer F32", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := calibration(o, h100(t), time.Time{}); err == nil || !strings.Contains(err.Error(), `"F32"`) {
		t.Errorf("err = %v, want one naming the weight type", err)
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
