package planner

import (
	"encoding/json"
	"fmt"
)

// Plan is one feasible deployment. Its JSON shape is stable: `moe plan
// --json` prints it and the reconciler writes it to status.plan.
type Plan struct {
	Quantization      Quantization `json:"quantization"`
	TensorParallelism int          `json:"tensorParallelism"`
	// PipelineParallelism is the pipeline stages per replica: 1, or one
	// stage per node when a replica spans nodes.
	PipelineParallelism int `json:"pipelineParallelism"`
	// NodesPerReplica is the nodes one replica spans: 1 unless the model
	// needs more GPUs than one node has (a multi-node runtime only).
	NodesPerReplica int `json:"nodesPerReplica"`
	// GPUsPerReplica is TensorParallelism × PipelineParallelism (one shard
	// per device).
	GPUsPerReplica int `json:"gpusPerReplica"`
	Replicas       int `json:"replicas"`
	// BatchSize is the concurrent sequences per replica the plan assumes:
	// the smallest that meets the throughput target with Replicas replicas.
	BatchSize int `json:"batchSize"`
	// OutputTokensPerSecondPerReplica is the predicted generated-token rate
	// of one replica at BatchSize.
	OutputTokensPerSecondPerReplica float64 `json:"outputTokensPerSecondPerReplica"`
	TTFTSeconds                     float64 `json:"ttftSeconds"`
	ITLSeconds                      float64 `json:"itlSeconds"`
	// MemoryPerGPUBytes is weights + KV cache + activations + runtime on
	// one device at BatchSize.
	MemoryPerGPUBytes int64 `json:"memoryPerGPUBytes"`
	// Reason is one human sentence on why this plan ranks where it does.
	Reason string `json:"reason,omitempty"`
}

// TotalGPUs is GPUsPerReplica × Replicas.
func (p Plan) TotalGPUs() int { return p.GPUsPerReplica * p.Replicas }

// Name is the candidate's short name, such as "BF16 TP2" or "BF16 TP8 PP2".
func (p Plan) Name() string {
	return candidateName(p.Quantization, p.TensorParallelism, p.PipelineParallelism)
}

// Rejection is a candidate the search discarded and why.
type Rejection struct {
	Quantization      Quantization `json:"quantization"`
	TensorParallelism int          `json:"tensorParallelism"`
	// PipelineParallelism is the candidate's stages (nodes); 1 for one node.
	PipelineParallelism int `json:"pipelineParallelism"`
	// Reason is a sentence without the candidate's name, such as "93.4 GB
	// of weights exceed 80 GB".
	Reason string `json:"reason"`
}

// String is the candidate's name and the reason: "BF16 TP1: 93.4 GB of
// weights exceed 80 GB".
func (r Rejection) String() string {
	return candidateName(r.Quantization, r.TensorParallelism, r.PipelineParallelism) + ": " + r.Reason
}

// Result is Solve's answer.
type Result struct {
	// Plan is the chosen deployment; zero when Solve returns an error.
	Plan Plan `json:"plan"`
	// Alternatives are the other feasible candidates, best first.
	Alternatives []Plan `json:"alternatives"`
	// Rejected are the infeasible candidates in search order.
	Rejected []Rejection `json:"rejected"`
}

// MarshalJSON writes the stable shape {"plan", "alternatives", "rejected"},
// with "plan" null when no candidate was feasible.
func (r Result) MarshalJSON() ([]byte, error) {
	type shape struct {
		Plan         *Plan       `json:"plan"`
		Alternatives []Plan      `json:"alternatives"`
		Rejected     []Rejection `json:"rejected"`
	}
	s := shape{Alternatives: r.Alternatives, Rejected: r.Rejected}
	if r.Plan.GPUsPerReplica > 0 {
		s.Plan = &r.Plan
	}
	if s.Alternatives == nil {
		s.Alternatives = []Plan{}
	}
	if s.Rejected == nil {
		s.Rejected = []Rejection{}
	}
	return json.Marshal(s)
}

func candidateName(q Quantization, tp, pp int) string {
	if pp > 1 {
		return fmt.Sprintf("%s TP%d PP%d", q, tp, pp)
	}
	return fmt.Sprintf("%s TP%d", q, tp)
}
