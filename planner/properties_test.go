package planner

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// scenario is one point of the property grid.
type scenario struct {
	model, accelerator string
	ttft               time.Duration
}

func (s scenario) String() string {
	return fmt.Sprintf("%s on %s, TTFT %v", s.model, s.accelerator, s.ttft)
}

// scenarios covers every GPU in the catalog with both model sizes, with and
// without a TTFT bound.
func scenarios() []scenario {
	var out []scenario
	for _, m := range []string{"mixtral-8x7b", "mixtral-8x22b"} {
		for _, a := range AcceleratorNames() {
			if a == "cpu" {
				continue
			}
			for _, ttft := range []time.Duration{0, time.Second} {
				out = append(out, scenario{m, a, ttft})
			}
		}
	}
	return out
}

var (
	propertyTargets = []float64{0, 500, 2000, 5000, 20000, 60000}
	propertyITLs    = []time.Duration{0, 200 * time.Millisecond, 80 * time.Millisecond, 40 * time.Millisecond, 20 * time.Millisecond, 10 * time.Millisecond}
)

func (s scenario) request(t testing.TB, target float64, itl time.Duration) Request {
	t.Helper()
	m, err := ModelPreset(s.model)
	if err != nil {
		t.Fatal(err)
	}
	a, err := AcceleratorByName(s.accelerator)
	if err != nil {
		t.Fatal(err)
	}
	return Request{Model: m, Accelerator: a, Targets: Targets{
		OutputTokensPerSecond: target, ITL: itl, TTFT: s.ttft, Context: 8192,
	}}
}

// moeRuntime is the catalog's moe profile, which the grid plans with.
func moeRuntime(t testing.TB) Runtime {
	t.Helper()
	return mustRuntime(t, RuntimeMoE)
}

// solveOrInfeasible returns the result, failing the test on any error other
// than ErrInfeasible.
func solveOrInfeasible(t *testing.T, req Request) (Result, bool) {
	t.Helper()
	res, err := Solve(req)
	if errors.Is(err, ErrInfeasible) {
		return res, false
	}
	if err != nil {
		t.Fatalf("Solve: %v", err)
	}
	return res, true
}

func TestHigherThroughputTargetNeverGetsFewerGPUs(t *testing.T) {
	for _, s := range scenarios() {
		for _, itl := range propertyITLs {
			prevGPUs, prevTarget, infeasible := 0, 0.0, false
			for _, target := range propertyTargets {
				res, ok := solveOrInfeasible(t, s.request(t, target, itl))
				if !ok {
					infeasible = true
					continue
				}
				if infeasible {
					t.Errorf("%v, ITL %v: %.0f tok/s is feasible but a lower target was not", s, itl, target)
				}
				if g := res.Plan.TotalGPUs(); g < prevGPUs {
					t.Errorf("%v, ITL %v: %.0f tok/s gets %d GPUs, fewer than the %d for %.0f tok/s", s, itl, target, g, prevGPUs, prevTarget)
				}
				prevGPUs, prevTarget = res.Plan.TotalGPUs(), target
			}
		}
	}
}

func TestTighterITLNeverPutsMoreSequencesInFlight(t *testing.T) {
	for _, s := range scenarios() {
		for _, target := range propertyTargets[1:] {
			prev, prevITL := 0, time.Duration(0)
			for _, itl := range propertyITLs {
				res, ok := solveOrInfeasible(t, s.request(t, target, itl))
				if !ok {
					break
				}
				n := res.Plan.BatchSize * res.Plan.Replicas
				if prev > 0 && n > prev {
					t.Errorf("%v, %.0f tok/s: ITL %v gets %d sequences in flight (%d× %s at batch %d), more than %d for ITL %v",
						s, target, itl, n, res.Plan.Replicas, res.Plan.Name(), res.Plan.BatchSize, prev, prevITL)
				}
				prev, prevITL = n, itl
			}
		}
	}
}

// The batch is a property of a deployment shape (quantization and tensor
// parallelism): when the search is free, a tighter ITL may move to a larger
// shape that carries a larger batch per replica, so the automatic choice is
// checked on the sequences in flight instead (Little's law: throughput ×
// ITL), below.
func TestTighterITLNeverGetsALargerBatch(t *testing.T) {
	for _, s := range scenarios() {
		for _, q := range moeRuntime(t).Kernels {
			for _, tp := range tensorParallelCandidates {
				for _, target := range propertyTargets {
					prevBatch := 0
					for _, itl := range propertyITLs {
						req := s.request(t, target, itl)
						req.Overrides = Overrides{Quantization: q, TensorParallelism: tp}
						res, ok := solveOrInfeasible(t, req)
						if !ok {
							break
						}
						if b := res.Plan.BatchSize; prevBatch > 0 && b > prevBatch {
							t.Errorf("%v, %s TP%d, %.0f tok/s: ITL %v gets batch %d, larger than %d", s, q, tp, target, itl, b, prevBatch)
						}
						prevBatch = res.Plan.BatchSize
					}
				}
			}
		}
	}
}

func TestAPlanNeverExceedsMemory(t *testing.T) {
	for _, s := range scenarios() {
		for _, target := range propertyTargets {
			for _, itl := range propertyITLs {
				req := s.request(t, target, itl)
				res, ok := solveOrInfeasible(t, req)
				if !ok {
					continue
				}
				usable := req.Accelerator.UsableMemoryBytes()
				for _, p := range append([]Plan{res.Plan}, res.Alternatives...) {
					if p.MemoryPerGPUBytes > usable {
						t.Errorf("%v: %s uses %s per GPU, more than the %s usable", s, p.Name(),
							gigabytes(float64(p.MemoryPerGPUBytes)), gigabytes(float64(usable)))
					}
					if p.MemoryPerGPUBytes < req.Model.WeightBytesPerShard(p.Quantization, p.TensorParallelism) {
						t.Errorf("%v: %s reports less memory than its weights", s, p.Name())
					}
				}
			}
		}
	}
}

func TestInt4IsChosenOnlyWhenItSavesGPUsOrIsNeeded(t *testing.T) {
	chosen := 0
	for _, s := range scenarios() {
		for _, target := range propertyTargets {
			for _, itl := range propertyITLs {
				req := s.request(t, target, itl)
				res, ok := solveOrInfeasible(t, req)
				if !ok || res.Plan.Quantization != Int4 {
					continue
				}
				chosen++
				for _, q := range []Quantization{BF16, Int8} {
					pinned := req
					pinned.Overrides.Quantization = q
					alt, ok := solveOrInfeasible(t, pinned)
					if ok && alt.Plan.TotalGPUs() <= res.Plan.TotalGPUs() {
						t.Errorf("%v, %.0f tok/s, ITL %v: Int4 chosen with %d GPUs although %s meets the targets with %d",
							s, target, itl, res.Plan.TotalGPUs(), alt.Plan.Name(), alt.Plan.TotalGPUs())
					}
				}
			}
		}
	}
	if chosen == 0 {
		t.Error("the grid never chose Int4, so the property was not exercised")
	}
}

func TestBatchOneReadsTwoExpertsAndLargeBatchesReadAll(t *testing.T) {
	tests := []struct {
		name   string
		tokens float64
		want   float64
	}{
		{"one token touches k = 2 experts", 1, 2},
		{"two tokens touch 3.5 experts on average", 2, 3.5},
		{"a batch of 64 touches all 8 experts", 64, 8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := expertsTouched(8, 2, tt.tokens); abs(got-tt.want) > 1e-3 {
				t.Errorf("expertsTouched(8, 2, %v) = %v, want %v", tt.tokens, got, tt.want)
			}
		})
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
