package planner

import "math"

// prefillTokenBudget is the tokens one prefill pass may batch, like
// TensorRT-LLM's max_num_tokens and vLLM's max_num_batched_tokens.
const prefillTokenBudget = 8192

// activationTokens bounds the tokens whose activations are live at once:
// prefill is chunked to this size.
const activationTokens = 4096

// candidate is one (quantization, tensor parallelism, pipeline stages) point
// of the search with everything its performance model needs.
type candidate struct {
	model  Model
	acc    Accelerator
	quant  Quantization
	tp     int
	pp     int // pipeline stages, one per node; 1 on one node
	eff    Efficiency
	prompt int // tokens per request
	output int // generated tokens per request
	ctx    int // longest sequence one request may reach
	// layout is the engine's own GPU layout (Runtime.GPU); nil: Megatron-
	// style tensor parallelism.
	layout *GPULayout
}

// newCandidate is the candidate of req at (q, tp, pp) under rt: on a GPU,
// an engine with its own layout gets it, and its KV element size.
func newCandidate(req Request, rt Runtime, q Quantization, tp, pp int, eff Efficiency) candidate {
	c := candidate{
		model: req.Model, acc: req.Accelerator, quant: q, tp: tp, pp: pp, eff: eff,
		prompt: req.Targets.PromptTokens, output: req.Targets.OutputTokens, ctx: req.Targets.Context,
	}
	if l := rt.GPU; l != nil && req.Accelerator.ResourceName != "" {
		c.layout = l
		if l.KVBytesPerElement > 0 {
			c.acc.KVBytesPerElement = l.KVBytesPerElement
		}
	}
	return c
}

// expertSplit reports whether c's GPUs each hold whole experts, with
// attention and the KV cache replicated (GPULayout.ExpertParallel).
func (c candidate) expertSplit() bool { return c.layout != nil && c.layout.ExpertParallel && c.tp > 1 }

// expertsPerGPU is the experts the fullest GPU holds under an expert split.
func (c candidate) expertsPerGPU() float64 { return float64((c.model.Experts + c.tp - 1) / c.tp) }

// expertsTouched is the expected number of distinct experts a batch of n
// tokens routes to in one layer, E·(1−(1−k/E)^n), assuming independent,
// uniform routing.
func expertsTouched(experts, used int, n float64) float64 {
	e := float64(experts)
	return e * (1 - math.Pow(1-float64(used)/e, n))
}

// stageLayers is the share of the layers the largest pipeline stage holds:
// ceil(layers/pp)/layers, 1 without pipeline parallelism.
func (c candidate) stageLayers() float64 {
	l := c.model.Layers
	return float64((l+c.pp-1)/c.pp) / float64(l)
}

// weightBytesPerGPU is one shard's weights (of the largest stage).
func (c candidate) weightBytesPerGPU() float64 {
	if c.expertSplit() {
		// The first GPU: every layer's attention, its experts, the
		// embedding and output head, and the F32 router and norms.
		m := c.model
		perLayer := float64(m.attentionParameters()) + c.expertsPerGPU()*float64(m.expertParameters())
		split := float64(m.Layers)*perLayer + 2*float64(m.headParameters())
		return (split*c.quant.BytesPerWeight() + 4*float64(m.replicatedParameters())) * c.stageLayers()
	}
	return float64(c.model.WeightBytesPerShard(c.quant, c.tp)) * c.stageLayers()
}

// kvBytesPerTokenPerShard is one token's KV cache over all layers of one
// tensor-parallel shard: what a pass through every stage reads.
func (c candidate) kvBytesPerTokenPerShard() float64 {
	m := c.model
	heads := m.kvHeadsPerShard(c.tp)
	if c.expertSplit() {
		heads = m.KVHeads // replicated
	}
	return 2 * float64(m.Layers*heads*m.HeadDim) * c.acc.KVBytesPerElement
}

// kvBytesPerTokenPerGPU is the KV cache one token occupies on one device:
// its shard of the largest stage's layers.
func (c candidate) kvBytesPerTokenPerGPU() float64 {
	return c.kvBytesPerTokenPerShard() * c.stageLayers()
}

// kvTokens is the KV capacity a batch of b sequences needs: every sequence
// at its full prompt + output, and never less than one full context.
func (c candidate) kvTokens(b int) float64 {
	return math.Max(float64(b*(c.prompt+c.output)), float64(c.ctx))
}

