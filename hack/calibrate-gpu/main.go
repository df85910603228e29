// Command calibrate-gpu turns the output of `hack/gpu-check.sh run` into a
// planner calibration for the moe engine on a GPU, and checks the planner
// against it: for each measurement it prints the prediction with the moe
// runtime's assumed profile and with the fitted calibration beside the
// measured value.
//
//	hack/gpu-check.sh run > gpu-check.txt 2>&1     # on the GPU machine
//	go run ./hack/calibrate-gpu -accelerator h100-80gb -out cal.json gpu-check.txt
//
// It reads a file named by the argument, or stdin. Without -out the
// calibration goes to stdout and the report to stderr. The measurements are
// the batch-1 `moe bench --json` run (prefill and decode) and one decode
// measurement per `moe loadgen` concurrency (batch = concurrency, decode rate
// = concurrency / median inter-token latency), all on the generated model
// with Mixtral-8x7B layer shapes whose layer count and weight type the
// "generating a N-layer TYPE model" line gives. testdata/ holds a synthetic
// sample shaped like the script's output; it is not a measurement.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/moe-operator/moe-operator/engine/bench"
	"github.com/moe-operator/moe-operator/engine/loadgen"
	"github.com/moe-operator/moe-operator/planner"
)

// The workload hack/gpu-check.sh runs: `moe gen-model --dim 4096 --ffn 14336
// --experts 8 --top-k 2 --heads 32 --kv-heads 8 --context 4096 --vocab
// mistral` and `moe bench --prompt-tokens 512 --gen-tokens 64`.
const (
	checkHidden       = 4096
	checkIntermediate = 14336
	checkExperts      = 8
	checkExpertsUsed  = 2
	checkHeads        = 32
	checkKVHeads      = 8
	checkVocab        = 32000
	checkContext      = 4096
	checkPromptTokens = 512
	checkGenTokens    = 64
)

// targetError is the planner's prediction target for a calibrated engine.
const targetError = 0.25

// errMissing reports output that lacks a line the calibration needs.
var errMissing = errors.New("calibrate-gpu: gpu-check output incomplete")

// checkOutput is what the calibration takes from one gpu-check run.
type checkOutput struct {
	// Device is the name `moe devices --bandwidth vulkan` printed.
	Device string
	// Bandwidth is the device's measured copy bandwidth in bytes per second.
	Bandwidth float64
	// Layers and WeightType describe the generated model.
	Layers     int
	WeightType string
	// Bench is the batch-1 `moe bench --json` result.
	Bench bench.Result
	// Loads are the `moe loadgen --json` results by concurrency, ascending.
	Loads []loadgen.Result
}

var (
	bandwidthLine = regexp.MustCompile(`^(.*?):? *memory bandwidth ([0-9.]+) GB/s`)
	modelLine     = regexp.MustCompile(`generating a ([0-9]+)-layer (\S+) model`)
	loadPrefix    = regexp.MustCompile(`^concurrency ([0-9]+): ?(.*)$`)
)

// parse reads gpu-check output. It needs the bandwidth line, the
// generating-a-model line and the bench JSON line; the loadgen rows are
// optional, but one that is there must decode and have no failed request.
// Errors name what was missing or malformed.
func parse(r io.Reader) (checkOutput, error) {
	var (
		out      checkOutput
		benchSet bool
		loads    = map[int]*strings.Builder{}
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if m := loadPrefix.FindStringSubmatch(line); m != nil {
			c, _ := strconv.Atoi(m[1])
			if loads[c] == nil {
				loads[c] = &strings.Builder{}
			}
			loads[c].WriteString(m[2] + "\n")
			continue
		}
		if m := bandwidthLine.FindStringSubmatch(line); m != nil && out.Bandwidth == 0 {
			gbps, err := strconv.ParseFloat(m[2], 64)
			if err != nil || gbps <= 0 {
				return checkOutput{}, fmt.Errorf("calibrate-gpu: line %d: bandwidth %q is not a positive number", n, m[2])
			}
			out.Device, out.Bandwidth = m[1], gbps*1e9
			continue
		}
		if m := modelLine.FindStringSubmatch(line); m != nil {
			layers, err := strconv.Atoi(m[1])
			if err != nil || layers < 1 {
				return checkOutput{}, fmt.Errorf("calibrate-gpu: line %d: layer count %q is not positive", n, m[1])
			}
			out.Layers, out.WeightType = layers, m[2]
			continue
		}
		if strings.HasPrefix(line, "{") && strings.Contains(line, `"decodeTokensPerSecond"`) {
			if err := json.Unmarshal([]byte(line), &out.Bench); err != nil {
				return checkOutput{}, fmt.Errorf("calibrate-gpu: line %d: moe bench JSON: %w", n, err)
			}
			benchSet = true
		}
	}
	if err := sc.Err(); err != nil {
		return checkOutput{}, fmt.Errorf("calibrate-gpu: reading: %w", err)
	}
	switch {
	case out.Bandwidth == 0:
		return checkOutput{}, fmt.Errorf(`%w: no "memory bandwidth N GB/s" line from moe devices --bandwidth vulkan`, errMissing)
	case out.Layers == 0:
		return checkOutput{}, fmt.Errorf(`%w: no "generating a N-layer TYPE model" line`, errMissing)
	case !benchSet:
		return checkOutput{}, fmt.Errorf(`%w: no moe bench --json line ({"prefillTokensPerSecond":...,"decodeTokensPerSecond":...})`, errMissing)
	case out.Bench.DecodeTokensPerSecond <= 0 || out.Bench.PrefillTokensPerSecond <= 0:
		return checkOutput{}, fmt.Errorf("%w: moe bench reports no positive prefill and decode rates", errMissing)
	}
	var cs []int
	for c := range loads {
		cs = append(cs, c)
	}
	sort.Ints(cs)
	for _, c := range cs {
		var res loadgen.Result
		if err := json.Unmarshal([]byte(loads[c].String()), &res); err != nil {
			return checkOutput{}, fmt.Errorf("calibrate-gpu: concurrency %d: moe loadgen JSON: %w", c, err)
		}
		switch {
		case res.Errors > 0:
			return checkOutput{}, fmt.Errorf("calibrate-gpu: concurrency %d: %d of %d requests failed (%s); rerun it or drop its lines",
				c, res.Errors, res.Requests, strings.Join(res.ErrorSamples, "; "))
		case res.Requests < 1 || res.OutputTokens < 1 || res.PromptTokens < 1:
			return checkOutput{}, fmt.Errorf("%w: concurrency %d: loadgen reports no completed requests", errMissing, c)
		case res.ITL.P50 <= 0:
			return checkOutput{}, fmt.Errorf("%w: concurrency %d: no inter-token latency (loadgen needs --stream)", errMissing, c)
		}
		out.Loads = append(out.Loads, res)
	}
	return out, nil
}

