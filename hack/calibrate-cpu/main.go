// Command calibrate-cpu checks the planner's `cpu` profile against the
// engine: it calibrates the profile with one `moe bench` measurement (the
// calibration file the engine writes), then predicts the decode rate of
// other model sizes and measures them, printing prediction, measurement
// and error for each.
//
//	go run ./hack/calibrate-cpu [-threads 1] [-type q8_0] [-work DIR]
//
// The models are generated (engine/modelgen) with the mini preset's
// proportions at three widths; the calibration one is the middle size.
// Run it on a quiet machine: the figures are throughputs.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/moe-operator/moe-operator/engine/bench"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tensor"
	"github.com/moe-operator/moe-operator/planner"
)

func main() {
	threads := flag.Int("threads", 1, "engine threads")
	typ := flag.String("type", "q8_0", "weight type (q8_0 or q4_0)")
	work := flag.String("work", os.TempDir(), "where models and the calibration file go")
	prompt := flag.Int("prompt", 128, "prompt tokens")
	gen := flag.Int("gen", 64, "decoded tokens")
	flag.Parse()
	t, err := tensor.ParseDType(*typ)
	if err != nil {
		log.Fatal(err)
	}
	sizes := []struct {
		name          string
		dim, ffn, lay int
	}{
		{"cal-m", 768, 2688, 8}, // the calibration run
		{"cal-s", 512, 1792, 8},
		{"cal-l", 1024, 3584, 8}, // the mini preset's shape
	}
	o := bench.Options{PromptTokens: *prompt, GenTokens: *gen}
	calPath := filepath.Join(*work, "calibration-cpu.json")
	os.Remove(calPath)
	type row struct {
		name              string
		measured, predict float64
	}
	var rows []row
	for i, s := range sizes {
		cfg := modelgen.Config{Name: s.name, Layers: s.lay, Dim: s.dim, Heads: s.dim / 128, KVHeads: max(1, s.dim/512),
			FFN: s.ffn, Experts: 8, TopK: 2, Context: 4096, Type: t, Vocab: "mistral"}
		path := filepath.Join(*work, fmt.Sprintf("%s-%s.gguf", s.name, *typ))
		if _, err := os.Stat(path); err != nil {
			if err := modelgen.Write(path, cfg); err != nil {
				log.Fatal(err)
			}
		}
		m, err := model.Open(path, model.LoadOptions{Threads: *threads})
		if err != nil {
			log.Fatal(err)
		}
		r, err := bench.Run(m, o)
		if err != nil {
			log.Fatal(err)
		}
		if i == 0 {
			if err := bench.WriteCalibration(calPath, "cpu", m, o, r); err != nil {
				log.Fatal(err)
			}
		}
		shape := planner.Model{Name: s.name, HiddenSize: s.dim, Layers: s.lay, Heads: m.Config.Heads, KVHeads: m.Config.KVHeads,
			HeadDim: m.Config.HeadDim, IntermediateSize: s.ffn, Experts: 8, ExpertsUsed: 2, VocabSize: m.Config.Vocab, ContextLength: 4096}
		q := planner.Quantization(bench.Quantization(m))
		m.Close()
		cal, err := planner.LoadCalibration(calPath)
		if err != nil {
			log.Fatal(err)
		}
		acc, _ := planner.AcceleratorByName("cpu")
		p, err := planner.Predict(planner.Request{Model: shape, Accelerator: acc, Calibration: cal,
			Targets: planner.Targets{PromptTokens: *prompt, OutputTokens: *gen, Context: 4096}}, q, 1, 1, 1)
		if err != nil {
			log.Fatal(err)
		}
		rows = append(rows, row{s.name, r.DecodeTokensPerSecond, p.DecodeTokensPerSecond})
	}
	fmt.Printf("%-6s %10s %10s %8s   (%s, %d threads; calibrated on %s)\n", "model", "measured", "predicted", "error", *typ, *threads, sizes[0].name)
	for _, r := range rows {
		fmt.Printf("%-6s %10.1f %10.1f %+7.1f%%\n", r.name, r.measured, r.predict, 100*(r.predict/r.measured-1))
	}
}
