package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"

	"github.com/moe-operator/moe-operator/engine/grammar"
	"github.com/moe-operator/moe-operator/engine/sample"
	"github.com/moe-operator/moe-operator/engine/scheduler"
)

// Limits on what one request may ask for.
const (
	// MaxN bounds n (choices per prompt).
	MaxN = 16
	// MaxChoices bounds the sequences one request starts (prompts × n).
	MaxChoices = 64
	// MaxStops bounds the stop strings of a request.
	MaxStops = 16
	// MaxBodyBytes bounds the default body limit (Options.MaxBodyBytes).
	MaxBodyBytes = 16 << 20
)

// CompletionRequest is the body of POST /v1/completions. Fields the
// server does not use (user, metadata, ...) are accepted and ignored.
type CompletionRequest struct {
	Model  string `json:"model"`
	Prompt Prompt `json:"prompt"`
	samplingFields
	// Logprobs, in the legacy completions API, is the number of top
	// alternatives to return with each token's log-probability.
	Logprobs *int    `json:"logprobs"`
	Echo     bool    `json:"echo"`
	Suffix   *string `json:"suffix"`
	BestOf   *int    `json:"best_of"`
}

// ChatRequest is the body of POST /v1/chat/completions.
type ChatRequest struct {
	Model    string        `json:"model"`
	Messages []ChatMessage `json:"messages"`
	samplingFields
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Logprobs            bool            `json:"logprobs"`
	TopLogprobs         *int            `json:"top_logprobs"`
	Tools               json.RawMessage `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls"`
	ResponseFormat      *ResponseFormat `json:"response_format"`
}

// ResponseFormat is a chat request's response_format: text, json_object (any JSON
// object) or json_schema (JSON that the schema accepts).
type ResponseFormat struct {
	Type       string `json:"type"`
	JSONSchema *struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Schema      json.RawMessage `json:"schema"`
		Strict      *bool           `json:"strict"`
	} `json:"json_schema"`
}

// samplingFields are the parameters both endpoints share.
type samplingFields struct {
	MaxTokens         *int     `json:"max_tokens"`
	Temperature       *float64 `json:"temperature"`
	TopP              *float64 `json:"top_p"`
	TopK              *int     `json:"top_k"`
	MinP              *float64 `json:"min_p"`
	Seed              *int64   `json:"seed"`
	Stop              Stop     `json:"stop"`
	PresencePenalty   *float64 `json:"presence_penalty"`
	FrequencyPenalty  *float64 `json:"frequency_penalty"`
	RepetitionPenalty *float64 `json:"repetition_penalty"`
	N                 *int     `json:"n"`
	Stream            bool     `json:"stream"`
	StreamOptions     *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	// IgnoreEOS (a vLLM extension) keeps generating past end-of-sequence.
	IgnoreEOS bool               `json:"ignore_eos"`
	LogitBias map[string]float64 `json:"logit_bias"`
	// vLLM's guided decoding: JSON that a schema accepts (the schema, or its text),
	// a regular expression, or one of a list of strings.
	GuidedJSON   json.RawMessage `json:"guided_json"`
	GuidedRegex  *string         `json:"guided_regex"`
	GuidedChoice []string        `json:"guided_choice"`
}

// ChatMessage is one message; Content is a string or a list of text parts.
type ChatMessage struct {
	Role    string      `json:"role"`
	Content ChatContent `json:"content"`
	Name    string      `json:"name"`
	// ToolCalls, on an assistant message, are the calls it made; ToolCallID, on a tool
	// message, is the call it answers.
	ToolCalls  []ToolCall `json:"tool_calls"`
	ToolCallID string     `json:"tool_call_id"`
}

// ToolCall is one function call, as OpenAI writes it: the arguments are a string of
// JSON. Index numbers the calls of a streamed delta.
type ToolCall struct {
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// ChatContent is a message's text, joined from text parts if it came as a
// list.
type ChatContent struct {
	Text string
}

// UnmarshalJSON accepts a string, null, or [{"type":"text","text":...}].
func (c *ChatContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) > 0 && b[0] == '"':
		return json.Unmarshal(b, &c.Text)
	case string(b) == "null":
		c.Text = ""
		return nil
	case len(b) > 0 && b[0] == '[':
		var parts []struct {
			Type string  `json:"type"`
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(b, &parts); err != nil {
			return errors.New("content must be a string or a list of text parts")
		}
		var sb strings.Builder
		for _, p := range parts {
			if p.Type != "text" || p.Text == nil {
				return fmt.Errorf("content part of type %q is not supported; only text parts are", p.Type)
			}
			sb.WriteString(*p.Text)
		}
		c.Text = sb.String()
		return nil
	}
	return errors.New("content must be a string or a list of text parts")
}

