package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/moe-operator/moe-operator/engine/scheduler"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

type usageJSON struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func newUsage(prompt, completion int) *usageJSON {
	return &usageJSON{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion}
}

// nullUsage is the "usage": null of stream chunks when include_usage is on.
var nullUsage = json.RawMessage("null")

type completionResponse struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   any                `json:"usage,omitempty"`
}

type completionChoice struct {
	Index        int                 `json:"index"`
	Text         string              `json:"text"`
	Logprobs     *completionLogprobs `json:"logprobs"`
	FinishReason *string             `json:"finish_reason"`
}

// completionLogprobs is the legacy completions API's logprobs object.
type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

type chatResponse struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   any          `json:"usage,omitempty"`
}

type chatChoice struct {
	Index        int           `json:"index"`
	Message      *chatOut      `json:"message,omitempty"`
	Delta        *chatOut      `json:"delta,omitempty"`
	Logprobs     *chatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

type chatOut struct {
	Role      string     `json:"role,omitempty"`
	Content   *string    `json:"content,omitempty"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

type chatLogprobs struct {
	Content []chatTokenLogprob `json:"content"`
}

type chatTokenLogprob struct {
	Token       string           `json:"token"`
	Logprob     float32          `json:"logprob"`
	Bytes       []int            `json:"bytes"`
	TopLogprobs []chatTopLogprob `json:"top_logprobs"`
}

type chatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

func ptr[T any](v T) *T { return &v }

// finite keeps log-probabilities encodable: JSON has no -Inf.
func finite(f float32) float32 {
	if math.IsInf(float64(f), 0) || math.IsNaN(float64(f)) {
		return -9999
	}
	return f
}

func (s *Server) tokenText(id int32) string {
	if id >= 0 && int(id) < len(s.texts) {
		return s.texts[id]
	}
	return ""
}

func textBytes(t string) []int {
	b := make([]int, len(t))
	for i := range len(t) {
		b[i] = int(t[i])
	}
	return b
}

// completionLogprobs renders tokens; offset is the length of the choice's
// text before them.
func (s *Server) completionLogprobs(ts []scheduler.Token, top int, offset *int) *completionLogprobs {
	lp := &completionLogprobs{Tokens: []string{}, TokenLogprobs: []float32{}, TextOffset: []int{}}
	if top > 0 {
		lp.TopLogprobs = []map[string]float32{}
	}
	for _, t := range ts {
		text := s.tokenText(t.ID)
		lp.Tokens = append(lp.Tokens, text)
		lp.TokenLogprobs = append(lp.TokenLogprobs, finite(t.LogProb))
		lp.TextOffset = append(lp.TextOffset, *offset)
		*offset += len(text)
		if top > 0 {
			m := make(map[string]float32, len(t.Top))
			for _, a := range t.Top {
				m[s.tokenText(a.Token)] = finite(a.LogProb)
			}
			lp.TopLogprobs = append(lp.TopLogprobs, m)
		}
	}
	return lp
}

func (s *Server) chatLogprobs(ts []scheduler.Token) *chatLogprobs {
	lp := &chatLogprobs{Content: make([]chatTokenLogprob, 0, len(ts))}
	for _, t := range ts {
		text := s.tokenText(t.ID)
		c := chatTokenLogprob{Token: text, Logprob: finite(t.LogProb), Bytes: textBytes(text), TopLogprobs: make([]chatTopLogprob, 0, len(t.Top))}
		for _, a := range t.Top {
			at := s.tokenText(a.Token)
			c.TopLogprobs = append(c.TopLogprobs, chatTopLogprob{Token: at, Logprob: finite(a.LogProb), Bytes: textBytes(at)})
		}
		lp.Content = append(lp.Content, c)
	}
	return lp
}

// readBody decodes the request body into v, writing the error response
// when it fails.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		err = decodeError(err)
	} else {
		err = decode(bytes.NewReader(body), v)
	}
	if err == nil {
		err = s.checkFields(w, body, v)
	}
	if err != nil {
		writeError(w, asAPIError(err))
		return false
	}
	return true
}

func asAPIError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return &apiError{Status: http.StatusInternalServerError, Type: typeServer, Message: err.Error()}
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request, sch *scheduler.Scheduler) {
	var req CompletionRequest
	if !s.readBody(w, r, &req) {
		return
	}
	if err := s.checkModel(req.Model); err != nil {
		writeError(w, err)
		return
	}
	p, err := req.validate()
	if err != nil {
		writeError(w, asAPIError(err))
		return
	}
	// Cheap refusals first: tokenizing a long prompt is the costliest work
	// before admission.
	if err := sch.Admits((len(req.Prompt.Texts) + len(req.Prompt.Tokens)) * p.n); err != nil {
		writeError(w, s.schedulerError(err, "prompt"))
		return
	}
	vocab := sch.ModelConfig().Vocab
	var prompts [][]int32
	if len(req.Prompt.Texts) > 0 {
		tok, limit := sch.Tokenizer(), sch.MaxSequence()
		fits := true
		if !s.tokenize(r.Context(), func() {
			for _, text := range req.Prompt.Texts {
				ids, ok := tok.EncodeLimit(text, true, limit)
				if fits = ok; !ok {
					return
				}
				prompts = append(prompts, ids)
			}
		}) {
			return // the client is gone
		}
		if !fits {
			writeError(w, promptTooLong(limit, "prompt"))
			return
		}
	}
	for i, ids := range req.Prompt.Tokens {
		if len(ids) == 0 {
			writeError(w, invalid("prompt", fmt.Sprintf("prompt %d has no tokens", i)))
			return
		}
		for _, id := range ids {
			if id < 0 || int(id) >= vocab {
				writeError(w, invalid("prompt", fmt.Sprintf("token id %d is outside the vocabulary of %d tokens", id, vocab)))
				return
			}
		}
		prompts = append(prompts, ids)
	}
	reqs, aerr := s.requests(sch, prompts, p, "prompt", false)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	streams, err := sch.SubmitAll(ctx, reqs)
	if err != nil {
		writeError(w, s.schedulerError(err, "prompt"))
		return
	}
	promptTokens := 0
	for _, pr := range prompts {
		promptTokens += len(pr)
	}
	head := completionResponse{ID: requestID("cmpl-"), Object: "text_completion", Created: time.Now().Unix(), Model: s.opts.ModelName}

	if !p.stream {
		resp := head
		completion := 0
		for i, st := range streams {
			c, err := st.Collect(ctx)
			if err != nil {
				s.failed(w, r, err, "prompt")
				return
			}
			ch := completionChoice{Index: i, Text: c.Text, FinishReason: ptr(string(c.Finish))}
			if p.logprobs {
				offset := 0
				ch.Logprobs = s.completionLogprobs(c.Tokens, p.topLogprobs, &offset)
			}
			resp.Choices = append(resp.Choices, ch)
			completion += c.Usage.CompletionTokens
		}
		resp.Usage = newUsage(promptTokens, completion)
		s.respond(w, resp)
		return
	}

	ev := newEventStream(w, s.opts.WriteTimeout)
	offsets := make([]int, len(streams))
	completion := 0
	err = relay(ctx, streams, func(i int, d scheduler.Delta) error {
		if d.Text == "" && d.Finish == "" && !(p.logprobs && len(d.Tokens) > 0) {
			return nil
		}
		ch := completionChoice{Index: i, Text: d.Text}
		if p.logprobs {
			ch.Logprobs = s.completionLogprobs(d.Tokens, p.topLogprobs, &offsets[i])
		}
		if d.Finish != "" {
			ch.FinishReason = ptr(string(d.Finish))
			completion += d.Usage.CompletionTokens
		}
		chunk := head
		chunk.Choices = []completionChoice{ch}
		if p.includeUsage {
			chunk.Usage = nullUsage
		}
		return ev.send(chunk)
	})
	s.endStream(ev, r, err, func() any {
		chunk := head
		chunk.Choices = []completionChoice{}
		chunk.Usage = newUsage(promptTokens, completion)
		return chunk
	}, p.includeUsage)
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request, sch *scheduler.Scheduler) {
	var req ChatRequest
	if !s.readBody(w, r, &req) {
		return
	}
	if err := s.checkModel(req.Model); err != nil {
		writeError(w, err)
		return
	}
	p, err := req.validate()
	if err != nil {
		writeError(w, asAPIError(err))
		return
	}
	msgs, err := chatMessages(req.Messages)
	if err != nil {
		writeError(w, asAPIError(err))
		return
	}
	if err := sch.Admits(p.n); err != nil {
		writeError(w, s.schedulerError(err, "messages"))
		return
	}
	var ids []int32
	if !s.tokenize(r.Context(), func() { ids, err = s.renderChat(sch.Tokenizer(), msgs, p.tools, sch.MaxSequence()) }) {
		return // the client is gone
	}
	switch {
	case errors.Is(err, tokenizer.ErrTooLong):
		writeError(w, promptTooLong(sch.MaxSequence(), "messages"))
		return
	case err != nil:
		writeError(w, invalid("messages", strings.TrimPrefix(err.Error(), tokenizer.ErrChat.Error()+": ")))
		return
	}
	reqs, aerr := s.requests(sch, [][]int32{ids}, p, "messages", true)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	streams, err := sch.SubmitAll(ctx, reqs)
	if err != nil {
		writeError(w, s.schedulerError(err, "messages"))
		return
	}
	head := chatResponse{ID: requestID("chatcmpl-"), Object: "chat.completion", Created: time.Now().Unix(), Model: s.opts.ModelName}

	if !p.stream {
		resp := head
		completion := 0
		for i, st := range streams {
			c, err := st.Collect(ctx)
			if err != nil {
				s.failed(w, r, err, "messages")
				return
			}
			ch := chatChoice{Index: i, Message: &chatOut{Role: "assistant", Content: ptr(c.Text)}, FinishReason: ptr(string(c.Finish))}
			if calls, ok := parseToolCalls(c.Text); ok && p.parseTools {
				ch.Message.Content, ch.Message.ToolCalls, ch.FinishReason = nil, calls, ptr("tool_calls")
			}
			if p.logprobs {
				ch.Logprobs = s.chatLogprobs(c.Tokens)
			}
			resp.Choices = append(resp.Choices, ch)
			completion += c.Usage.CompletionTokens
		}
		resp.Usage = newUsage(len(ids), completion)
		s.respond(w, resp)
		return
	}

	head.Object = "chat.completion.chunk"
	ev := newEventStream(w, s.opts.WriteTimeout)
	chunk := func(ch chatChoice) chatResponse {
		c := head
		c.Choices = []chatChoice{ch}
		if p.includeUsage {
			c.Usage = nullUsage
		}
		return c
	}
	for i := range streams {
		if err := ev.send(chunk(chatChoice{Index: i, Delta: &chatOut{Role: "assistant", Content: ptr("")}})); err != nil {
			return
		}
	}
	completion := 0
	// With tools, an output that starts like a tool call is held back until it either
	// is one (sent whole, as tool_calls, at the end) or turns out to be content.
	held := make([]strings.Builder, len(streams))
	holding := make([]bool, len(streams))
	for i := range holding {
		holding[i] = p.parseTools
	}
	err = relay(ctx, streams, func(i int, d scheduler.Delta) error {
		text := d.Text
		if holding[i] {
			held[i].WriteString(text)
			if mayBeToolCalls(held[i].String()) && d.Finish == "" {
				return nil
			}
			holding[i], text = false, held[i].String()
			if calls, ok := parseToolCalls(text); ok && d.Finish != "" {
				for k := range calls {
					calls[k].Index = ptr(k)
				}
				completion += d.Usage.CompletionTokens
				if err := ev.send(chunk(chatChoice{Index: i, Delta: &chatOut{ToolCalls: calls}})); err != nil {
					return err
				}
				return ev.send(chunk(chatChoice{Index: i, Delta: &chatOut{}, FinishReason: ptr("tool_calls")}))
			}
		}
		if text != "" || (p.logprobs && len(d.Tokens) > 0) {
			ch := chatChoice{Index: i, Delta: &chatOut{Content: ptr(text)}}
			if p.logprobs {
				ch.Logprobs = s.chatLogprobs(d.Tokens)
			}
			if err := ev.send(chunk(ch)); err != nil {
				return err
			}
		}
		if d.Finish != "" {
			completion += d.Usage.CompletionTokens
			return ev.send(chunk(chatChoice{Index: i, Delta: &chatOut{}, FinishReason: ptr(string(d.Finish))}))
		}
		return nil
	})
	s.endStream(ev, r, err, func() any {
		c := head
		c.Choices = []chatChoice{}
		c.Usage = newUsage(len(ids), completion)
		return c
	}, p.includeUsage)
}

// respond writes a finished response, within the write timeout.
func (s *Server) respond(w http.ResponseWriter, v any) {
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	writeJSON(w, http.StatusOK, v)
	rc.Flush() // within the deadline, which is cleared when the handler returns
}

// tokenize runs fn in one of the server's tokenizer slots, waiting for one;
// false means ctx ended first and fn did not run.
func (s *Server) tokenize(ctx context.Context, fn func()) bool {
	select {
	case s.tokenizing <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	defer func() { <-s.tokenizing }()
	fn()
	return true
}

// promptOf names what the prompt parameter holds, for messages.
func promptOf(param string) string {
	if param == "messages" {
		return "the messages"
	}
	return "the prompt"
}

func promptTooLong(limit int, param string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Param: param, Code: "context_length_exceeded",
		Message: fmt.Sprintf("this model's maximum context length is %d tokens, and %s alone go past it; shorten %s", limit, promptOf(param), promptOf(param))}
}

// failed answers a non-streaming request whose generation failed; if the
// client is gone there is no one to answer.
func (s *Server) failed(w http.ResponseWriter, r *http.Request, err error, param string) {
	if r.Context().Err() != nil {
		return
	}
	s.log.Warn("generation failed", "path", r.URL.Path, "err", err)
	writeError(w, s.schedulerError(err, param))
}

// endStream finishes an event stream: the usage chunk, or the error that
// cut it short, then [DONE].
func (s *Server) endStream(ev *eventStream, r *http.Request, err error, usage func() any, includeUsage bool) {
	if r.Context().Err() != nil || errors.Is(err, errClientGone) {
		return
	}
	if err != nil {
		s.log.Warn("generation failed", "path", r.URL.Path, "err", err)
		ev.send(s.schedulerError(err, ""))
	} else if includeUsage {
		ev.send(usage())
	}
	ev.done()
}

// relay receives the deltas of every stream and calls fn with each, from
// the calling goroutine. It returns when all streams have ended, or with
// the first error from a stream or from fn.
func relay(ctx context.Context, streams []*scheduler.Stream, fn func(i int, d scheduler.Delta) error) error {
	if len(streams) == 1 {
		for {
			d, err := streams[0].Recv(ctx)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			if err := fn(0, d); err != nil {
				return err
			}
		}
	}
	type item struct {
		i   int
		d   scheduler.Delta
		err error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	items := make(chan item)
	for i, st := range streams {
		go func() {
			for {
				d, err := st.Recv(ctx)
				select {
				case items <- item{i, d, err}:
				case <-ctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		}()
	}
	for open := len(streams); open > 0; {
		var it item
		select {
		case it = <-items:
		case <-ctx.Done():
			return ctx.Err()
		}
		if it.err == io.EOF {
			open--
			continue
		}
		if it.err != nil {
			return it.err
		}
		if err := fn(it.i, it.d); err != nil {
			return err
		}
	}
	return nil
}
