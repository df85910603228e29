package planner

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// tensorParallelCandidates are the shard counts the search tries, up to the
// accelerator's GPUs per node.
var tensorParallelCandidates = []int{1, 2, 4, 8}

// Solve chooses the deployment that meets req's targets with the fewest
// accelerators in total, preferring higher precision, then lower inter-token
// latency and time to first token among equals.
//
// Zero fields of req take the documented defaults. A malformed request
// returns an error wrapping ErrInvalidRequest, ErrUnknownQuantization or
// ErrInvalidCalibration; so does a quantization pinned to a precision the
// runtime has no kernels for (FP8 on moe). When no candidate is feasible Solve returns an error
// wrapping ErrInfeasible that says what would be needed, together with a
// Result whose Rejected lists every candidate and why; Plan is then zero.
// Solve is deterministic and safe for concurrent use.
func Solve(req Request) (Result, error) {
	req = req.withDefaults()
	rt, err := req.validate()
	if err != nil {
		return Result{}, err
	}
	return solve(req, rt)
}

// solve searches the candidates of a defaulted, validated request under rt.
func solve(req Request, rt Runtime) (Result, error) {
	effs, err := efficiencies(req, rt)
	if err != nil {
		return Result{}, err
	}
	var (
		res      Result
		feasible []Plan
		failures []failure
	)
	for _, q := range quantizationsFor(req) {
		for _, par := range parallelismFor(req, rt) {
			c := newCandidate(req, rt, q, par.tp, par.pp, effs[q])
			p, f := evaluate(c, req, rt)
			if f != nil {
				failures = append(failures, *f)
				res.Rejected = append(res.Rejected, Rejection{Quantization: q, TensorParallelism: par.tp, PipelineParallelism: par.pp, Reason: f.reason})
				continue
			}
			feasible = append(feasible, p)
		}
	}
	if res.Rejected == nil {
		res.Rejected = []Rejection{}
	}
	if len(feasible) == 0 {
		res.Alternatives = []Plan{}
		return res, fmt.Errorf("%w: %s", ErrInfeasible, needed(req, rt, failures))
	}
	sort.SliceStable(feasible, func(i, j int) bool { return better(feasible[i], feasible[j]) })
	explain(feasible)
	res.Plan = feasible[0]
	res.Alternatives = feasible[1:]
	return res, nil
}

// quantizationsFor is the pinned quantization or every one, best first.
func quantizationsFor(req Request) []Quantization {
	if q := req.Overrides.Quantization; q != Auto {
		return []Quantization{q}
	}
	return Quantizations()
}

// parallelism is one (tensor, pipeline) split of a replica.
type parallelism struct{ tp, pp int }

// parallelismFor is the pinned shard count or every candidate that fits in
// one node, and, for a runtime whose replicas may span nodes, a full node's
// tensor-parallel group repeated over 2 or 4 nodes as pipeline stages.
func parallelismFor(req Request, rt Runtime) []parallelism {
	var tps []int
	if tp := req.Overrides.TensorParallelism; tp > 0 {
		tps = []int{tp}
	} else {
		for _, tp := range tensorParallelCandidates {
			if tp <= req.Accelerator.GPUsPerNode {
				tps = append(tps, tp)
			}
		}
	}
	var out []parallelism
	for _, tp := range tps {
		out = append(out, parallelism{tp, 1})
	}
	if last := tps[len(tps)-1]; last == req.Accelerator.GPUsPerNode {
		for _, pp := range pipelineCandidates[1:] {
			if pp <= rt.MaxNodesPerReplica {
				out = append(out, parallelism{last, pp})
			}
		}
	}
	return out
}

// failureKind groups rejections so an infeasible error can say what would be
// needed.
type failureKind int

const (
	failUnsupported failureKind = iota
	failShape
	failMemory
	failITL
	failTTFT
	failPrecision
	failReplicas
)

// failure is a rejected candidate; need is the smallest value of the violated
// quantity the candidate reaches (bytes per GPU or seconds).
type failure struct {
	kind   failureKind
	quant  Quantization
	tp, pp int
	need   float64
	reason string
}

