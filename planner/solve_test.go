package planner

import (
	"errors"
	"math"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// request builds a request for a catalog model and accelerator.
func request(t testing.TB, model, accelerator string, targets Targets, overrides Overrides) Request {
	t.Helper()
	m, err := ModelPreset(model)
	if err != nil {
		t.Fatal(err)
	}
	a, err := AcceleratorByName(accelerator)
	if err != nil {
		t.Fatal(err)
	}
	return Request{Model: m, Accelerator: a, Targets: targets, Overrides: overrides}
}

var issueTargets = Targets{OutputTokensPerSecond: 5000, TTFT: 500 * time.Millisecond, ITL: 50 * time.Millisecond}

// solveReference solves req under referenceRuntime (every precision, the GPU
// defaults): the search tests below check the search, not a runtime's
// factors, so they stay put when a catalog profile changes.
func solveReference(t testing.TB, req Request) (Result, error) {
	t.Helper()
	req = req.withDefaults()
	if err := req.validateShape(); err != nil {
		return Result{}, err
	}
	if err := req.validateRuntime(referenceRuntime); err != nil {
		return Result{}, err
	}
	return solve(req, referenceRuntime)
}

func TestSolveAnswersTheIssueExample(t *testing.T) {
	res, err := solveReference(t, request(t, "mixtral-8x7b", "h100-80gb", issueTargets, Overrides{}))
	if err != nil {
		t.Fatal(err)
	}
	p := res.Plan
	if p.TotalGPUs() != 2 || p.Quantization != FP8 {
		t.Errorf("plan = %d× %s, want 2 GPUs at FP8", p.Replicas, p.Name())
	}
	if p.ITLSeconds > 0.050 || p.TTFTSeconds > 0.5 {
		t.Errorf("plan misses the latency bounds: ITL %v, TTFT %v", p.ITLSeconds, p.TTFTSeconds)
	}
	if got := p.OutputTokensPerSecondPerReplica * float64(p.Replicas); got < 5000-0.1 {
		t.Errorf("plan delivers %.0f tok/s, want at least 5000", got)
	}
	want := Rejection{Quantization: BF16, TensorParallelism: 1, PipelineParallelism: 1, Reason: "93.4 GB of weights exceed 80 GB"}
	if len(res.Rejected) == 0 || res.Rejected[0] != want {
		t.Errorf("rejected = %v, want first %v", res.Rejected, want)
	}
	if got := want.String(); got != "BF16 TP1: 93.4 GB of weights exceed 80 GB" {
		t.Errorf("Rejection.String() = %q", got)
	}
	if p.Reason == "" {
		t.Error("the plan carries no reason")
	}
}

func TestEveryFeasiblePlanMeetsItsTargets(t *testing.T) {
	req := request(t, "mixtral-8x7b", "h100-80gb", issueTargets, Overrides{})
	res, err := solveReference(t, req)
	if err != nil {
		t.Fatal(err)
	}
	all := append([]Plan{res.Plan}, res.Alternatives...)
	if !sort.SliceIsSorted(all, func(i, j int) bool { return better(all[i], all[j]) }) {
		t.Error("alternatives are not ranked by the objective")
	}
	for _, p := range all {
		if p.OutputTokensPerSecondPerReplica*float64(p.Replicas) < 5000-0.1 {
			t.Errorf("%s: %d replicas × %.0f tok/s miss 5000", p.Name(), p.Replicas, p.OutputTokensPerSecondPerReplica)
		}
		if p.Replicas > 1 && p.OutputTokensPerSecondPerReplica*float64(p.Replicas-1) >= 5000 {
			t.Errorf("%s: one replica fewer would do", p.Name())
		}
		if p.ITLSeconds > 0.05 || p.TTFTSeconds > 0.5 {
			t.Errorf("%s misses a latency bound: ITL %v TTFT %v", p.Name(), p.ITLSeconds, p.TTFTSeconds)
		}
		if p.GPUsPerReplica != p.TensorParallelism {
			t.Errorf("%s: %d GPUs per replica", p.Name(), p.GPUsPerReplica)
		}
	}
}

func TestOverridesPinTheSearch(t *testing.T) {
	tests := []struct {
		name      string
		overrides Overrides
		wantQuant Quantization
		wantTP    int
	}{
		{"a pinned quantization is kept", Overrides{Quantization: BF16}, BF16, 0},
		{"a pinned tensor parallelism is kept", Overrides{TensorParallelism: 8}, "", 8},
		{"both pinned leave one candidate", Overrides{Quantization: Int8, TensorParallelism: 4}, Int8, 4},
		{"Auto searches", Overrides{Quantization: Auto}, FP8, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := solveReference(t, request(t, "mixtral-8x7b", "h100-80gb", issueTargets, tt.overrides))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range append([]Plan{res.Plan}, res.Alternatives...) {
				if tt.wantQuant != "" && tt.overrides.Quantization != Auto && tt.overrides.Quantization != "" && p.Quantization != tt.wantQuant {
					t.Errorf("%s offered with %s pinned", p.Name(), tt.wantQuant)
				}
				if tt.overrides.TensorParallelism > 0 && p.TensorParallelism != tt.wantTP {
					t.Errorf("%s offered with TP%d pinned", p.Name(), tt.wantTP)
				}
			}
			if tt.overrides.Quantization == Auto && (res.Plan.Quantization != tt.wantQuant || res.Plan.TensorParallelism != tt.wantTP) {
				t.Errorf("plan = %s, want %s TP%d", res.Plan.Name(), tt.wantQuant, tt.wantTP)
			}
		})
	}
}

