// Package bench measures the engine: prefill and decode throughput of one
// sequence and the process's peak resident memory, and writes the
// calibration file the planner reads (docs/planner.md, "Calibration file";
// the engine writes that JSON shape itself so it never imports the planner).
package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/sample"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

// Options set the workload.
type Options struct {
	PromptTokens int
	GenTokens    int
}

// Result is one measurement.
type Result struct {
	PrefillTokensPerSecond float64 `json:"prefillTokensPerSecond"`
	DecodeTokensPerSecond  float64 `json:"decodeTokensPerSecond"`
	PeakRSSBytes           int64   `json:"peakRSSBytes"`
}

// Prompt returns the deterministic benchmark prompt: ordinary token ids
// spread over the vocabulary, the same sequence test/reference/llama.mjs
// uses for llama.cpp.
func Prompt(n, vocab int) []int32 {
	p := make([]int32, n)
	for i := range p {
		p[i] = int32(1000 + (i*7919)%20000)
		if int(p[i]) >= vocab {
			p[i] = int32(259 + i%(vocab-259))
		}
	}
	return p
}

// Run prefills the prompt once and then decodes GenTokens tokens greedily
// (ignoring end-of-sequence), timing each phase.
func Run(m *model.Model, o Options) (Result, error) {
	if o.PromptTokens < 1 || o.GenTokens < 1 {
		return Result{}, fmt.Errorf("bench: prompt and generated tokens must be positive")
	}
	s := m.NewSession(o.PromptTokens + o.GenTokens)
	prompt := Prompt(o.PromptTokens, m.Config.Vocab)
	t0 := time.Now()
	logits, err := s.Prefill(prompt, false)
	if err != nil {
		return Result{}, err
	}
	prefill := time.Since(t0)
	t0 = time.Now()
	for i := 0; i < o.GenTokens; i++ {
		if logits, err = s.Decode(sample.Argmax(logits)); err != nil {
			return Result{}, err
		}
	}
	decode := time.Since(t0)
	return Result{
		PrefillTokensPerSecond: float64(o.PromptTokens) / prefill.Seconds(),
		DecodeTokensPerSecond:  float64(o.GenTokens) / decode.Seconds(),
		PeakRSSBytes:           PeakRSS(),
	}, nil
}

// PeakRSS is the process's peak resident set size in bytes (0 if unknown).
func PeakRSS() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss * 1024 // kilobytes on Linux
}

// Quantization names the planner's precision family of the model's expert
// weights ("" when it has none, as for F32).
func Quantization(m *model.Model) string {
	switch m.WeightType() {
	case tensor.Q8_0:
		return "Int8"
	case tensor.Q4_0, tensor.Q4_K:
		return "Int4"
	case tensor.F16, tensor.BF16:
		return "BF16"
	}
	return ""
}

// calibration mirrors the planner's calibration file (version 1).
type calibration struct {
	Version      int           `json:"version"`
	Engine       string        `json:"engine"`
	Accelerator  string        `json:"accelerator"`
	CreatedAt    time.Time     `json:"createdAt"`
	Measurements []measurement `json:"measurements"`
}

type measurement struct {
	Model                  shape   `json:"model"`
	Quantization           string  `json:"quantization"`
	TensorParallelism      int     `json:"tensorParallelism"`
	BatchSize              int     `json:"batchSize"`
	PromptTokens           int     `json:"promptTokens"`
	OutputTokens           int     `json:"outputTokens"`
	PrefillTokensPerSecond float64 `json:"prefillTokensPerSecond"`
	DecodeTokensPerSecond  float64 `json:"decodeTokensPerSecond"`
}

type shape struct {
	Name             string `json:"name,omitempty"`
	HiddenSize       int    `json:"hiddenSize"`
	Layers           int    `json:"layers"`
	Heads            int    `json:"heads"`
	KVHeads          int    `json:"kvHeads"`
	HeadDim          int    `json:"headDim"`
	IntermediateSize int    `json:"intermediateSize"`
	Experts          int    `json:"experts"`
	ExpertsUsed      int    `json:"expertsUsed"`
	VocabSize        int    `json:"vocabSize"`
	ContextLength    int    `json:"contextLength"`
}

// WriteCalibration writes (or extends, if the file exists) a calibration
// file for accelerator with this measurement.
func WriteCalibration(path, accelerator string, m *model.Model, o Options, r Result) error {
	q := Quantization(m)
	if q == "" {
		return fmt.Errorf("bench: %s weights have no planner quantization to calibrate", m.WeightType())
	}
	cal := calibration{Version: 1, Engine: "moe", Accelerator: accelerator}
	if b, err := os.ReadFile(path); err == nil {
		if err := json.Unmarshal(b, &cal); err != nil {
			return fmt.Errorf("bench: existing calibration %s: %w", path, err)
		}
		if cal.Accelerator != accelerator {
			return fmt.Errorf("bench: %s calibrates %q, not %q", path, cal.Accelerator, accelerator)
		}
	}
	c := m.Config
	cal.CreatedAt = time.Now().UTC().Truncate(time.Second)
	cal.Measurements = append(cal.Measurements, measurement{
		Model: shape{Name: c.Name, HiddenSize: c.Dim, Layers: c.Layers, Heads: c.Heads, KVHeads: c.KVHeads, HeadDim: c.HeadDim,
			IntermediateSize: c.FFN, Experts: c.Experts, ExpertsUsed: c.TopK, VocabSize: c.Vocab, ContextLength: c.Context},
		Quantization: q, TensorParallelism: m.TensorParallel(), BatchSize: 1,
		PromptTokens: o.PromptTokens, OutputTokens: o.GenTokens,
		PrefillTokensPerSecond: r.PrefillTokensPerSecond, DecodeTokensPerSecond: r.DecodeTokensPerSecond,
	})
	b, err := json.MarshalIndent(cal, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