// evaluate sizes one candidate: the largest batch that fits memory and the
// latency bounds (the best throughput in offline mode), then the replicas
// for the target and the smallest batch that still meets it.
func evaluate(c candidate, req Request, rt Runtime) (Plan, *failure) {
	a, m := c.acc, c.model
	fail := func(kind failureKind, need float64, format string, args ...any) (Plan, *failure) {
		return Plan{}, &failure{kind: kind, quant: c.quant, tp: c.tp, pp: c.pp, need: need, reason: fmt.Sprintf(format, args...)}
	}
	switch p := req.Overrides.MaxPrecision; {
	case p != "" && p != Auto && c.quant.rank() < p.rank():
		return fail(failPrecision, 0, "the weights are stored as %s; the engine does not convert them up to %s", p, c.quant)
	case !rt.computes(c.quant):
		return fail(failUnsupported, 0, "the %s engine has no %s kernels", rt.Name, c.quant)
	case !rt.serves(c.quant, p):
		return fail(failUnsupported, 0, "%s quantizes full-precision weights only to %v; serve %s from a checkpoint quantized ahead of time (set model.storedPrecision)",
			rt.Name, rt.Quantizations, c.quant)
	case !a.SupportsQuantization(c.quant):
		return fail(failUnsupported, 0, "%s has no %s support", a.Name, c.quant)
	case c.tp > a.GPUsPerNode:
		return fail(failShape, 0, "%d shards exceed the %d GPUs per %s node", c.tp, a.GPUsPerNode, a.Name)
	case c.tp > 1 && a.InterconnectBandwidth <= 0:
		return fail(failShape, 0, "%s has no interconnect for tensor parallelism", a.Name)
	case m.Heads%c.tp != 0 || m.IntermediateSize%c.tp != 0:
		return fail(failShape, 0, "%d heads and %d expert columns do not split into %d shards", m.Heads, m.IntermediateSize, c.tp)
	}
	weights := c.weightBytesPerGPU()
	if weights > float64(a.MemoryBytes) {
		if c.tp*c.pp == 1 {
			return fail(failMemory, weights, "%s of weights exceed %s", gigabytes(weights), gigabytes(float64(a.MemoryBytes)))
		}
		return fail(failMemory, weights, "%s of weights per GPU exceed %s", gigabytes(weights), gigabytes(float64(a.MemoryBytes)))
	}
	usable := float64(a.UsableMemoryBytes())
	if need := c.memoryPerGPU(1); need > usable {
		return fail(failMemory, need, "%s of weights + %s of KV cache for one %d-token context + runtime = %s exceed the %s usable (%.0f%% of %s)",
			gigabytes(weights), gigabytes(c.kvTokens(1)*c.kvBytesPerTokenPerGPU()), c.ctx, gigabytes(need),
			gigabytes(usable), 100*(1-a.MemoryHeadroom), gigabytes(float64(a.MemoryBytes)))
	}
	first := c.at(1)
	itlBound, ttftBound := req.Targets.ITL.Seconds(), req.Targets.TTFT.Seconds()
	if itlBound > 0 && first.itl > itlBound {
		return fail(failITL, first.itl, "ITL is %s even at batch 1, above the %s bound", millis(first.itl), millis(itlBound))
	}
	if ttftBound > 0 && first.ttft > ttftBound {
		return fail(failTTFT, first.ttft, "TTFT is %s even at batch 1, above the %s bound", millis(first.ttft), millis(ttftBound))
	}
	perfs := []performance{first}
	for b := 2; b <= req.MaxBatchSize; b++ {
		p := c.at(b)
		if p.memory > usable || (itlBound > 0 && p.itl > itlBound) || (ttftBound > 0 && p.ttft > ttftBound) {
			break
		}
		perfs = append(perfs, p)
	}
	best := perfs[0]
	for _, p := range perfs {
		if p.throughput > best.throughput {
			best = p
		}
	}
	replicas, chosen := 1, best
	if target := req.Targets.OutputTokensPerSecond; target > 0 {
		replicas = int(math.Ceil(target / best.throughput))
		if max := req.MaxReplicas; max > 0 && replicas > max {
			return fail(failReplicas, float64(replicas), "needs %d replicas of %.0f tok/s for %.0f tok/s, more than the %d allowed",
				replicas, best.throughput, target, max)
		}
		for _, p := range perfs {
			if float64(replicas)*p.throughput >= target {
				chosen = p
				break
			}
		}
	}
	return Plan{
		Quantization:                    c.quant,
		TensorParallelism:               c.tp,
		PipelineParallelism:             c.pp,
		NodesPerReplica:                 c.pp,
		GPUsPerReplica:                  c.tp * c.pp,
		Replicas:                        replicas,
		BatchSize:                       chosen.batch,
		OutputTokensPerSecondPerReplica: round(chosen.throughput, 1),
		TTFTSeconds:                     round(chosen.ttft, 4),
		ITLSeconds:                      round(chosen.itl, 5),
		MemoryPerGPUBytes:               int64(chosen.memory),
	}, nil
}