// shape is the generated model's planner shape.
func (o checkOutput) shape() planner.Model {
	return planner.Model{
		Name: fmt.Sprintf("gpu-check-%dl", o.Layers), HiddenSize: checkHidden, Layers: o.Layers,
		Heads: checkHeads, KVHeads: checkKVHeads, HeadDim: checkHidden / checkHeads, IntermediateSize: checkIntermediate,
		Experts: checkExperts, ExpertsUsed: checkExpertsUsed, VocabSize: checkVocab, ContextLength: checkContext,
	}
}

// quantization is the planner's precision of the generated weights.
func (o checkOutput) quantization() (planner.Quantization, error) {
	switch strings.ToUpper(o.WeightType) {
	case "Q8_0":
		return planner.Int8, nil
	case "Q4_0", "Q4_K":
		return planner.Int4, nil
	case "BF16", "F16":
		return planner.BF16, nil
	}
	return "", fmt.Errorf("calibrate-gpu: weight type %q has no planner quantization", o.WeightType)
}

// calibration builds the moe engine's calibration on acc from o: the batch-1
// bench run and one decode measurement per loadgen row.
func calibration(o checkOutput, acc planner.Accelerator, now time.Time) (*planner.Calibration, error) {
	q, err := o.quantization()
	if err != nil {
		return nil, err
	}
	m := o.shape()
	cal := &planner.Calibration{
		Version: planner.CalibrationVersion, Engine: planner.RuntimeMoE, Accelerator: acc.Name, CreatedAt: now,
		Measurements: []planner.Measurement{{
			Model: m, Quantization: q, TensorParallelism: 1, BatchSize: 1,
			PromptTokens: checkPromptTokens, OutputTokens: checkGenTokens,
			PrefillTokensPerSecond: o.Bench.PrefillTokensPerSecond,
			DecodeTokensPerSecond:  o.Bench.DecodeTokensPerSecond,
		}},
	}
	for _, r := range o.Loads {
		// Every request starts at once, so the server decodes them as one
		// batch; the median gap between tokens is one decode step of it
		// (the mean would also count the steps stalled by prefills).
		cal.Measurements = append(cal.Measurements, planner.Measurement{
			Model: m, Quantization: q, TensorParallelism: 1, BatchSize: r.Concurrency,
			PromptTokens:          max(1, int(math.Round(float64(r.PromptTokens)/float64(r.Requests)))),
			OutputTokens:          max(1, int(math.Round(float64(r.OutputTokens)/float64(r.Requests)))),
			DecodeTokensPerSecond: float64(r.Concurrency) / r.ITL.P50,
		})
	}
	if err := cal.Validate(); err != nil {
		return nil, err
	}
	return cal, nil
}

// row is one measured figure and the planner's two predictions of it.
type row struct {
	name                         string
	measured, assumed, predicted float64
}

