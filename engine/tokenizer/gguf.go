package tokenizer

import (
	"errors"
	"fmt"

	"github.com/moe-operator/moe-operator/engine/gguf"
)

// FromGGUF builds the tokenizer described by a GGUF file's tokenizer.ggml.*
// metadata. Only the SentencePiece model ("llama") is supported.
func FromGGUF(f *gguf.File) (*Tokenizer, error) {
	model, err := f.String("tokenizer.ggml.model")
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if model != "llama" {
		return nil, fmt.Errorf("tokenizer: tokenizer model %q is not supported (want \"llama\", SentencePiece BPE)", model)
	}
	toks, err := f.Array("tokenizer.ggml.tokens")
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	pieces, ok := toks.Values.([]string)
	if !ok {
		return nil, fmt.Errorf("%w: tokenizer.ggml.tokens is an array of %s, want strings", ErrVocab, toks.Elem)
	}
	v := Vocab{Pieces: pieces, BOS: 1, EOS: 2, UNK: 0, AddBOS: true, AddSpacePrefix: true}
	if a, err := f.Array("tokenizer.ggml.scores"); err == nil {
		s, ok := a.Values.([]float32)
		if !ok {
			return nil, fmt.Errorf("%w: tokenizer.ggml.scores is an array of %s, want float32", ErrVocab, a.Elem)
		}
		v.Scores = s
	} else if !errors.Is(err, gguf.ErrNotFound) {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if a, err := f.Array("tokenizer.ggml.token_type"); err == nil {
		s, ok := a.Values.([]int32)
		if !ok {
			return nil, fmt.Errorf("%w: tokenizer.ggml.token_type is an array of %s, want int32", ErrVocab, a.Elem)
		}
		v.Types = make([]TokenType, len(s))
		for i, x := range s {
			v.Types[i] = TokenType(x)
		}
	} else if !errors.Is(err, gguf.ErrNotFound) {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	for key, dst := range map[string]*int32{
		"tokenizer.ggml.bos_token_id":     &v.BOS,
		"tokenizer.ggml.eos_token_id":     &v.EOS,
		"tokenizer.ggml.unknown_token_id": &v.UNK,
	} {
		if x, err := f.Int(key); err == nil {
			*dst = int32(x)
		} else if !errors.Is(err, gguf.ErrNotFound) {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
	}
	for key, dst := range map[string]*bool{
		"tokenizer.ggml.add_bos_token":    &v.AddBOS,
		"tokenizer.ggml.add_eos_token":    &v.AddEOS,
		"tokenizer.ggml.add_space_prefix": &v.AddSpacePrefix,
	} {
		if x, err := f.Bool(key); err == nil {
			*dst = x
		} else if !errors.Is(err, gguf.ErrNotFound) {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
	}
	if tmpl, err := f.String("tokenizer.chat_template"); err == nil {
		v.ChatTemplate = tmpl
	}
	return New(v)
}

// SetGGUF writes v as tokenizer.ggml.* metadata.
func SetGGUF(w *gguf.Writer, v Vocab) {
	types := make([]int32, len(v.Types))
	for i, t := range v.Types {
		types[i] = int32(t)
	}
	w.Set("tokenizer.ggml.model", gguf.String("llama"))
	w.Set("tokenizer.ggml.tokens", gguf.Strings(v.Pieces))
	w.Set("tokenizer.ggml.scores", gguf.Float32s(v.Scores))
	w.Set("tokenizer.ggml.token_type", gguf.Int32s(types))
	w.Set("tokenizer.ggml.bos_token_id", gguf.Uint32(uint32(v.BOS)))
	w.Set("tokenizer.ggml.eos_token_id", gguf.Uint32(uint32(v.EOS)))
	w.Set("tokenizer.ggml.unknown_token_id", gguf.Uint32(uint32(v.UNK)))
	w.Set("tokenizer.ggml.add_bos_token", gguf.Bool(v.AddBOS))
	w.Set("tokenizer.ggml.add_eos_token", gguf.Bool(v.AddEOS))
	w.Set("tokenizer.ggml.add_space_prefix", gguf.Bool(v.AddSpacePrefix))
	if v.ChatTemplate != "" {
		w.Set("tokenizer.chat_template", gguf.String(v.ChatTemplate))
	}
}
