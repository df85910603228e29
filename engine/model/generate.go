package model

import "github.com/moe-operator/moe-operator/engine/sample"

// Generate prefills prompt, then samples up to maxTokens tokens with sm,
// calling emit with each one. It stops after an end-of-sequence token
// (which is emitted), when emit returns false, or at the context limit. It
// returns the number of tokens generated.
func (s *Session) Generate(prompt []int32, sm *sample.Sampler, maxTokens int, emit func(tok int32) bool) (int, error) {
	logits, err := s.Prefill(prompt, false)
	if err != nil {
		return 0, err
	}
	eos := int32(-1)
	if s.m.Tokenizer != nil {
		eos = s.m.Tokenizer.EOS()
	}
	n := 0
	for n < maxTokens {
		tok := sm.Sample(logits)
		n++
		if !emit(tok) || tok == eos || n == maxTokens || s.pos >= s.context {
			break
		}
		if logits, err = s.Decode(tok); err != nil {
			return n, err
		}
	}
	return n, nil
}
