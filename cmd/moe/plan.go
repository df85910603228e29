package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moe-operator/moe-operator/planner"
)

func init() { rootCmd.AddCommand(newPlanCmd()) }

// planFlags are the `moe plan` options.
type planFlags struct {
	model, accelerator, quantization, calibration string
	req                                           planner.Request
	json                                          bool
}

// newPlanCmd builds `moe plan`, which sizes a deployment with the planner.
func newPlanCmd() *cobra.Command {
	var f planFlags
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Choose quantization, tensor parallelism, batch and replicas for throughput and latency targets",
		Long: `Plan sizes a Mixtral deployment without a GPU: it searches quantization
and tensor parallelism (1, 2, 4, 8 up to the GPUs per node) for the fewest GPUs
that meet the targets, then prefers higher precision and lower latency.

The default runtime, moe (this project's engine), plans BF16, Int8 or Int4: it
has no FP8 kernels, and --quantization fp8 with it is an error (Int8 takes the
same memory). Its GPU efficiency factors are assumed, not yet calibrated on a
device; --calibration replaces them (docs/planner.md, "The moe engine on GPUs").
--runtime vllm plans with vLLM's profile: BF16 or FP8 (where the GPU has it),
and a replica may span 2 or 4 nodes (one pipeline stage per node) when one
node's GPUs cannot hold the model. Without --ttft and --itl no latency bound
applies and each replica runs at its maximum throughput (offline mode).

--model takes a catalog name or a JSON file with a custom shape.`,
		Example: `  moe plan --model mixtral-8x7b --accelerator h100-80gb --output-tokens-per-second 5000 --ttft 500ms --itl 50ms
  moe plan --model mixtral-8x22b --accelerator h200 --quantization fp8 --runtime vllm --json
  moe plan --model mixtral-8x22b --accelerator l4 --quantization bf16 --runtime vllm`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runPlan(cmd, &f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.model, "model", "", "model name ("+strings.Join(planner.ModelNames(), ", ")+") or a JSON shape file")
	fl.StringVar(&f.accelerator, "accelerator", "", "accelerator ("+strings.Join(planner.AcceleratorNames(), ", ")+")")
	fl.Float64Var(&f.req.Targets.OutputTokensPerSecond, "output-tokens-per-second", 0, "aggregate generated tokens per second over all replicas (0: one replica)")
	fl.DurationVar(&f.req.Targets.TTFT, "ttft", 0, "mean time-to-first-token bound, e.g. 500ms (0: unbounded)")
	fl.DurationVar(&f.req.Targets.ITL, "itl", 0, "mean inter-token latency bound, e.g. 50ms (0: unbounded)")
	fl.IntVar(&f.req.Targets.PromptTokens, "prompt-tokens", planner.DefaultPromptTokens, "typical prompt length in tokens")
	fl.IntVar(&f.req.Targets.OutputTokens, "output-tokens", planner.DefaultOutputTokens, "typical generated tokens per request")
	fl.IntVar(&f.req.Targets.Context, "context", 0, "longest sequence one request may reach (0: the model's context length)")
	fl.StringVar(&f.quantization, "quantization", "auto", "pin the weight format: auto, bf16, fp8 (vllm only), int8, int4")
	fl.IntVar(&f.req.Overrides.TensorParallelism, "tensor-parallel", 0, "pin the GPUs per replica (0: search)")
	fl.IntVar(&f.req.MaxBatchSize, "max-num-seqs", planner.DefaultMaxBatchSize, "the engine's cap on concurrent sequences per replica")
	fl.StringVar(&f.req.Runtime, "runtime", planner.RuntimeMoE, "the engine's profile: "+strings.Join(planner.RuntimeNames(), ", ")+" (vllm: BF16 or FP8, and replicas may span nodes)")
	fl.StringVar(&f.calibration, "calibration", "", "calibration file written by `moe bench` (overrides efficiency factors)")
	fl.BoolVar(&f.json, "json", false, "print {plan, alternatives, rejected} as JSON")
	_ = cmd.MarkFlagRequired("model")
	_ = cmd.MarkFlagRequired("accelerator")
	return cmd
}

// runPlan resolves the flags into a planner request, solves it and prints
// the result. An infeasible request still prints the rejections before the
// error is returned.
func runPlan(cmd *cobra.Command, f *planFlags) error {
	req := f.req
	var err error
	if req.Model, err = loadModel(f.model); err != nil {
		return err
	}
	if req.Accelerator, err = planner.AcceleratorByName(f.accelerator); err != nil {
		return err
	}
	if req.Overrides.Quantization, err = planner.ParseQuantization(f.quantization); err != nil {
		return err
	}
	if f.calibration != "" {
		if req.Calibration, err = planner.LoadCalibration(f.calibration); err != nil {
			return err
		}
	}
	res, solveErr := planner.Solve(req)
	if solveErr != nil && !errors.Is(solveErr, planner.ErrInfeasible) {
		return solveErr
	}
	out := cmd.OutOrStdout()
	if f.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return fmt.Errorf("encoding plan: %w", err)
		}
	} else if err := planner.WriteTable(out, req, res); err != nil {
		return fmt.Errorf("writing plan: %w", err)
	}
	return solveErr
}

// loadModel returns the catalog preset called name, or the shape in the JSON
// file name when it ends in .json.
func loadModel(name string) (planner.Model, error) {
	if !strings.HasSuffix(name, ".json") {
		return planner.ModelPreset(name)
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return planner.Model{}, fmt.Errorf("reading model shape: %w", err)
	}
	var m planner.Model
	if err := json.Unmarshal(b, &m); err != nil {
		return planner.Model{}, fmt.Errorf("decoding model shape %s: %w", name, err)
	}
	return m, m.Validate()
}
