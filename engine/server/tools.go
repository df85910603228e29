package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/moe-operator/moe-operator/engine/grammar"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// toolSpec is one entry of a chat request's tools.
type toolSpec struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters,omitempty"`
	} `json:"function"`
}

var toolName = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// validateTools reads tools and tool_choice into p: the tools for the prompt, whether
// outputs are parsed for tool calls, and, for tool_choice required or a named function,
// the grammar that makes the output calls with valid arguments.
func (r *ChatRequest) validateTools(p *params) error {
	var tools []toolSpec
	if t := bytes.TrimSpace(r.Tools); len(t) > 0 && string(t) != "null" {
		if err := json.Unmarshal(t, &tools); err != nil {
			return invalid("tools", `tools must be a list of {"type": "function", "function": {"name", "description", "parameters"}}`)
		}
	}
	seen := map[string]bool{}
	for i, t := range tools {
		switch {
		case t.Type != "function":
			return invalid("tools", fmt.Sprintf("tools[%d].type is %q; only function tools are supported", i, t.Type))
		case !toolName.MatchString(t.Function.Name):
			return invalid("tools", fmt.Sprintf("tools[%d].function.name %q must be 1 to 64 letters, digits, _ or -", i, t.Function.Name))
		case seen[t.Function.Name]:
			return invalid("tools", fmt.Sprintf("tools[%d]: the name %q is used twice", i, t.Function.Name))
		}
		seen[t.Function.Name] = true
	}
	choice := "auto"
	if len(tools) == 0 {
		choice = "none"
	}
	var named string
	if c := bytes.TrimSpace(r.ToolChoice); len(c) > 0 && string(c) != "null" {
		var s string
		var fn struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		switch {
		case json.Unmarshal(c, &s) == nil && (s == "none" || s == "auto" || s == "required"):
			choice = s
		case json.Unmarshal(c, &fn) == nil && fn.Type == "function" && fn.Function.Name != "":
			choice, named = "named", fn.Function.Name
			if !seen[named] {
				return invalid("tool_choice", fmt.Sprintf("tool_choice names %q, which is not in tools", named))
			}
		default:
			return invalid("tool_choice", `tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}`)
		}
		if choice != "none" && len(tools) == 0 {
			return invalid("tool_choice", fmt.Sprintf("tool_choice %q needs tools", choice))
		}
	}
	if choice == "none" {
		return nil
	}
	text, _ := json.Marshal(tools)
	p.tools, p.parseTools = string(text), true
	if choice == "auto" {
		return nil
	}
	if p.grammar != nil {
		return invalid("tool_choice", fmt.Sprintf("tool_choice %q constrains the output, as the guided_ field does: give one of them", choice))
	}
	var callable []grammar.Tool
	for _, t := range tools {
		if named == "" || t.Function.Name == named {
			callable = append(callable, grammar.Tool{Name: t.Function.Name, Parameters: t.Function.Parameters})
		}
	}
	// A named function, or parallel_tool_calls false, is one call.
	maxCalls := 0
	if named != "" || (r.ParallelToolCalls != nil && !*r.ParallelToolCalls) {
		maxCalls = 1
	}
	g, err := cachedGrammar(fmt.Sprintf("tools:%s|%s|%d", text, named, maxCalls), func() (*grammar.Grammar, error) { return grammar.ToolCalls(callable, maxCalls) })
	if err != nil {
		return invalid("tools", err.Error())
	}
	p.grammar = g
	return nil
}

// chatMessages converts the API's messages for the chat template, with an assistant's
// tool calls in Mistral's form.
func chatMessages(in []ChatMessage) ([]tokenizer.Message, error) {
	msgs := make([]tokenizer.Message, len(in))
	for i, m := range in {
		role := m.Role
		if role == "developer" { // OpenAI's newer name for system
			role = "system"
		}
		msgs[i] = tokenizer.Message{Role: role, Content: m.Content.Text, ToolCallID: m.ToolCallID}
		if len(m.ToolCalls) == 0 {
			continue
		}
		type call struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
			ID        string          `json:"id,omitempty"`
		}
		calls := make([]call, len(m.ToolCalls))
		for j, c := range m.ToolCalls {
			if !json.Valid([]byte(c.Function.Arguments)) {
				return nil, invalid("messages", fmt.Sprintf("messages[%d].tool_calls[%d].function.arguments is not JSON", i, j))
			}
			calls[j] = call{Name: c.Function.Name, Arguments: json.RawMessage(c.Function.Arguments), ID: c.ID}
		}
		text, _ := json.Marshal(calls)
		msgs[i].ToolCalls = string(text)
	}
	return msgs, nil
}

// parseToolCalls reads an output that starts with [TOOL_CALLS] into calls; ok is false
// when text is not such an output (then it is ordinary content).
func parseToolCalls(text string) (calls []ToolCall, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimLeft(text, " "), strings.TrimSpace(grammar.ToolCallsPrefix))
	if !found {
		return nil, false
	}
	var in []struct {
		Name      string          `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := json.Unmarshal([]byte(strings.TrimSpace(rest)), &in); err != nil || len(in) == 0 {
		return nil, false
	}
	for i, c := range in {
		var out ToolCall
		out.ID = "call_" + strconv.FormatUint(uint64(i), 10) + requestID("")[:9]
		out.Type = "function"
		out.Function.Name = c.Name
		out.Function.Arguments = string(c.Arguments)
		if len(c.Arguments) == 0 {
			out.Function.Arguments = "{}"
		}
		calls = append(calls, out)
	}
	return calls, true
}

// mayBeToolCalls reports whether text could still become a tool-call output.
func mayBeToolCalls(text string) bool {
	t := strings.TrimLeft(text, " ")
	prefix := strings.TrimSpace(grammar.ToolCallsPrefix)
	return strings.HasPrefix(t, prefix) || strings.HasPrefix(prefix, t)
}