// Prompt is a completions prompt: a string, a list of strings, a list of
// token ids, or a list of lists of token ids.
type Prompt struct {
	Texts  []string
	Tokens [][]int32
	set    bool
}

// Len is the number of prompts.
func (p Prompt) Len() int { return len(p.Texts) + len(p.Tokens) }

// UnmarshalJSON decodes any of the four shapes.
func (p *Prompt) UnmarshalJSON(b []byte) error {
	*p = Prompt{set: true}
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		p.set = false
		return nil
	}
	var s string
	if json.Unmarshal(b, &s) == nil {
		p.Texts = []string{s}
		return nil
	}
	var ss []string
	if json.Unmarshal(b, &ss) == nil && len(ss) > 0 {
		p.Texts = ss
		return nil
	}
	var ids []int32
	if json.Unmarshal(b, &ids) == nil && len(ids) > 0 {
		p.Tokens = [][]int32{ids}
		return nil
	}
	var idss [][]int32
	if json.Unmarshal(b, &idss) == nil && len(idss) > 0 {
		p.Tokens = idss
		return nil
	}
	return errors.New("prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids, and not empty")
}

// Stop is a string or a list of strings.
type Stop []string

// UnmarshalJSON accepts a string, a list of strings, or null.
func (s *Stop) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		*s = nil
		return nil
	}
	var one string
	if json.Unmarshal(b, &one) == nil {
		*s = Stop{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("stop must be a string or a list of strings")
	}
	*s = many
	return nil
}

// decode reads a JSON body into v. Errors are *apiError (400) naming the
// parameter where the decoder knows it.
func decode(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if dec.More() {
		return invalid("", "the body must be one JSON object, with nothing after it")
	}
	var rest json.RawMessage
	if err := dec.Decode(&rest); err != io.EOF {
		return invalid("", "the body must be one JSON object, with nothing after it")
	}
	return nil
}

func decodeError(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &syn):
		return invalid("", fmt.Sprintf("malformed JSON at byte %d: %v", syn.Offset, syn))
	case errors.As(err, &typ):
		if typ.Field == "" {
			return invalid("", fmt.Sprintf("the body must be a JSON object, not %s", typ.Value))
		}
		field := strings.TrimPrefix(typ.Field, "samplingFields.")
		return invalid(field, fmt.Sprintf("%s must be %s, not %s", field, jsonKind(typ.Type.Kind().String()), typ.Value))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return invalid("", "the body is empty or cut short; send a JSON object")
	case errors.As(err, &tooLarge):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest, Code: "request_too_large",
			Message: fmt.Sprintf("the body is larger than this server's limit of %d bytes, which holds a prompt that fills the context; shorten the prompt, or send fewer prompts per request", tooLarge.Limit)}
	}
	// Errors from the UnmarshalJSON methods above: name their field.
	msg := err.Error()
	if i := strings.Index(msg, "json: cannot unmarshal"); i >= 0 {
		return invalid("", "malformed request: "+msg)
	}
	for _, field := range []string{"prompt", "stop", "content"} {
		if strings.HasPrefix(msg, field+" ") {
			param := field
			if field == "content" {
				param = "messages"
			}
			return invalid(param, msg)
		}
	}
	return invalid("", "malformed request: "+msg)
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "int32", "int64", "uint64":
		return "an integer"
	case "float64", "float32":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice":
		return "a list"
	case "struct", "map":
		return "an object"
	}
	return "of another type"
}

// params is a validated request in the scheduler's terms.
type params struct {
	maxTokens    int // 0: as many as fit
	n            int
	sampling     sample.Params
	seeded       bool
	stop         []string
	ignoreEOS    bool
	logprobs     bool
	topLogprobs  int
	stream       bool
	includeUsage bool
	// grammar, when set, constrains every output (structured outputs).
	grammar *grammar.Grammar
	// tools is the request's tools for the prompt (a JSON array; empty: none), and
	// parseTools whether an output that starts with [TOOL_CALLS] is returned as
	// tool_calls.
	tools      string
	parseTools bool
}

