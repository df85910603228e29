// Package planner sizes Mixtral deployments: given a model shape, an
// accelerator, throughput and latency targets and optional overrides, it
// chooses the quantization, tensor parallelism, batch size and replica count
// that meet the targets with the fewest accelerators, and explains why.
//
// The package is pure: it reads no files except through LoadCalibration, makes
// no network calls and imports nothing from Kubernetes or the engine. The
// reconciler and the `moe plan` command both call Solve, so the structure that
// `moe plan --json` prints is the one the reconciler writes to status.plan.
//
// # Performance model
//
// For each candidate (quantization × tensor parallelism) the planner computes,
// per accelerator ("GPU"; the cpu profile counts the whole host as one):
//
//   - memory = weights/TP (norms and router replicated) + KV cache for the
//     batch/TP + activations + runtime overhead, which must fit in
//     MemoryBytes × (1 − MemoryHeadroom);
//   - decode step time at batch B = max(bytes read / effective bandwidth,
//     FLOPs / effective compute), taken separately for the weight matrix
//     products (attention weights, the E·(1−(1−k/E)^B) experts a batch of B
//     tokens touches, the output head) and for attention over the KV cache,
//     plus the tensor-parallel all-reduce time;
//   - prefill time for one prompt, bounded the same way (compute-bound for
//     realistic prompts);
//   - ITL = step + B·prefill/outputTokens (prefills of other sequences stall
//     decoding), TTFT = half a step + M/D/1 queueing for the prefill + prefill;
//   - per-replica throughput = B/ITL at the largest B that meets the latency
//     bounds and memory, replicas = ceil(target / per-replica throughput).
//
// Candidates are ranked by total accelerators, then precision (BF16, FP8,
// Int8, Int4), then inter-token latency and time to first token. The model and
// its fitted efficiency factors are written up in docs/planner.md.
package planner
