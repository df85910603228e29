package model

import "fmt"

// Session runs a single sequence: Prefill its prompt in batched chunks,
// then Decode one token at a time reusing the cached keys and values. It is
// what `moe run`, `moe logits` and `moe bench` use; the server's scheduler
// drives Forward directly.
type Session struct {
	m       *Model
	cache   *Cache
	seq     Seq
	st      *State
	batch   Batch
	pos     int
	context int
	err     error // the cache could not be allocated
}

// PrefillChunk is the number of prompt tokens a Session runs per Forward.
const PrefillChunk = 512

// NewSession makes a session with room for context positions (the model's
// own context if context <= 0 or larger).
func (m *Model) NewSession(context int) *Session {
	if context <= 0 || context > m.Config.Context {
		context = m.Config.Context
	}
	s := &Session{m: m, context: context}
	s.cache, s.err = m.NewCache(context, 16)
	s.st = m.NewState(min(PrefillChunk, context), context)
	return s
}

// Close releases the session's KV cache (device memory on an
// accelerator) now rather than when the collector finds it.
func (s *Session) Close() {
	if s.cache != nil {
		s.cache.Close()
	}
}

// Pos is the number of tokens in the sequence so far.
func (s *Session) Pos() int { return s.pos }

// Context is the session's maximum sequence length.
func (s *Session) Context() int { return s.context }

// Prefill appends tokens to the sequence. It returns the logits of the last
// token, or with all set, of every token (len(tokens) rows of Vocab).
func (s *Session) Prefill(tokens []int32, all bool) ([]float32, error) {
	if s.err != nil {
		return nil, s.err
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%w: no tokens to prefill", ErrBatch)
	}
	if s.pos+len(tokens) > s.context {
		return nil, fmt.Errorf("%w: %d tokens after %d would exceed the context of %d", ErrBatch, len(tokens), s.pos, s.context)
	}
	if err := s.cache.Reserve(&s.seq, s.pos+len(tokens)); err != nil {
		return nil, err
	}
	var out []float32
	V := s.m.Config.Vocab
	for start := 0; start < len(tokens); start += s.st.MaxTokens {
		chunk := tokens[start:min(start+s.st.MaxTokens, len(tokens))]
		s.batch.Reset()
		last := start+len(chunk) == len(tokens)
		for i, t := range chunk {
			s.batch.Add(t, s.pos+i, &s.seq, all || (last && i == len(chunk)-1))
		}
		logits, err := s.m.Forward(s.st, s.cache, &s.batch)
		if err != nil {
			return nil, err
		}
		s.pos += len(chunk)
		if all {
			out = append(out, logits...)
		} else if last {
			out = append([]float32(nil), logits[:V]...)
		}
	}
	return out, nil
}

// Decode appends one token and returns its logits (owned by the session,
// valid until the next call).
func (s *Session) Decode(token int32) ([]float32, error) {
	if s.err != nil {
		return nil, s.err
	}
	if s.pos+1 > s.context {
		return nil, fmt.Errorf("%w: the sequence is at the context limit of %d tokens", ErrBatch, s.context)
	}
	if err := s.cache.Reserve(&s.seq, s.pos+1); err != nil {
		return nil, err
	}
	s.batch.Reset()
	s.batch.Add(token, s.pos, &s.seq, true)
	logits, err := s.m.Forward(s.st, s.cache, &s.batch)
	if err != nil {
		return nil, err
	}
	s.pos++
	return logits, nil
}