// validate checks the shared fields and fills p. maxTokens, if not nil,
// overrides MaxTokens (chat's max_completion_tokens).
func (f *samplingFields) validate(maxTokens *int) (params, error) {
	p := params{n: 1, sampling: sample.Params{Temperature: 1}}
	if maxTokens == nil {
		maxTokens = f.MaxTokens
	}
	if maxTokens != nil {
		if *maxTokens < 1 {
			return p, invalid("max_tokens", fmt.Sprintf("max_tokens must be at least 1, got %d", *maxTokens))
		}
		p.maxTokens = *maxTokens
	}
	if f.N != nil {
		if *f.N < 1 || *f.N > MaxN {
			return p, invalid("n", fmt.Sprintf("n must be between 1 and %d, got %d", MaxN, *f.N))
		}
		p.n = *f.N
	}
	inRange := func(name string, v *float64, lo, hi float64, dst *float32) error {
		if v == nil {
			return nil
		}
		if math.IsNaN(*v) || *v < lo || *v > hi {
			return invalid(name, fmt.Sprintf("%s must be between %g and %g, got %g", name, lo, hi, *v))
		}
		*dst = float32(*v)
		return nil
	}
	sp := &p.sampling
	for _, c := range []struct {
		name   string
		v      *float64
		lo, hi float64
		dst    *float32
	}{
		{"temperature", f.Temperature, 0, 2, &sp.Temperature},
		{"top_p", f.TopP, 0, 1, &sp.TopP},
		{"min_p", f.MinP, 0, 1, &sp.MinP},
		{"presence_penalty", f.PresencePenalty, -2, 2, &sp.PresencePenalty},
		{"frequency_penalty", f.FrequencyPenalty, -2, 2, &sp.FrequencyPenalty},
		{"repetition_penalty", f.RepetitionPenalty, 0, 10, &sp.RepetitionPenalty},
	} {
		if err := inRange(c.name, c.v, c.lo, c.hi, c.dst); err != nil {
			return p, err
		}
	}
	if f.TopP != nil && *f.TopP == 0 {
		return p, invalid("top_p", "top_p must be greater than 0 (use temperature 0 for greedy decoding)")
	}
	if f.TopK != nil {
		switch {
		case *f.TopK == -1:
		case *f.TopK < 0:
			return p, invalid("top_k", fmt.Sprintf("top_k must be -1 (off), 0 (off) or positive, got %d", *f.TopK))
		default:
			sp.TopK = *f.TopK
		}
	}
	if f.Seed != nil {
		sp.Seed = uint64(*f.Seed)
		p.seeded = true
	}
	if len(f.Stop) > MaxStops {
		return p, invalid("stop", fmt.Sprintf("at most %d stop strings, got %d", MaxStops, len(f.Stop)))
	}
	p.stop = f.Stop
	if len(f.LogitBias) > 0 {
		return p, invalid("logit_bias", "logit_bias is not supported")
	}
	p.ignoreEOS = f.IgnoreEOS
	p.stream = f.Stream
	p.includeUsage = f.Stream && f.StreamOptions != nil && f.StreamOptions.IncludeUsage
	g, err := f.guided()
	p.grammar = g
	return p, err
}

// guided compiles the guided_ field, if one is set.
func (f *samplingFields) guided() (*grammar.Grammar, error) {
	hasJSON := len(bytes.TrimSpace(f.GuidedJSON)) > 0 && string(bytes.TrimSpace(f.GuidedJSON)) != "null"
	set := 0
	for _, b := range []bool{hasJSON, f.GuidedRegex != nil, f.GuidedChoice != nil} {
		if b {
			set++
		}
	}
	switch {
	case set > 1:
		return nil, invalid("guided_json", "give at most one of guided_json, guided_regex and guided_choice")
	case hasJSON:
		schema := bytes.TrimSpace(f.GuidedJSON)
		if schema[0] == '"' { // the schema as a string of JSON, as vLLM also takes it
			var text string
			if err := json.Unmarshal(schema, &text); err != nil {
				return nil, invalid("guided_json", "guided_json must be a JSON Schema, or a string holding one")
			}
			schema = []byte(text)
		}
		g, err := compileSchema(schema)
		if err != nil {
			return nil, invalid("guided_json", err.Error())
		}
		return g, nil
	case f.GuidedRegex != nil:
		g, err := cachedGrammar("regex:"+*f.GuidedRegex, func() (*grammar.Grammar, error) { return grammar.Regex(*f.GuidedRegex) })
		if err != nil {
			return nil, invalid("guided_regex", err.Error())
		}
		return g, nil
	case f.GuidedChoice != nil:
		g, err := grammar.Choice(f.GuidedChoice)
		if err != nil {
			return nil, invalid("guided_choice", err.Error())
		}
		return g, nil
	}
	return nil, nil
}

