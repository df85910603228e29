package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/moe-operator/moe-operator/planner"
)

// updateGolden rewrites testdata/*.golden: go test ./cmd/moe -run Plan -update.
// It reuses an -update flag another test file may already have registered.
var updateGolden = func() *bool {
	if f := flag.Lookup("update"); f != nil {
		if g, ok := f.Value.(flag.Getter); ok {
			if b, ok := g.Get().(bool); ok {
				v := b
				return &v
			}
		}
	}
	return flag.Bool("update", false, "rewrite golden files")
}()

// runPlanCommand runs `moe plan args...` and returns what it printed.
func runPlanCommand(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newPlanCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true
	err := cmd.Execute()
	return out.String(), err
}

func TestPlanGolden(t *testing.T) {
	tests := []struct {
		name   string
		golden string
		args   []string
	}{
		{
			"the issue's example picks a plan and ranks the alternatives",
			"plan_h100_5000.golden",
			[]string{"--model", "mixtral-8x7b", "--accelerator", "h100-80gb", "--output-tokens-per-second", "5000", "--ttft", "500ms", "--itl", "50ms"},
		},
		{
			"offline mode maximises throughput per replica",
			"plan_a100_offline.golden",
			[]string{"--model", "mixtral-8x7b", "--accelerator", "a100-80gb", "--prompt-tokens", "1000", "--output-tokens", "1000", "--context", "4096"},
		},
		{
			"pinned quantization and tensor parallelism leave one candidate",
			"plan_8x22b_pinned.golden",
			[]string{"--model", "mixtral-8x22b", "--accelerator", "h200", "--quantization", "int8", "--tensor-parallel", "4", "--output-tokens-per-second", "20000", "--itl", "60ms"},
		},
		{
			"JSON output has the stable shape",
			"plan_l40s.json.golden",
			[]string{"--model", "mixtral-8x7b-instruct", "--accelerator", "l40s", "--output-tokens-per-second", "1000", "--itl", "100ms", "--json"},
		},
		{
			"the vllm runtime spreads a replica over nodes when one node cannot hold it",
			"plan_8x22b_l4_vllm.golden",
			[]string{"--model", "mixtral-8x22b", "--accelerator", "l4", "--quantization", "bf16", "--runtime", "vllm", "--json"},
		},
		{
			"the cpu profile plans the engine on this machine class",
			"plan_cpu.golden",
			[]string{"--model", "testdata/small_moe.json", "--accelerator", "cpu", "--prompt-tokens", "64", "--output-tokens", "64", "--itl", "200ms"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runPlanCommand(t, tt.args...)
			if err != nil {
				t.Fatalf("moe plan %s: %v\n%s", strings.Join(tt.args, " "), err, got)
			}
			checkGolden(t, tt.golden, got)
		})
	}
}

func TestPlanInfeasiblePrintsRejectionsAndNeeds(t *testing.T) {
	got, err := runPlanCommand(t, "--model", "mixtral-8x22b", "--accelerator", "l4", "--itl", "20ms")
	if !errors.Is(err, planner.ErrInfeasible) {
		t.Fatalf("err = %v, want ErrInfeasible", err)
	}
	checkGolden(t, "plan_infeasible.golden", got+"error: "+err.Error()+"\n")
}

func TestPlanRefusesFP8OnTheMoERuntime(t *testing.T) {
	_, err := runPlanCommand(t, "--model", "mixtral-8x7b", "--accelerator", "h100-80gb", "--quantization", "fp8")
	if !errors.Is(err, planner.ErrInvalidRequest) || !strings.Contains(err.Error(), "no FP8 kernels") {
		t.Fatalf("err = %v, want an invalid request saying the moe engine has no FP8 kernels", err)
	}
	if out, err := runPlanCommand(t, "--model", "mixtral-8x7b", "--accelerator", "h100-80gb", "--quantization", "fp8", "--runtime", "vllm"); err != nil {
		t.Fatalf("FP8 on vllm: %v\n%s", err, out)
	}
}

func TestPlanJSONDecodesIntoPlannerTypes(t *testing.T) {
	got, err := runPlanCommand(t, "--model", "mixtral-8x7b", "--accelerator", "h100-80gb", "--output-tokens-per-second", "5000", "--ttft", "500ms", "--itl", "50ms", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var decoded struct {
		Plan         planner.Plan
		Alternatives []planner.Plan
		Rejected     []planner.Rejection
	}
	if err := json.Unmarshal([]byte(got), &decoded); err != nil {
		t.Fatalf("decoding %s: %v", got, err)
	}
	m, _ := planner.ModelPreset("mixtral-8x7b")
	a, _ := planner.AcceleratorByName("h100-80gb")
	want, err := planner.Solve(planner.Request{Model: m, Accelerator: a, Targets: planner.Targets{
		OutputTokensPerSecond: 5000, TTFT: 500e6, ITL: 50e6,
	}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.Plan, decoded.Plan); diff != "" {
		t.Errorf("--json plan differs from planner.Solve (-want +got):\n%s", diff)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal([]byte(got), &keys); err != nil {
		t.Fatal(err)
	}
	var plan map[string]any
	if err := json.Unmarshal(keys["plan"], &plan); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"quantization", "tensorParallelism", "gpusPerReplica", "replicas", "batchSize",
		"outputTokensPerSecondPerReplica", "ttftSeconds", "itlSeconds", "memoryPerGPUBytes"} {
		if _, ok := plan[k]; !ok {
			t.Errorf("plan JSON lacks %q: %s", k, keys["plan"])
		}
	}
}

func TestPlanRejectsBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want error
	}{
		{"an unknown model is named", []string{"--model", "llama", "--accelerator", "h100"}, planner.ErrUnknownModel},
		{"an unknown accelerator is named", []string{"--model", "mixtral-8x7b", "--accelerator", "tpu"}, planner.ErrUnknownAccelerator},
		{"an unknown quantization is named", []string{"--model", "mixtral-8x7b", "--accelerator", "h100", "--quantization", "fp4"}, planner.ErrUnknownQuantization},
		{"prompt and output exceed the context", []string{"--model", "mixtral-8x7b", "--accelerator", "h100", "--context", "512", "--prompt-tokens", "1000"}, planner.ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := runPlanCommand(t, tt.args...); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestPlanReadsCustomShapeAndCalibration(t *testing.T) {
	dir := t.TempDir()
	shape := filepath.Join(dir, "tiny.json")
	if err := os.WriteFile(shape, []byte(`{"hiddenSize":512,"layers":4,"heads":8,"kvHeads":2,"headDim":64,
		"intermediateSize":1024,"experts":4,"expertsUsed":2,"vocabSize":1000,"contextLength":2048}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cal := filepath.Join(dir, "cal.json")
	c := planner.Calibration{Version: planner.CalibrationVersion, Engine: "moe", Accelerator: "cpu",
		Efficiency: map[planner.Quantization]planner.Efficiency{planner.Int8: {Bandwidth: 0.5, Compute: 0.05}}}
	if err := c.Save(cal); err != nil {
		t.Fatal(err)
	}
	got, err := runPlanCommand(t, "--model", shape, "--accelerator", "cpu", "--quantization", "int8",
		"--prompt-tokens", "16", "--output-tokens", "16", "--calibration", cal, "--json")
	if err != nil {
		t.Fatalf("%v\n%s", err, got)
	}
	if !strings.Contains(got, `"quantization": "Int8"`) {
		t.Errorf("want an Int8 plan, got %s", got)
	}
}

// checkGolden compares got with testdata/name, or rewrites it under -update.
func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got); run with -update if intended:\n%s", path, diff)
	}
}