// rows predicts every measured figure of cal on acc, with the moe runtime's
// profile (assumed) and with cal, and returns the factors each used.
func rows(cal *planner.Calibration, acc planner.Accelerator) (out []row, assumedEff, fittedEff planner.Efficiency, err error) {
	for _, m := range cal.Measurements {
		req := planner.Request{Model: m.Model, Accelerator: acc, Runtime: planner.RuntimeMoE,
			Targets: planner.Targets{PromptTokens: m.PromptTokens, OutputTokens: m.OutputTokens, Context: m.PromptTokens + m.OutputTokens}}
		assumed, err := planner.Predict(req, m.Quantization, m.TensorParallelism, 1, m.BatchSize)
		if err != nil {
			return nil, assumedEff, fittedEff, err
		}
		req.Calibration = cal
		fitted, err := planner.Predict(req, m.Quantization, m.TensorParallelism, 1, m.BatchSize)
		if err != nil {
			return nil, assumedEff, fittedEff, err
		}
		assumedEff, fittedEff = assumed.Efficiency, fitted.Efficiency
		out = append(out, row{fmt.Sprintf("batch %d decode tok/s", m.BatchSize), m.DecodeTokensPerSecond,
			assumed.DecodeTokensPerSecond, fitted.DecodeTokensPerSecond})
		if m.PrefillTokensPerSecond > 0 {
			p := float64(m.PromptTokens)
			out = append(out, row{fmt.Sprintf("batch %d prefill tok/s", m.BatchSize), m.PrefillTokensPerSecond,
				p / assumed.PrefillSeconds, p / fitted.PrefillSeconds})
		}
	}
	return out, assumedEff, fittedEff, nil
}

// report writes the factors and, for each measured figure, the predictions
// and their errors.
func report(w io.Writer, o checkOutput, cal *planner.Calibration, acc planner.Accelerator) error {
	q, err := o.quantization()
	if err != nil {
		return err
	}
	rs, assumed, fitted, err := rows(cal, acc)
	if err != nil {
		return err
	}
	source := "the GPU defaults"
	if rt, err := planner.RuntimeByName(planner.RuntimeMoE); err == nil {
		if p, ok := rt.AcceleratorProfile(acc.Name); ok {
			source = p.Source
		}
	}
	fmt.Fprintf(w, "%s (%s): measured copy bandwidth %.0f GB/s, %.0f%% of the catalog's %.0f GB/s\n",
		acc.Name, o.Device, o.Bandwidth/1e9, 100*o.Bandwidth/acc.MemoryBandwidth, acc.MemoryBandwidth/1e9)
	fmt.Fprintf(w, "%s on a %d-layer Mixtral-8x7B-shaped model: assumed bandwidth %.3f compute %.4f (%s)\n",
		q, o.Layers, assumed.Bandwidth, assumed.Compute, source)
	fmt.Fprintf(w, "fitted bandwidth %.3f compute %.4f\n", fitted.Bandwidth, fitted.Compute)
	fmt.Fprintf(w, "%-24s %10s %10s %8s %10s %8s\n", "measurement", "measured", "assumed", "error", "fitted", "error")
	worst := 0.0
	for _, r := range rs {
		e := r.predicted/r.measured - 1
		worst = math.Max(worst, math.Abs(e))
		fmt.Fprintf(w, "%-24s %10.1f %10.1f %+7.1f%% %10.1f %+7.1f%%\n",
			r.name, r.measured, r.assumed, 100*(r.assumed/r.measured-1), r.predicted, 100*e)
	}
	verdict := "within"
	if worst > targetError {
		verdict = "outside"
	}
	fmt.Fprintf(w, "worst fitted error %.1f%%: %s the ±%.0f%% target\n", 100*worst, verdict, 100*targetError)
	return nil
}

func main() {
	log.SetFlags(0)
	accName := flag.String("accelerator", "h100-80gb", "the planner accelerator the check ran on ("+strings.Join(planner.AcceleratorNames(), ", ")+")")
	outPath := flag.String("out", "", "write the calibration here (default: stdout, with the report on stderr)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: calibrate-gpu [-accelerator NAME] [-out FILE] [gpu-check-output]\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 1 {
		flag.Usage()
		os.Exit(2)
	}
	in := io.Reader(os.Stdin)
	if flag.NArg() == 1 {
		f, err := os.Open(flag.Arg(0))
		if err != nil {
			log.Fatal(err)
		}
		defer f.Close()
		in = f
	}
	acc, err := planner.AcceleratorByName(*accName)
	if err != nil {
		log.Fatal(err)
	}
	o, err := parse(in)
	if err != nil {
		log.Fatal(err)
	}
	cal, err := calibration(o, acc, time.Now().UTC().Truncate(time.Second))
	if err != nil {
		log.Fatal(err)
	}
	reportTo := io.Writer(os.Stdout)
	if *outPath == "" {
		reportTo = os.Stderr
		if err := cal.Write(os.Stdout); err != nil {
			log.Fatal(err)
		}
	} else if err := writeFile(*outPath, cal); err != nil {
		log.Fatal(err)
	}
	if err := report(reportTo, o, cal, acc); err != nil {
		log.Fatal(err)
	}
}

// writeFile writes cal to path with Calibration.Write.
func writeFile(path string, cal *planner.Calibration) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("calibrate-gpu: %w", err)
	}
	if err := cal.Write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