// validate checks a completions request.
func (r *CompletionRequest) validate() (params, error) {
	if !r.Prompt.set || r.Prompt.Len() == 0 {
		return params{}, invalid("prompt", "prompt is required")
	}
	p, err := r.samplingFields.validate(nil)
	if err != nil {
		return p, err
	}
	if r.Logprobs != nil {
		if *r.Logprobs < 0 || *r.Logprobs > scheduler.MaxTopLogprobs {
			return p, invalid("logprobs", fmt.Sprintf("logprobs must be between 0 and %d, got %d", scheduler.MaxTopLogprobs, *r.Logprobs))
		}
		p.logprobs, p.topLogprobs = true, *r.Logprobs
	}
	if r.Echo {
		return p, invalid("echo", "echo is not supported")
	}
	if r.Suffix != nil && *r.Suffix != "" {
		return p, invalid("suffix", "suffix is not supported")
	}
	if r.BestOf != nil && *r.BestOf != p.n {
		return p, invalid("best_of", "best_of is not supported (other than equal to n)")
	}
	if r.Prompt.Len()*p.n > MaxChoices {
		return p, invalid("n", fmt.Sprintf("%d prompts × n=%d is more than %d sequences in one request", r.Prompt.Len(), p.n, MaxChoices))
	}
	return p, nil
}

// validate checks a chat request.
func (r *ChatRequest) validate() (params, error) {
	if len(r.Messages) == 0 {
		return params{}, invalid("messages", "messages is required and must not be empty")
	}
	p, err := r.samplingFields.validate(r.MaxCompletionTokens)
	if err != nil {
		return p, err
	}
	if r.TopLogprobs != nil {
		if !r.Logprobs {
			return p, invalid("top_logprobs", "top_logprobs requires logprobs to be true")
		}
		if *r.TopLogprobs < 0 || *r.TopLogprobs > scheduler.MaxTopLogprobs {
			return p, invalid("top_logprobs", fmt.Sprintf("top_logprobs must be between 0 and %d, got %d", scheduler.MaxTopLogprobs, *r.TopLogprobs))
		}
		p.topLogprobs = *r.TopLogprobs
	}
	p.logprobs = r.Logprobs
	if err := r.validateTools(&p); err != nil {
		return p, err
	}
	if rf := r.ResponseFormat; rf != nil && rf.Type != "" && rf.Type != "text" {
		if p.grammar != nil {
			return p, invalid("response_format", "give one of response_format, a guided_ field and a tool_choice that forces a call, not two")
		}
		switch rf.Type {
		case "json_object":
			p.grammar = grammar.JSONObject()
		case "json_schema":
			if rf.JSONSchema == nil || len(bytes.TrimSpace(rf.JSONSchema.Schema)) == 0 {
				return p, invalid("response_format", `response_format json_schema needs "json_schema": {"name": ..., "schema": {...}}`)
			}
			g, err := compileSchema(rf.JSONSchema.Schema)
			if err != nil {
				return p, invalid("response_format", "response_format.json_schema.schema: "+err.Error())
			}
			p.grammar = g
		default:
			return p, invalid("response_format", fmt.Sprintf("response_format type %q is not one of text, json_object and json_schema", rf.Type))
		}
	}
	return p, nil
}

// DecodeCompletionRequest decodes and validates a completions body.
func DecodeCompletionRequest(r io.Reader) (*CompletionRequest, error) {
	var req CompletionRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if _, err := req.validate(); err != nil {
		return nil, err
	}
	return &req, nil
}

// DecodeChatRequest decodes and validates a chat completions body.
func DecodeChatRequest(r io.Reader) (*ChatRequest, error) {
	var req ChatRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if _, err := req.validate(); err != nil {
		return nil, err
	}
	return &req, nil
}
