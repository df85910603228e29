package tokenizer_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// mixtralV1 is the shape of Mixtral-8x7B-Instruct-v0.1's template.
const mixtralV1 = `{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}`

func TestAJinjaTemplateRendersWithSpecialTokens(t *testing.T) {
	tok := mistral(t)
	ct, err := tok.CompileChatTemplate(mixtralV1)
	if err != nil {
		t.Fatal(err)
	}
	// One user turn: the Jinja path gives mistral-common's golden ids, as the built-in
	// renderer does. (Over several turns the two differ as Hugging Face's template and
	// mistral-common do: the template writes "[/INST]answer" with no space, which is why
	// the built-in renderer serves models whose template is this one.)
	msgs := []tokenizer.Message{{Role: "user", Content: "user message"}}
	got, err := tok.RenderChat(ct, msgs, "", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := []int32{1, 733, 16289, 28793, 2188, 2928, 733, 28748, 16289, 28793} // mistral-common
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// "</s>" in the text is the end-of-sequence token, not its letters.
	got, _ = tok.RenderChat(ct, []tokenizer.Message{{Role: "user", Content: "a"}, {Role: "assistant", Content: "b"}, {Role: "user", Content: "c"}}, "", 1<<20)
	if n := slices.Index(got, tok.EOS()); n < 0 {
		t.Errorf("no EOS token in %v", got)
	}
	// The template's own checks are the conversation's errors.
	_, err = tok.RenderChat(ct, []tokenizer.Message{{Role: "assistant", Content: "x"}}, "", 1<<20)
	if !errors.Is(err, tokenizer.ErrChat) || !strings.Contains(err.Error(), "Conversation roles must alternate") {
		t.Errorf("raise_exception: %v", err)
	}
	if _, err := tok.RenderChat(ct, msgs, "", 3); !errors.Is(err, tokenizer.ErrTooLong) {
		t.Errorf("over the limit: %v", err)
	}
}

func TestAnotherModelsTemplateIsRenderedAsItSays(t *testing.T) {
	tok := mistral(t)
	ct, err := tok.CompileChatTemplate(`{% for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}{% if tools %}tools: {{ tools | length }}
{% endif %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}`)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := tok.RenderChat(ct, []tokenizer.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}}, `[{"type":"function"}]`, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\ntools: 1\n<|im_start|>assistant\n"
	if got := tok.Decode(ids); got != want {
		t.Errorf("rendered %q, want %q", got, want)
	}
}

func TestTemplateSelection(t *testing.T) {
	tok := mistral(t)
	if ct, err := tok.SelectChatTemplate(""); ct != nil || err != nil {
		t.Errorf("a model without a template: %v %v, want the built-in renderer", ct, err)
	}
	if _, err := tok.SelectChatTemplate("{% if %}"); err == nil || !strings.Contains(err.Error(), "--chat-template: the chat template does not compile") {
		t.Errorf("a broken override: %v", err)
	}
	v := modelgen.MistralVocab()
	v.ChatTemplate = mixtralV1
	v1, _ := tokenizer.New(v)
	if ct, err := v1.SelectChatTemplate(""); ct != nil || err != nil {
		t.Errorf("Mistral v1's own template: %v %v, want the built-in renderer", ct, err)
	}
	v.ChatTemplate = "{% for m in messages %}{{ m.content }"
	broken, _ := tokenizer.New(v)
	if _, err := broken.SelectChatTemplate(""); err == nil || !strings.Contains(err.Error(), "give one with --chat-template FILE") {
		t.Errorf("a model whose template does not compile: %v", err)
	}
	v.ChatTemplate = "{% for m in messages %}{{ m.content }}{% endfor %}"
	other, _ := tokenizer.New(v)
	if ct, err := other.SelectChatTemplate(""); ct == nil || err != nil {
		t.Errorf("another model's template: %v %v, want it compiled", ct, err)
	}
}

// FuzzChatTemplate: any template source compiles or is refused, and rendering any
// message with one that compiled returns ids or an error, never a panic.
func FuzzChatTemplate(f *testing.F) {
	f.Add(mixtralV1, "hello")
	f.Add("{% for m in messages %}{{ m.role }}: {{ m.content | upper }}{% endfor %}", "</s>x")
	f.Add("{{ raise_exception('no') }}", "")
	f.Add("{% set x = messages | length %}{{ x * 3 }}{{ tools | tojson }}", "{{ 1 }}")
	tok, err := tokenizer.New(modelgen.MistralVocab())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, source, content string) {
		ct, err := tok.CompileChatTemplate(source)
		if err != nil {
			return
		}
		_, _ = tok.RenderChat(ct, []tokenizer.Message{{Role: "user", Content: content}}, "", 4096)
	})
}