// activationBytesPerGPU is the live activations of the largest pass: the
// residual stream and norms (4·hidden), this shard's q/k/v and expert
// intermediates, and the f32 logits of the decode batch.
func (c candidate) activationBytesPerGPU(b int) float64 {
	m := c.model
	tokens := math.Max(float64(b), math.Min(float64(c.prompt), activationTokens))
	split := float64(c.tp)
	if c.expertSplit() {
		split = 1 // every GPU holds the whole batch's buffers
	}
	perToken := 4*float64(m.HiddenSize) +
		float64((m.Heads+2*m.KVHeads)*m.HeadDim+2*m.ExpertsUsed*m.IntermediateSize)/split
	logits := float64(b) * float64(m.VocabSize) / split * 4
	return tokens*perToken*c.acc.ActivationBytesPerElement + logits
}

// memoryPerGPU is everything one shard holds at batch b.
func (c candidate) memoryPerGPU(b int) float64 {
	return c.weightBytesPerGPU() + c.kvTokens(b)*c.kvBytesPerTokenPerGPU() +
		c.activationBytesPerGPU(b) + float64(c.acc.RuntimeOverheadBytes)
}

// pipelineHops is the time a micro-batch of n tokens spends crossing the
// pp−1 stage boundaries between nodes: one send of its hidden states each.
func (c candidate) pipelineHops(n float64) float64 {
	msg := n * float64(c.model.HiddenSize) * c.acc.ActivationBytesPerElement
	return float64(c.pp-1) * (interNodeLatency + msg/interNodeBandwidth)
}

// passCost is the work one forward pass does on one shard, split by kind of
// operator because they run as separate kernels: the weight matrix products
// and the attention over the KV cache each meet their own roofline, and
// their times add.
type passCost struct {
	weightBytes    float64 // weights streamed from memory
	weightFLOPs    float64 // 2 × multiply-adds against those weights
	attentionBytes float64 // KV cache read or written
	attentionFLOPs float64 // QKᵀ and PV
	allReduce      float64 // seconds spent in tensor-parallel all-reduces
}

// seconds is the roofline of each operator kind, max(bytes/effective
// bandwidth, FLOPs/effective compute), summed, plus the all-reduce time.
func (c candidate) seconds(p passCost) float64 {
	bw := c.acc.MemoryBandwidth * c.eff.Bandwidth
	rate := c.acc.ComputeRate(c.quant) * c.eff.Compute
	return math.Max(p.weightBytes/bw, p.weightFLOPs/rate) +
		math.Max(p.attentionBytes/bw, p.attentionFLOPs/rate) + p.allReduce
}

// weightBytesRead is the weights a pass over n tokens streams from memory on
// one shard: attention, the experts the tokens touch, the output head, and
// the replicated F32 router and norms.
func (c candidate) weightBytesRead(n float64) float64 {
	m := c.model
	bpw := c.quant.BytesPerWeight()
	touched := expertsTouched(m.Experts, m.ExpertsUsed, n)
	if c.expertSplit() {
		// Each GPU reads all of attention and the head, and its share of
		// the experts touched (the expected share: routing is uneven).
		perLayer := float64(m.attentionParameters()) + touched/float64(c.tp)*float64(m.expertParameters())
		return (float64(m.Layers)*perLayer+float64(m.headParameters()))*bpw + 4*float64(m.replicatedParameters())
	}
	perLayer := float64(m.attentionParameters()) + touched*float64(m.expertParameters())
	split := (float64(m.Layers)*perLayer + float64(m.headParameters())) * bpw / float64(c.tp)
	return split + 4*float64(m.replicatedParameters())
}

// denseFLOPs is the matrix work per token on one shard, excluding attention
// over the context.
func (c candidate) denseFLOPs() float64 {
	if c.expertSplit() {
		m := c.model
		experts := float64(m.ExpertsUsed) / float64(c.tp) * float64(m.expertParameters())
		return 2 * (float64(m.Layers)*(float64(m.attentionParameters()+m.routerParameters())+experts) + float64(m.headParameters()))
	}
	return 2 * float64(c.model.ActiveParameters()) / float64(c.tp)
}