func TestInfeasibleTargetsSayWhatWouldBeNeeded(t *testing.T) {
	tests := []struct {
		name    string
		req     Request
		reasons []string // in the rejections
		needs   []string // in the error
	}{
		{
			"an ITL below batch-1 latency asks for a looser bound",
			request(t, "mixtral-8x7b", "a100-80gb", Targets{ITL: 2 * time.Millisecond}, Overrides{}),
			[]string{"ITL is", "even at batch 1, above the 2.00 ms bound"},
			[]string{"allow an ITL of at least"},
		},
		{
			"FP8 pinned on an Ampere GPU is unsupported",
			func() Request {
				r := request(t, "mixtral-8x7b", "a100-80gb", Targets{}, Overrides{Quantization: FP8})
				r.Runtime = RuntimeVLLM
				return r
			}(),
			[]string{"a100-80gb has no FP8 support"},
			[]string{"FP8 TP1: a100-80gb has no FP8 support"},
		},
		{
			"tensor parallelism beyond a node is refused",
			request(t, "mixtral-8x7b", "h100-80gb", Targets{}, Overrides{TensorParallelism: 16}),
			[]string{"16 shards exceed the 8 GPUs per h100-80gb node"},
			nil,
		},
		{
			"tensor parallelism on a device without an interconnect is refused",
			func() Request {
				r := request(t, "mixtral-8x7b", "cpu", Targets{Context: 4096}, Overrides{TensorParallelism: 2})
				r.Accelerator.GPUsPerNode = 2
				return r
			}(),
			[]string{"cpu has no interconnect for tensor parallelism"},
			nil,
		},
		{
			"a model larger than every shard asks for more memory",
			request(t, "mixtral-8x22b", "l4", Targets{}, Overrides{Quantization: BF16}),
			[]string{"35.2 GB of weights per GPU exceed 24 GB"},
			[]string{"needs 35.2 GB", "more memory"},
		},
		{
			"a long context that leaves no room for its KV cache names the context",
			request(t, "mixtral-8x7b", "cpu", Targets{PromptTokens: 100, OutputTokens: 100, Context: 32768}, Overrides{Quantization: Int4}),
			[]string{"26.3 GB of weights exceed 25.8 GB"},
			[]string{"shorter context"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			solve := func(r Request) (Result, error) { return solveReference(t, r) }
			if tt.req.Accelerator.ResourceName == "" {
				solve = Solve // the cpu accelerator is the moe runtime's
			}
			res, err := solve(tt.req)
			if !errors.Is(err, ErrInfeasible) {
				t.Fatalf("err = %v, want ErrInfeasible", err)
			}
			if res.Plan.GPUsPerReplica != 0 || len(res.Alternatives) != 0 {
				t.Errorf("infeasible result carries a plan: %+v", res)
			}
			var all strings.Builder
			for _, r := range res.Rejected {
				all.WriteString(r.String() + "\n")
			}
			for _, s := range tt.reasons {
				if !strings.Contains(all.String(), s) {
					t.Errorf("rejections lack %q:\n%s", s, all.String())
				}
			}
			for _, s := range tt.needs {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error lacks %q: %v", s, err)
				}
			}
		})
	}
}