// better is the objective: fewer GPUs, then higher precision, then lower
// ITL, then lower TTFT, then fewer shards.
func better(a, b Plan) bool {
	switch {
	case a.TotalGPUs() != b.TotalGPUs():
		return a.TotalGPUs() < b.TotalGPUs()
	case a.Quantization != b.Quantization:
		return a.Quantization.rank() < b.Quantization.rank()
	case a.ITLSeconds != b.ITLSeconds:
		return a.ITLSeconds < b.ITLSeconds
	case a.TTFTSeconds != b.TTFTSeconds:
		return a.TTFTSeconds < b.TTFTSeconds
	case a.NodesPerReplica != b.NodesPerReplica:
		return a.NodesPerReplica < b.NodesPerReplica
	}
	return a.TensorParallelism < b.TensorParallelism
}

// explain sets each ranked plan's Reason relative to the best one.
func explain(ranked []Plan) {
	best := ranked[0]
	ranked[0].Reason = fmt.Sprintf("fewest GPUs (%d): %d× %s at batch %d, %s tok/s per replica",
		best.TotalGPUs(), best.Replicas, best.Name(), best.BatchSize, thousands(best.OutputTokensPerSecondPerReplica))
	for i := 1; i < len(ranked); i++ {
		p := &ranked[i]
		switch {
		case p.TotalGPUs() > best.TotalGPUs():
			p.Reason = fmt.Sprintf("needs %d GPUs, %d more than the plan", p.TotalGPUs(), p.TotalGPUs()-best.TotalGPUs())
		case p.Quantization != best.Quantization:
			p.Reason = fmt.Sprintf("same %d GPUs at lower precision (%s)", p.TotalGPUs(), p.Quantization)
		default:
			p.Reason = fmt.Sprintf("same %d GPUs and precision, ITL %s instead of %s", p.TotalGPUs(), millis(p.ITLSeconds), millis(best.ITLSeconds))
		}
	}
}

// needed explains what an infeasible request lacks, from the failures that
// came closest.
func needed(req Request, rt Runtime, failures []failure) string {
	closest := map[failureKind]failure{}
	for _, f := range failures {
		if c, ok := closest[f.kind]; !ok || f.need < c.need {
			closest[f.kind] = f
		}
	}
	var parts []string
	if f, ok := closest[failMemory]; ok {
		remedy := "use an accelerator with more memory, a larger tensor parallelism or a shorter context"
		if rt.MaxNodesPerReplica == 1 && f.tp == req.Accelerator.GPUsPerNode {
			remedy = fmt.Sprintf("one node is not enough and the %s runtime runs a replica on one node only: use an accelerator with more memory, a shorter context, or the vllm runtime, which spreads a replica over nodes", rt.Name)
		}
		parts = append(parts, fmt.Sprintf("the smallest shard (%s) needs %s but %s has %s usable; %s",
			candidateName(f.quant, f.tp, f.pp), gigabytes(f.need), req.Accelerator.Name, gigabytes(float64(req.Accelerator.UsableMemoryBytes())), remedy))
	}
	if f, ok := closest[failITL]; ok {
		parts = append(parts, fmt.Sprintf("the fastest candidate (%s) reaches an ITL of %s at batch 1; allow an ITL of at least %s or use a faster accelerator",
			candidateName(f.quant, f.tp, f.pp), millis(f.need), millis(f.need)))
	}
	if f, ok := closest[failTTFT]; ok {
		parts = append(parts, fmt.Sprintf("the fastest candidate (%s) reaches a TTFT of %s at batch 1; allow a TTFT of at least %s, shorter prompts or a faster accelerator",
			candidateName(f.quant, f.tp, f.pp), millis(f.need), millis(f.need)))
	}
	if f, ok := closest[failReplicas]; ok {
		parts = append(parts, fmt.Sprintf("the best candidate (%s) needs %.0f replicas for the target; allow that many replicas, lower the throughput target or relax the latency bounds",
			candidateName(f.quant, f.tp, f.pp), f.need))
	}
	if len(parts) == 0 {
		for _, f := range failures {
			parts = append(parts, candidateName(f.quant, f.tp, f.pp)+": "+f.reason)
		}
	}
	return strings.Join(parts, "; ")
}

// round rounds x to the given decimal places, keeping JSON output short.
func round(x float64, places int) float64 {
	s := math.Pow(10, float64(places))
	return math.Round(x*s) / s
}
