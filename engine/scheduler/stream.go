package scheduler

import (
	"context"
	"io"
	"strings"
	"sync"

	"github.com/moe-operator/moe-operator/engine/sample"
)

// FinishReason says why a sequence ended.
type FinishReason string

const (
	// FinishStop: an end-of-sequence token or a stop string.
	FinishStop FinishReason = "stop"
	// FinishLength: MaxTokens tokens, or the context limit.
	FinishLength FinishReason = "length"
	// FinishAbort: the request was cancelled, or the scheduler aborted it
	// (a drain past its deadline, a failed step).
	FinishAbort FinishReason = "abort"
)

// Token is one generated token. LogProb and Top are set only when the
// request asked for log-probabilities; they are computed from the model's
// raw distribution, before penalties and temperature.
type Token struct {
	ID      int32
	LogProb float32
	Top     []sample.LogProb // the TopLogprobs most likely tokens, most likely first
}

// Usage counts a request's tokens.
type Usage struct {
	PromptTokens     int
	CompletionTokens int
}

// Delta is the output of a request since the previous Recv: text that is
// safe to show (never half a character, never a possible stop-string
// prefix) and the tokens generated meanwhile. Text and Tokens need not line
// up: text held back for stop matching arrives with a later token.
type Delta struct {
	Text   string
	Tokens []Token
	// Finish is set on the last delta only, with the final Usage.
	Finish FinishReason
	Usage  Usage
}

// Stream carries one request's output from the scheduler to its consumer.
// The scheduler never blocks on a slow consumer: output accumulates and
// the next Recv takes all of it.
type Stream struct {
	notify chan struct{} // capacity 1: "there is something new"

	mu       sync.Mutex
	text     strings.Builder
	tokens   []Token
	finish   FinishReason
	usage    Usage
	err      error
	done     bool // finish or err is set
	returned bool // the final delta (or the error) has been returned
}

func newStream() *Stream {
	return &Stream{notify: make(chan struct{}, 1)}
}

// Recv waits for the next delta. After the delta whose Finish is set it
// returns io.EOF. A request the scheduler aborted (a drain past its
// deadline, a failed step) ends with an error wrapping ErrAborted instead
// of a final delta. Recv returns ctx's error when ctx ends first; cancel
// the context given to Submit to stop the request itself.
func (s *Stream) Recv(ctx context.Context) (Delta, error) {
	for {
		s.mu.Lock()
		if s.returned {
			s.mu.Unlock()
			if s.err != nil {
				return Delta{}, s.err
			}
			return Delta{}, io.EOF
		}
		if s.done && s.err != nil {
			s.returned = true
			s.mu.Unlock()
			return Delta{}, s.err
		}
		if s.text.Len() > 0 || len(s.tokens) > 0 || s.done {
			d := Delta{Text: s.text.String(), Tokens: s.tokens}
			s.text.Reset()
			s.tokens = nil
			if s.done {
				d.Finish, d.Usage = s.finish, s.usage
				s.returned = true
			}
			s.mu.Unlock()
			return d, nil
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-ctx.Done():
			return Delta{}, ctx.Err()
		}
	}
}

// Completion is a whole request's output.
type Completion struct {
	Text   string
	Tokens []Token
	Finish FinishReason
	Usage  Usage
}

// Collect receives until the end and joins the deltas.
func (s *Stream) Collect(ctx context.Context) (Completion, error) {
	var c Completion
	var sb strings.Builder
	for {
		d, err := s.Recv(ctx)
		if err == io.EOF {
			c.Text = sb.String()
			return c, nil
		}
		if err != nil {
			return c, err
		}
		sb.WriteString(d.Text)
		c.Tokens = append(c.Tokens, d.Tokens...)
		if d.Finish != "" {
			c.Finish, c.Usage = d.Finish, d.Usage
		}
	}
}

// push is the scheduler's side: it appends output and wakes the consumer.
func (s *Stream) push(text string, tok *Token) {
	s.mu.Lock()
	s.text.WriteString(text)
	if tok != nil {
		s.tokens = append(s.tokens, *tok)
	}
	s.mu.Unlock()
	s.wake()
}

// end marks the stream finished (err nil) or failed.
func (s *Stream) end(text string, reason FinishReason, u Usage, err error) {
	s.mu.Lock()
	s.text.WriteString(text)
	s.finish, s.usage, s.err, s.done = reason, u, err, true
	s.mu.Unlock()
	s.wake()
}

func (s *Stream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}
