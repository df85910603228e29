package server_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/scheduler"
	"github.com/moe-operator/moe-operator/engine/server"
)

func TestTokenizeAndDetokenizeRoundTrip(t *testing.T) {
	h := start(t, server.Options{APIKey: "k"}, scheduler.Config{})
	auth := []string{"Authorization", "Bearer k"}
	type tokenized struct {
		Count       int      `json:"count"`
		MaxModelLen int      `json:"max_model_len"`
		Tokens      []int32  `json:"tokens"`
		TokenStrs   []string `json:"token_strs"`
	}
	text := "hello world, hello experts"
	res := do(t, "POST", h.url+"/tokenize", map[string]any{"prompt": text, "return_token_strs": true}, auth...)
	if res.status != 200 {
		t.Fatalf("tokenize: %d %s", res.status, res.body)
	}
	tk := decodeJSON[tokenized](t, res.body)
	if tk.Count != len(tk.Tokens) || tk.Count < 3 || tk.MaxModelLen != h.sched.MaxSequence() || len(tk.TokenStrs) != tk.Count {
		t.Fatalf("tokenize: %+v", tk)
	}
	if tk.Tokens[0] != h.sched.Tokenizer().BOS() {
		t.Errorf("the prompt does not start with BOS: %v", tk.Tokens)
	}
	// The same prompt as a completion counts the same tokens.
	c := decodeJSON[struct {
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}](t, do(t, "POST", h.url+"/v1/completions", map[string]any{"prompt": text, "max_tokens": 1}, auth...).body)
	if c.Usage.PromptTokens != tk.Count {
		t.Errorf("tokenize counts %d, a completion of the same prompt %d", tk.Count, c.Usage.PromptTokens)
	}
	res = do(t, "POST", h.url+"/detokenize", map[string]any{"tokens": tk.Tokens}, auth...)
	if got := decodeJSON[struct {
		Prompt string `json:"prompt"`
	}](t, res.body).Prompt; got != text {
		t.Errorf("detokenize gave %q, want %q", got, text)
	}

	// Chat messages are rendered with the chat template, as a chat completion is.
	msgs := []map[string]string{{"role": "system", "content": "be brief"}, {"role": "user", "content": text}}
	tc := decodeJSON[tokenized](t, do(t, "POST", h.url+"/tokenize", map[string]any{"messages": msgs}, auth...).body)
	cc := decodeJSON[struct {
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}](t, do(t, "POST", h.url+"/v1/chat/completions", map[string]any{"messages": msgs, "max_tokens": 1}, auth...).body)
	if tc.Count == 0 || tc.Count != cc.Usage.PromptTokens {
		t.Errorf("tokenize counts %d chat tokens, the chat completion %d", tc.Count, cc.Usage.PromptTokens)
	}

	for _, bad := range []struct {
		path string
		body any
		want string
	}{
		{"/tokenize", map[string]any{}, `give either \"prompt\"`},
		{"/tokenize", map[string]any{"prompt": "x", "messages": msgs}, `give either \"prompt\"`},
		{"/tokenize", map[string]any{"prompt": "x", "model": "other"}, "does not exist"},
		{"/detokenize", map[string]any{"tokens": []int{1, 1 << 20}}, "outside the vocabulary"},
		{"/detokenize", `{"tokens": "abc"}`, "tokens must be"},
	} {
		res := do(t, "POST", h.url+bad.path, bad.body, auth...)
		if res.status/100 != 4 || !strings.Contains(string(res.body), bad.want) {
			t.Errorf("%s %v: %d %s, want a 4xx with %q", bad.path, bad.body, res.status, res.body, bad.want)
		}
	}
	if res := do(t, "POST", h.url+"/tokenize", map[string]any{"prompt": "x"}); res.status != http.StatusUnauthorized {
		t.Errorf("tokenize without the key: %d", res.status)
	}
}

func TestVersionAndPing(t *testing.T) {
	h := start(t, server.Options{APIKey: "k", Version: "1.2.3 abc"}, scheduler.Config{})
	res := do(t, "GET", h.url+"/version", nil)
	if res.status != 200 || !strings.Contains(string(res.body), `"version":"1.2.3 abc"`) {
		t.Errorf("/version: %d %s", res.status, res.body)
	}
	for _, m := range []string{"GET", "POST"} {
		if res := do(t, m, h.url+"/ping", nil); res.status != 200 {
			t.Errorf("%s /ping: %d %s", m, res.status, res.body)
		}
	}
}

func TestUnknownFieldsAreReportedOrRefused(t *testing.T) {
	var logs bytes.Buffer
	h := start(t, server.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, scheduler.Config{})
	body := map[string]any{"prompt": "hi", "max_tokens": 1, "guided_grammar": "x", "frobnicate": true, "user": "u-1"}
	for range 2 {
		res := do(t, "POST", h.url+"/v1/completions", body)
		if res.status != 200 {
			t.Fatalf("%d %s", res.status, res.body)
		}
		if got := res.header.Get("X-Ignored-Fields"); got != "frobnicate, guided_grammar" {
			t.Errorf("X-Ignored-Fields %q: the unknown fields, and not user (an OpenAI field the server accepts)", got)
		}
	}
	if n := strings.Count(logs.String(), "field=frobnicate"); n != 1 {
		t.Errorf("frobnicate logged %d times, want once:\n%s", n, logs.String())
	}
	if res := do(t, "POST", h.url+"/v1/completions", map[string]any{"prompt": "hi", "max_tokens": 1, "temperature": 0}); res.header.Get("X-Ignored-Fields") != "" {
		t.Errorf("a request with known fields only got X-Ignored-Fields %q", res.header.Get("X-Ignored-Fields"))
	}

	strict := start(t, server.Options{StrictRequests: true}, scheduler.Config{})
	res := do(t, "POST", strict.url+"/v1/chat/completions", map[string]any{"messages": []map[string]string{{"role": "user", "content": "hi"}}, "frobnicate": 1})
	if res.status != 400 || !strings.Contains(string(res.body), `unknown field \"frobnicate\"`) || !strings.Contains(string(res.body), `"param":"frobnicate"`) {
		t.Errorf("strict: %d %s", res.status, res.body)
	}
}

func TestAChatTemplateRendersChats(t *testing.T) {
	h := start(t, server.Options{ChatTemplate: "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"}, scheduler.Config{})
	tk := decodeJSON[struct {
		Tokens []int32 `json:"tokens"`
	}](t, do(t, "POST", h.url+"/tokenize", map[string]any{"messages": []map[string]string{{"role": "user", "content": "hi"}}}).body)
	text := decodeJSON[struct {
		Prompt string `json:"prompt"`
	}](t, do(t, "POST", h.url+"/detokenize", map[string]any{"tokens": tk.Tokens}).body).Prompt
	if text != "<user>hi<assistant>" {
		t.Errorf("rendered %q", text)
	}
	if res := do(t, "POST", h.url+"/v1/chat/completions", map[string]any{"messages": []map[string]string{{"role": "user", "content": "hi"}}, "max_tokens": 2}); res.status != 200 {
		t.Errorf("chat: %d %s", res.status, res.body)
	}

	m, err := loadTiny()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sch, err := scheduler.New(m, scheduler.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer sch.Close()
	srv := server.New(server.Options{ChatTemplate: "{% for %}"})
	if err := srv.Attach(sch); err == nil || !strings.Contains(err.Error(), "--chat-template") || srv.Ready() {
		t.Errorf("a template that does not compile: %v (ready %v)", err, srv.Ready())
	}
}