// attentionFLOPs is QKᵀ and PV for one token attending to ctx positions on
// one shard.
func (c candidate) attentionFLOPs(ctx float64) float64 {
	m := c.model
	heads := float64(m.Heads) / float64(c.tp)
	if c.expertSplit() {
		heads = float64(m.Heads) // every GPU computes all of attention
	}
	return 4 * float64(m.Layers) * heads * float64(m.HeadDim) * ctx
}

// allReduceSeconds is two all-reduces per layer (after attention and after
// the experts) of n tokens' hidden states. Each costs the link's fixed
// latency plus the ring's 2(t−1)/t of the message over the link bandwidth.
func (c candidate) allReduceSeconds(n float64) float64 {
	if c.tp <= 1 {
		return 0
	}
	if c.expertSplit() {
		// One reduction per layer through host memory, of float32 parts.
		msg := n * float64(c.model.HiddenSize) * 4
		return float64(c.model.Layers) * (c.layout.HostLatency + 2*msg/c.layout.HostBandwidth)
	}
	t := float64(c.tp)
	msg := n * float64(c.model.HiddenSize) * c.acc.ActivationBytesPerElement
	one := c.acc.InterconnectLatency + 2*(t-1)/t*msg/c.acc.InterconnectBandwidth
	return 2 * float64(c.model.Layers) * one
}

// decodeStep is the time of one decode step for b sequences whose KV cache
// averages ctx tokens.
func (c candidate) decodeStep(b int, ctx float64) float64 {
	n := float64(b)
	return c.seconds(passCost{
		weightBytes:    c.weightBytesRead(n),
		weightFLOPs:    n * c.denseFLOPs(),
		attentionBytes: n * ctx * c.kvBytesPerTokenPerShard(),
		attentionFLOPs: n * c.attentionFLOPs(ctx),
		allReduce:      c.allReduceSeconds(n),
	})
}

// prefill is the time to prefill n prompts of c.prompt tokens in one pass.
func (c candidate) prefill(n int) float64 {
	p := float64(c.prompt)
	tokens := float64(n) * p
	return c.seconds(passCost{
		weightBytes:    c.weightBytesRead(tokens),
		weightFLOPs:    tokens * c.denseFLOPs(),
		attentionBytes: tokens * c.kvBytesPerTokenPerShard(),
		attentionFLOPs: tokens * c.attentionFLOPs(p/2),
		allReduce:      c.allReduceSeconds(tokens),
	})
}

// performance is the model's prediction at one batch size.
type performance struct {
	batch      int
	step       float64 // one decode step, seconds
	itl        float64 // mean inter-token latency, seconds
	ttft       float64 // mean time to first token, seconds
	throughput float64 // generated tokens per second per replica
	memory     float64 // bytes per GPU
}

// at predicts the steady state of a replica that keeps b sequences in
// flight. Each sequence's O decode steps are interleaved with prefills of
// the sequences that replace finished ones, so the mean inter-token latency
// is step + b·(amortised prefill)/O. A new request waits half a step, then
// M/D/1 queueing behind other prefills (utilisation ρ), then its own prefill.
//
// With pp pipeline stages the batch runs as pp micro-batches of b/pp, one in
// each stage: a sequence gets its next token once its micro-batch has passed
// every stage, which costs one decode step of b/pp sequences over the whole
// model (each stage streams its weights once per micro-batch) plus the hops
// between nodes; each stage spends 1/pp of every prefill.
func (c candidate) at(b int) performance {
	micro := float64((b + c.pp - 1) / c.pp)
	step := c.decodeStep(int(micro), float64(c.prompt)+float64(c.output)/2) + c.pipelineHops(micro)
	group := max(1, min(b, prefillTokenBudget/max(1, c.prompt)))
	amortised := c.prefill(group) / float64(group) / float64(c.pp)
	itl := step + float64(b)*amortised/float64(c.output)
	rho := float64(b) * amortised / float64(c.output) / itl
	single := c.prefill(1) + c.pipelineHops(float64(c.prompt))
	ttft := step/2 + rho/(2*(1-rho))*single + single
	return performance{
		batch:      b,
		step:       step,
		itl:        itl,
		ttft:       ttft,
		throughput: float64(b) / itl,
		memory:     c.memoryPerGPU(b),
	}
}
