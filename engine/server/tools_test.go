package server_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/scheduler"
	"github.com/moe-operator/moe-operator/engine/server"
)

// weatherTools are short: the tiny model's context is 512 tokens of about a byte each.
var weatherTools = []map[string]any{
	{"type": "function", "function": map[string]any{"name": "wx", "parameters": map[string]any{"type": "object",
		"properties": map[string]any{"city": map[string]any{"type": "string", "maxLength": 6}}, "required": []string{"city"}}}},
	{"type": "function", "function": map[string]any{"name": "tm", "parameters": map[string]any{"type": "object",
		"properties": map[string]any{"z": map[string]any{"type": "integer", "minimum": 0}}, "required": []string{"z"}}}},
}

type toolOut struct {
	Choices []struct {
		Message struct {
			Content   *string `json:"content"`
			ToolCalls []struct {
				ID       string `json:"id"`
				Type     string `json:"type"`
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
}

func TestForcedToolCallsAreParsedWithValidArguments(t *testing.T) {
	h := start(t, server.Options{}, scheduler.Config{})
	msgs := []map[string]any{{"role": "user", "content": "Weather in Paris?"}}
	for seed, choice := range []any{"required", map[string]any{"type": "function", "function": map[string]any{"name": "tm"}}, "required", "required"} {
		res := do(t, "POST", h.url+"/v1/chat/completions", map[string]any{"messages": msgs, "tools": weatherTools,
			"tool_choice": choice, "max_tokens": 150, "seed": seed, "temperature": 1, "parallel_tool_calls": false})
		if res.status != 200 {
			t.Fatalf("%d %s", res.status, res.body)
		}
		c := decodeJSON[toolOut](t, res.body).Choices[0]
		if c.FinishReason != "tool_calls" || c.Message.Content != nil || len(c.Message.ToolCalls) == 0 {
			t.Fatalf("tool_choice %v: %s", choice, res.body)
		}
		for _, call := range c.Message.ToolCalls {
			var args map[string]any
			if err := json.Unmarshal([]byte(call.Function.Arguments), &args); err != nil || call.Type != "function" || !strings.HasPrefix(call.ID, "call_") {
				t.Fatalf("call %+v: %v", call, err)
			}
			switch call.Function.Name {
			case "wx":
				if city, ok := args["city"].(string); !ok || len([]rune(city)) > 6 {
					t.Errorf("wx arguments %s", call.Function.Arguments)
				}
			case "tm":
				if z, ok := args["z"].(float64); !ok || z < 0 {
					t.Errorf("tm arguments %s", call.Function.Arguments)
				}
			default:
				t.Errorf("a call to %q, which is not a tool", call.Function.Name)
			}
			if _, named := choice.(map[string]any); named && call.Function.Name != "tm" {
				t.Errorf("tool_choice named tm; the call is to %s", call.Function.Name)
			}
		}

		// The round trip: the calls and their results go back as messages.
		back := append(append([]map[string]any{}, msgs...),
			map[string]any{"role": "assistant", "content": nil, "tool_calls": c.Message.ToolCalls},
			map[string]any{"role": "tool", "tool_call_id": c.Message.ToolCalls[0].ID, "content": "18 C"})
		res = do(t, "POST", h.url+"/v1/chat/completions", map[string]any{"messages": back, "tools": weatherTools, "max_tokens": 5})
		if res.status != 200 {
			t.Fatalf("the round trip: %d %s", res.status, res.body)
		}
		tk := decodeJSON[struct {
			Tokens []int32 `json:"tokens"`
		}](t, do(t, "POST", h.url+"/tokenize", map[string]any{"messages": back}).body)
		text := decodeJSON[struct {
			Prompt string `json:"prompt"`
		}](t, do(t, "POST", h.url+"/detokenize", map[string]any{"tokens": tk.Tokens}).body).Prompt
		if !strings.Contains(text, "[TOOL_CALLS] [{") || !strings.Contains(text, `[TOOL_RESULTS] {"content":"18 C","call_id":"`+c.Message.ToolCalls[0].ID) {
			t.Errorf("the rendered conversation lacks the call or its result: %q", text)
		}
	}

	// Streaming: the call comes as tool_calls deltas, then finish_reason tool_calls.
	res := do(t, "POST", h.url+"/v1/chat/completions", map[string]any{"messages": msgs, "tools": weatherTools,
		"tool_choice": "required", "max_tokens": 150, "stream": true, "parallel_tool_calls": false})
	body := string(res.body)
	if !strings.Contains(body, `"tool_calls":[{"index":0,"id":"call_`) || !strings.Contains(body, `"finish_reason":"tool_calls"`) || strings.Contains(body, "[TOOL_CALLS]") {
		t.Errorf("stream: %s", body)
	}

	// With tool_choice auto, a random model answers in text (it never starts a call).
	res = do(t, "POST", h.url+"/v1/chat/completions", map[string]any{"messages": msgs, "tools": weatherTools, "max_tokens": 8, "seed": 1})
	if c := decodeJSON[toolOut](t, res.body).Choices[0]; c.Message.Content == nil || c.FinishReason == "tool_calls" {
		t.Errorf("auto: %s", res.body)
	}
}

func TestBadToolRequestsAre400s(t *testing.T) {
	h := start(t, server.Options{}, scheduler.Config{})
	user := map[string]any{"role": "user", "content": "x"}
	for _, tt := range []struct {
		body  map[string]any
		param string
		want  string
	}{
		{map[string]any{"tools": "nope"}, "tools", "must be a list"},
		{map[string]any{"tools": []map[string]any{{"type": "code_interpreter"}}}, "tools", "only function tools"},
		{map[string]any{"tools": weatherTools, "tool_choice": map[string]any{"type": "function", "function": map[string]any{"name": "x"}}}, "tool_choice", "not in tools"},
		{map[string]any{"tool_choice": "required"}, "tool_choice", "needs tools"},
		{map[string]any{"tools": weatherTools, "tool_choice": "required", "guided_choice": []string{"a"}}, "tool_choice", "give one of them"},
		{map[string]any{"messages": []map[string]any{user, {"role": "tool", "content": "r", "tool_call_id": "c"}}}, "messages", "must follow an assistant message with tool_calls"},
	} {
		if tt.body["messages"] == nil {
			tt.body["messages"] = []map[string]any{user}
		}
		res := do(t, "POST", h.url+"/v1/chat/completions", tt.body)
		if res.status != 400 || !strings.Contains(string(res.body), `"param":"`+tt.param+`"`) || !strings.Contains(string(res.body), tt.want) {
			t.Errorf("%v: %d %s", tt.body, res.status, res.body)
		}
	}
}