func TestInvalidRequestsAreRefused(t *testing.T) {
	base := request(t, "mixtral-8x7b", "h100-80gb", Targets{}, Overrides{})
	tests := []struct {
		name   string
		mutate func(*Request)
		want   error
	}{
		{"a negative throughput target", func(r *Request) { r.Targets.OutputTokensPerSecond = -1 }, ErrInvalidRequest},
		{"a negative latency bound", func(r *Request) { r.Targets.ITL = -time.Millisecond }, ErrInvalidRequest},
		{"a context beyond the model's", func(r *Request) { r.Targets.Context = 1 << 20 }, ErrInvalidRequest},
		{"a request longer than the context", func(r *Request) { r.Targets.Context = 512 }, ErrInvalidRequest},
		{"an unknown quantization", func(r *Request) { r.Overrides.Quantization = "FP4" }, ErrUnknownQuantization},
		{"a negative tensor parallelism", func(r *Request) { r.Overrides.TensorParallelism = -2 }, ErrInvalidRequest},
		{"a zero-value accelerator", func(r *Request) { r.Accelerator = Accelerator{} }, ErrInvalidRequest},
		{"a malformed model", func(r *Request) { r.Model.Heads = 0 }, ErrInvalidRequest},
		{"a calibration from another accelerator", func(r *Request) {
			r.Calibration = &Calibration{Version: CalibrationVersion, Accelerator: "cpu"}
		}, ErrInvalidCalibration},
		{"FP8 pinned on the moe runtime, which has no FP8 kernels", func(r *Request) { r.Overrides.Quantization = FP8 }, ErrInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := base
			tt.mutate(&req)
			if _, err := Solve(req); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestOfflineModeMaximisesThroughputPerReplica(t *testing.T) {
	pinned := Overrides{Quantization: FP8, TensorParallelism: 2}
	offline, err := solveReference(t, request(t, "mixtral-8x7b", "h100-80gb", Targets{}, pinned))
	if err != nil {
		t.Fatal(err)
	}
	bounded, err := solveReference(t, request(t, "mixtral-8x7b", "h100-80gb", Targets{ITL: 30 * time.Millisecond}, pinned))
	if err != nil {
		t.Fatal(err)
	}
	if offline.Plan.OutputTokensPerSecondPerReplica <= bounded.Plan.OutputTokensPerSecondPerReplica {
		t.Errorf("offline %.0f tok/s is not above ITL-bounded %.0f", offline.Plan.OutputTokensPerSecondPerReplica, bounded.Plan.OutputTokensPerSecondPerReplica)
	}
	if offline.Plan.BatchSize != DefaultMaxBatchSize {
		t.Errorf("offline batch = %d, want the cap %d (memory allows it)", offline.Plan.BatchSize, DefaultMaxBatchSize)
	}
}

func TestSolveIsDeterministic(t *testing.T) {
	req := request(t, "mixtral-8x22b", "h200", issueTargets, Overrides{})
	a, errA := Solve(req)
	b, errB := Solve(req)
	if diff := cmp.Diff(a, b); diff != "" || (errA == nil) != (errB == nil) {
		t.Errorf("two solves differ:\n%s", diff)
	}
}

func TestMemoryGrowsWithTheBatchByTheKVCache(t *testing.T) {
	req := request(t, "mixtral-8x7b", "h100-80gb", Targets{}, Overrides{}).withDefaults()
	c := candidate{model: req.Model, acc: req.Accelerator, quant: BF16, tp: 2, pp: 1, eff: defaultEfficiency[BF16],
		prompt: 1000, output: 250, ctx: 32768}
	// Below 32768/1250 sequences the KV reservation is one full context.
	small, large := c.memoryPerGPU(10), c.memoryPerGPU(100)
	kv := 100 * 1250 * float64(req.Model.KVBytesPerToken(2)) / 2
	if got := large - small; math.Abs(got-(kv-32768*float64(req.Model.KVBytesPerToken(2))/2)) > 0.05*kv {
		t.Errorf("memory(100) − memory(10) = %s, want about the KV difference", gigabytes(got))
	}
}

func TestMaxReplicasMakesUnreachableTargetsInfeasible(t *testing.T) {
	m, _ := ModelPreset("mixtral-8x7b")
	a, _ := AcceleratorByName("h100-80gb")
	req := Request{Model: m, Accelerator: a, Targets: Targets{OutputTokensPerSecond: 200000, ITL: 50 * time.Millisecond}}
	res, err := Solve(req)
	if err != nil {
		t.Fatal(err)
	}
	req.MaxReplicas = 1
	_, err = Solve(req)
	if !errors.Is(err, ErrInfeasible) || !strings.Contains(err.Error(), "replicas") {
		t.Fatalf("with 1 replica allowed: err %v, want an infeasible error about replicas", err)
	}
	req.MaxReplicas = res.Plan.Replicas
	if got, err := Solve(req); err != nil || got.Plan.Replicas != res.Plan.Replicas {
		t.Fatalf("with exactly %d replicas allowed: %v, %+v", res.Plan.Replicas, err, got.Plan)
	}
}

func TestMaxPrecisionNeverPlansAnUpcast(t *testing.T) {
	m, _ := ModelPreset("mixtral-8x7b")
	a, _ := AcceleratorByName("h100-80gb")
	req := Request{Model: m, Accelerator: a, Targets: Targets{OutputTokensPerSecond: 100}}
	req.Overrides.MaxPrecision = Int4
	res, err := Solve(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Plan.Quantization != Int4 {
		t.Fatalf("weights stored as Int4 planned as %s", res.Plan.Quantization)
	}
	for _, alt := range res.Alternatives {
		if alt.Quantization != Int4 {
			t.Fatalf("alternative %s above the stored precision", alt.Name())
		}
	}
	req.Overrides.Quantization = BF16
	if _, err := Solve(req); !errors.Is(err, ErrInfeasible) {
		t.Fatalf("BF16 pinned on Int4 weights: err %v", err)
	}
}
