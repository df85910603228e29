package server_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/scheduler"
	"github.com/moe-operator/moe-operator/engine/server"
)

type choiceOut struct {
	Choices []struct {
		Text    string `json:"text"`
		Message struct {
			Content string `json:"content"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
}

func TestStructuredOutputsHoldOnARandomModel(t *testing.T) {
	h := start(t, server.Options{}, scheduler.Config{})
	msgs := []map[string]string{{"role": "user", "content": "Describe a person."}}
	schema := map[string]any{"type": "object", "properties": map[string]any{
		"name": map[string]any{"type": "string", "maxLength": 8},
		"age":  map[string]any{"type": "integer", "minimum": 0},
		"tags": map[string]any{"type": "array", "items": map[string]any{"enum": []string{"a", "b"}}, "maxItems": 3},
	}, "required": []string{"name", "age"}}
	for seed := range 8 {
		for _, format := range []map[string]any{
			{"type": "json_schema", "json_schema": map[string]any{"name": "person", "schema": schema}},
			{"type": "json_object"},
		} {
			body := map[string]any{"messages": msgs, "response_format": format, "max_tokens": 400, "seed": seed, "temperature": 1}
			res := do(t, "POST", h.url+"/v1/chat/completions", body)
			if res.status != 200 {
				t.Fatalf("%d %s", res.status, res.body)
			}
			c := decodeJSON[choiceOut](t, res.body).Choices[0]
			if format["type"] == "json_object" && c.FinishReason == "length" {
				continue // free JSON has unbounded strings: a random model may not finish
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(c.Message.Content), &v); err != nil {
				t.Fatalf("seed %d, %v: %q is not a JSON object: %v", seed, format["type"], c.Message.Content, err)
			}
			if format["type"] == "json_schema" {
				if c.FinishReason != "stop" {
					t.Errorf("seed %d: finish_reason %q for a bounded schema", seed, c.FinishReason)
				}
				name, ok := v["name"].(string)
				age, aok := v["age"].(float64)
				if !ok || len([]rune(name)) > 8 || !aok || age < 0 || age != float64(int64(age)) {
					t.Errorf("seed %d: %s does not validate", seed, c.Message.Content)
				}
				for k := range v {
					if k != "name" && k != "age" && k != "tags" {
						t.Errorf("seed %d: undeclared property %q", seed, k)
					}
				}
			}
		}
	}

	// vLLM's guided_ fields, on both endpoints.
	res := do(t, "POST", h.url+"/v1/completions", map[string]any{"prompt": "Answer:", "guided_choice": []string{"yes", "no"}, "max_tokens": 10, "seed": 3})
	if got := decodeJSON[choiceOut](t, res.body).Choices[0].Text; got != "yes" && got != "no" {
		t.Errorf("guided_choice gave %q", got)
	}
	res = do(t, "POST", h.url+"/v1/chat/completions", map[string]any{"messages": msgs, "guided_regex": `[0-9]{3}-[a-z]{2}`, "max_tokens": 20, "seed": 4})
	if got := decodeJSON[choiceOut](t, res.body).Choices[0].Message.Content; !regexp.MustCompile(`^[0-9]{3}-[a-z]{2}$`).MatchString(got) {
		t.Errorf("guided_regex gave %q", got)
	}
	res = do(t, "POST", h.url+"/v1/chat/completions", map[string]any{"messages": msgs, "guided_json": `{"type":"boolean"}`, "max_tokens": 20})
	if got := decodeJSON[choiceOut](t, res.body).Choices[0].Message.Content; got != "true" && got != "false" {
		t.Errorf("guided_json as a string gave %q", got)
	}
	// Streaming: the chunks join into a valid object.
	res = do(t, "POST", h.url+"/v1/chat/completions", map[string]any{"messages": msgs, "stream": true, "max_tokens": 400,
		"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "p", "schema": schema}}})
	var text strings.Builder
	for _, line := range strings.Split(string(res.body), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		_ = json.Unmarshal([]byte(data), &chunk)
		if len(chunk.Choices) > 0 {
			text.WriteString(chunk.Choices[0].Delta.Content)
		}
	}
	if !json.Valid([]byte(text.String())) {
		t.Errorf("the streamed structured output %q is not JSON", text.String())
	}
}

func TestBadStructuredOutputRequestsAre400s(t *testing.T) {
	h := start(t, server.Options{}, scheduler.Config{})
	msgs := []map[string]string{{"role": "user", "content": "x"}}
	for _, tt := range []struct {
		body  map[string]any
		param string
		want  string
	}{
		{map[string]any{"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{"name": "x", "schema": map[string]any{"type": "string", "pattern": "^a"}}}},
			"response_format", "uses pattern"},
		{map[string]any{"response_format": map[string]any{"type": "json_schema"}}, "response_format", "needs \\\"json_schema\\\""},
		{map[string]any{"response_format": map[string]any{"type": "xml"}}, "response_format", "not one of text"},
		{map[string]any{"guided_regex": "(", "max_tokens": 5}, "guided_regex", "missing closing )"},
		{map[string]any{"guided_choice": []string{}}, "guided_choice", "at least one choice"},
		{map[string]any{"guided_choice": []string{"a"}, "guided_regex": "a"}, "guided_json", "at most one"},
		{map[string]any{"guided_json": map[string]any{"type": "integer", "maximum": 3}}, "guided_json", "maximum"},
		{map[string]any{"guided_choice": []string{"a"}, "response_format": map[string]any{"type": "json_object"}}, "response_format", "not two"},
	} {
		tt.body["messages"] = msgs
		res := do(t, "POST", h.url+"/v1/chat/completions", tt.body)
		body := string(res.body)
		if res.status != 400 || !strings.Contains(body, fmt.Sprintf(`"param":%q`, tt.param)) || !strings.Contains(body, tt.want) {
			t.Errorf("%v: %d %s, want a 400 on %s with %q", tt.body, res.status, body, tt.param, tt.want)
		}
	}
}
