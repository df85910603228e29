package planner

import (
	"fmt"
	"sort"
	"strings"
)

// Model is the shape of a Mixtral-architecture model: everything the
// performance model needs, and nothing about where the weights live. The JSON
// names are also used by calibration files, which the engine writes.
type Model struct {
	Name             string `json:"name,omitempty"`
	HiddenSize       int    `json:"hiddenSize"`
	Layers           int    `json:"layers"`
	Heads            int    `json:"heads"`
	KVHeads          int    `json:"kvHeads"`
	HeadDim          int    `json:"headDim"`
	IntermediateSize int    `json:"intermediateSize"` // per expert
	Experts          int    `json:"experts"`
	ExpertsUsed      int    `json:"expertsUsed"` // top-k
	VocabSize        int    `json:"vocabSize"`
	ContextLength    int    `json:"contextLength"`
}

// models is the catalog. Shapes come from the released config.json files
// (mistralai/Mixtral-8x7B-v0.1, Mixtral-8x22B-v0.1 and their Instruct
// variants); 8x22B-Instruct-v0.1 uses tokenizer v3 with 32768 pieces.
var models = map[string]Model{
	"mixtral-8x7b": {
		HiddenSize: 4096, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128,
		IntermediateSize: 14336, Experts: 8, ExpertsUsed: 2, VocabSize: 32000, ContextLength: 32768,
	},
	"mixtral-8x7b-instruct": {
		HiddenSize: 4096, Layers: 32, Heads: 32, KVHeads: 8, HeadDim: 128,
		IntermediateSize: 14336, Experts: 8, ExpertsUsed: 2, VocabSize: 32000, ContextLength: 32768,
	},
	"mixtral-8x22b": {
		HiddenSize: 6144, Layers: 56, Heads: 48, KVHeads: 8, HeadDim: 128,
		IntermediateSize: 16384, Experts: 8, ExpertsUsed: 2, VocabSize: 32000, ContextLength: 65536,
	},
	"mixtral-8x22b-instruct": {
		HiddenSize: 6144, Layers: 56, Heads: 48, KVHeads: 8, HeadDim: 128,
		IntermediateSize: 16384, Experts: 8, ExpertsUsed: 2, VocabSize: 32768, ContextLength: 65536,
	},
}

// ModelNames returns the catalog's model names, sorted.
func ModelNames() []string {
	names := make([]string, 0, len(models))
	for name := range models {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// ModelPreset returns the catalog shape named name (case-insensitive), with
// Name set. It returns an error wrapping ErrUnknownModel otherwise.
func ModelPreset(name string) (Model, error) {
	m, ok := models[strings.ToLower(name)]
	if !ok {
		return Model{}, fmt.Errorf("%w: %q (known: %s)", ErrUnknownModel, name, strings.Join(ModelNames(), ", "))
	}
	m.Name = strings.ToLower(name)
	return m, nil
}

// Validate reports an error wrapping ErrInvalidRequest when a dimension is not
// positive, when heads are not a multiple of kvHeads, or when expertsUsed is
// not in [1, experts].
func (m Model) Validate() error {
	dims := []struct {
		name string
		v    int
	}{
		{"hiddenSize", m.HiddenSize}, {"layers", m.Layers}, {"heads", m.Heads}, {"kvHeads", m.KVHeads},
		{"headDim", m.HeadDim}, {"intermediateSize", m.IntermediateSize}, {"experts", m.Experts},
		{"expertsUsed", m.ExpertsUsed}, {"vocabSize", m.VocabSize}, {"contextLength", m.ContextLength},
	}
	for _, d := range dims {
		if d.v <= 0 {
			return fmt.Errorf("%w: model %s must be positive, got %d", ErrInvalidRequest, d.name, d.v)
		}
	}
	if m.Heads%m.KVHeads != 0 {
		return fmt.Errorf("%w: model heads (%d) must be a multiple of kvHeads (%d)", ErrInvalidRequest, m.Heads, m.KVHeads)
	}
	if m.ExpertsUsed > m.Experts {
		return fmt.Errorf("%w: model expertsUsed (%d) exceeds experts (%d)", ErrInvalidRequest, m.ExpertsUsed, m.Experts)
	}
	return nil
}

// Parameters counts every weight: embeddings, output head, attention, all
// experts, routers and norms.
func (m Model) Parameters() int64 {
	return m.splitParameters() + m.replicatedParameters()
}

// ActiveParameters counts the weights one token multiplies: attention, k
// experts per layer, the router and the output head (the embedding is a
// lookup). 2·ActiveParameters is the dense FLOP count per token.
func (m Model) ActiveParameters() int64 {
	l := int64(m.Layers)
	return l*(m.attentionParameters()+int64(m.ExpertsUsed)*m.expertParameters()+m.routerParameters()) + m.headParameters()
}

// attentionParameters is one layer's q, k, v and o projections.
func (m Model) attentionParameters() int64 {
	d, q, kv := int64(m.HiddenSize), int64(m.Heads*m.HeadDim), int64(m.KVHeads*m.HeadDim)
	return d*q + 2*d*kv + q*d
}

// expertParameters is one expert's gate (w1), up (w3) and down (w2) matrices.
func (m Model) expertParameters() int64 {
	return 3 * int64(m.HiddenSize) * int64(m.IntermediateSize)
}

// routerParameters is one layer's ffn_gate_inp.
func (m Model) routerParameters() int64 { return int64(m.HiddenSize) * int64(m.Experts) }

// headParameters is the output projection (lm_head).
func (m Model) headParameters() int64 { return int64(m.VocabSize) * int64(m.HiddenSize) }

// splitParameters counts the weights that tensor parallelism divides and that
// are stored at the chosen quantization: attention, experts, token embedding
// and output head.
func (m Model) splitParameters() int64 {
	l := int64(m.Layers)
	return l*(m.attentionParameters()+int64(m.Experts)*m.expertParameters()) + 2*m.headParameters()
}

// replicatedParameters counts the weights every shard holds in F32: the
// router and the two norms per layer, and the final norm.
func (m Model) replicatedParameters() int64 {
	l, d := int64(m.Layers), int64(m.HiddenSize)
	return l*(m.routerParameters()+2*d) + d
}

// WeightBytes is the size of all weights stored at quantization q: the split
// weights at q.BytesPerWeight, the router and norms in F32.
func (m Model) WeightBytes(q Quantization) int64 {
	return int64(float64(m.splitParameters())*q.BytesPerWeight()) + 4*m.replicatedParameters()
}

// WeightBytesPerShard is the size of one tensor-parallel shard's weights:
// the split weights divided by tp, the F32 router and norms replicated.
func (m Model) WeightBytesPerShard(q Quantization, tp int) int64 {
	return int64(float64(m.splitParameters())*q.BytesPerWeight()/float64(tp)) + 4*m.replicatedParameters()
}

// kvHeadsPerShard is how many KV heads each of tp shards stores; when tp
// exceeds kvHeads the heads are replicated so every shard holds one.
func (m Model) kvHeadsPerShard(tp int) int {
	return (m.KVHeads + tp - 1) / tp
}

// KVBytesPerToken is the KV cache one token occupies across all shards:
// 2 (K and V) · layers · kvHeads · headDim · bytesPerElement.
func (m Model) KVBytesPerToken(bytesPerElement float64) float64 {
	return 2 * float64(m.Layers*m.KVHeads*m.HeadDim) * bytesPerElement
}
