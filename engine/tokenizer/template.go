package tokenizer

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/ardanlabs/jinja"
)

// ChatTemplate is a model's Jinja chat template, compiled. The engine renders it with
// github.com/ardanlabs/jinja: pure Go, no dependencies, written for the chat templates
// GGUF files and tokenizer configs carry (raise_exception, tojson, loop controls,
// macros), compiled once and safe for concurrent rendering.
type ChatTemplate struct {
	t *jinja.Template
	// specials are the control tokens' pieces that appear in the source, longest first:
	// where the rendered text holds one, it is that token, not its letters.
	specials []special
}

type special struct {
	piece string
	id    int32
}

// MaxTemplateBytes bounds a chat template.
const MaxTemplateBytes = 1 << 20

// CompileChatTemplate compiles a template's source for this tokenizer's vocabulary.
func (t *Tokenizer) CompileChatTemplate(source string) (*ChatTemplate, error) {
	if len(source) > MaxTemplateBytes {
		return nil, fmt.Errorf("the chat template is %d bytes; at most %d are accepted", len(source), MaxTemplateBytes)
	}
	tmpl, err := jinja.Compile(source)
	if err != nil {
		return nil, fmt.Errorf("the chat template does not compile: %w", err)
	}
	ct := &ChatTemplate{t: tmpl}
	for id, p := range t.v.Pieces {
		if id < len(t.v.Types) && t.v.Types[id] == Control && p != "" &&
			(strings.Contains(source, p) || int32(id) == t.v.BOS || int32(id) == t.v.EOS) {
			ct.specials = append(ct.specials, special{p, int32(id)})
		}
	}
	slices.SortFunc(ct.specials, func(a, b special) int { return len(b.piece) - len(a.piece) })
	return ct, nil
}

// SelectChatTemplate picks how chat requests are rendered: override (a template's
// source, from --chat-template) when given; else the built-in renderer when the model's
// own template is Mistral v1 (whose token ids it reproduces exactly) or absent; else the
// model's template, compiled. A nil template means the built-in renderer.
func (t *Tokenizer) SelectChatTemplate(override string) (*ChatTemplate, error) {
	switch {
	case override != "":
		ct, err := t.CompileChatTemplate(override)
		if err != nil {
			return nil, fmt.Errorf("--chat-template: %w", err)
		}
		return ct, nil
	case t.v.ChatTemplate == "" || t.ChatFormat() == ChatMistralV1:
		return nil, nil
	}
	ct, err := t.CompileChatTemplate(t.v.ChatTemplate)
	if err != nil {
		return nil, fmt.Errorf("the model's %w; give one with --chat-template FILE", err)
	}
	return ct, nil
}

// RenderChat renders msgs (and tools, a JSON array, or empty) with the template, with the
// generation prompt added, and tokenizes the text: each control token's piece becomes that
// token, and each stretch of text between them is encoded with the dummy prefix, as
// llama.cpp does. It gives up with ErrTooLong past limit tokens, and reports the
// template's own errors (raise_exception) as ErrChat.
func (t *Tokenizer) RenderChat(ct *ChatTemplate, msgs []Message, tools string, limit int) ([]int32, error) {
	list := make([]any, len(msgs))
	for i, m := range msgs {
		msg := map[string]any{"role": m.Role, "content": m.Content}
		if m.ToolCalls != "" {
			var calls []map[string]any
			_ = json.Unmarshal([]byte(m.ToolCalls), &calls)
			for _, c := range calls { // OpenAI's shape, which templates expect
				c["function"] = map[string]any{"name": c["name"], "arguments": c["arguments"]}
				c["type"] = "function"
			}
			msg["tool_calls"] = calls
		}
		if m.ToolCallID != "" {
			msg["tool_call_id"] = m.ToolCallID
		}
		list[i] = msg
	}
	data := map[string]any{
		"messages": list, "add_generation_prompt": true,
		"bos_token": t.Piece(t.v.BOS), "eos_token": t.Piece(t.v.EOS),
	}
	if tools != "" {
		var ts []any
		_ = json.Unmarshal([]byte(tools), &ts)
		data["tools"] = ts
	}
	text, err := ct.t.Render(data)
	if err != nil {
		return nil, fmt.Errorf("%w: the chat template: %v", ErrChat, err)
	}
	if t.MinTokens(len(text)) > limit {
		return nil, fmt.Errorf("%w: the messages take more than %d tokens", ErrTooLong, limit)
	}
	var ids []int32
	for text != "" {
		at, sp := len(text), special{}
		for _, s := range ct.specials {
			if i := strings.Index(text, s.piece); i >= 0 && (i < at || (i == at && len(s.piece) > len(sp.piece))) {
				at, sp = i, s
			}
		}
		if at > 0 {
			more, ok := t.EncodeLimit(text[:at], false, limit-len(ids))
			ids = append(ids, more...)
			if !ok {
				return nil, fmt.Errorf("%w: the messages take more than %d tokens", ErrTooLong, limit)
			}
		}
		if sp.piece == "" {
			break
		}
		ids = append(ids, sp.id)
		text = text[at+len(sp.piece):]
	}
	if len(ids) > limit {
		return nil, fmt.Errorf("%w: the messages take more than %d tokens", ErrTooLong, limit)
	}
	return ids, nil
}
