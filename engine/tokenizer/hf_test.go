package tokenizer_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// hfStrings exercise merges, the dummy prefix, whitespace runs, byte
// fallback and multi-byte text.
var hfStrings = []string{
	"Hello world", "Hello, world!", " leading space", "  two leading spaces", "   three",
	"trailing spaces   ", "multiple   inner    spaces", "\n", "\n\n", "line one\nline two\n", "\ttab",
	"mixed \t\n whitespace", "a", "The quick brown fox jumps over the lazy dog.",
	"[INST] What is your name? [/INST]", "<s> is not special here </s>", "1234567890", "3.14159 2.71828",
	"def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
	"{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}", "https://example.com/path?query=1&other=two#frag",
	"naïve café résumé", "Größe und Übermaß", "Привет, мир!", "こんにちは世界", "你好，世界！", "emoji 😀",
	"🦙 llama", "👨‍👩‍👧‍👦 family", "math: ∑ ∫ √ ∞ ≠ ≤", "zero\u200bwidth", "can't won't shouldn't",
	"           grabbed", " grabbed", "ax\n####\nboo", "镇", "🦙Ꙋ",
}

// realMistralMerges returns the Mistral tokenizer's real merge list from the
// mistral-tokenizer-js package that `make reference` installs (the same
// package the embedded vocabulary comes from), or skips.
func realMistralMerges(t *testing.T, pieces []string) [][2]string {
	t.Helper()
	js, err := os.ReadFile(filepath.Join("..", "..", "test", "reference", "node_modules", "mistral-tokenizer-js", "mistral-tokenizer.js"))
	if err != nil {
		t.Skip("mistral-tokenizer-js is not installed (make reference):", err)
	}
	m := regexp.MustCompile(`const merges_binary = "([A-Za-z0-9+/=]+)"`).FindSubmatch(js)
	if m == nil {
		t.Fatal("merges_binary not found in mistral-tokenizer.js")
	}
	bin, err := base64.StdEncoding.DecodeString(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	// Little-endian uint16 token ids, two per merge, in rank order.
	var merges [][2]string
	for i := 0; i+4 <= len(bin); i += 4 {
		a := int(bin[i]) | int(bin[i+1])<<8
		b := int(bin[i+2]) | int(bin[i+3])<<8
		merges = append(merges, [2]string{pieces[a], pieces[b]})
	}
	return merges
}

// hfFile writes a Mistral-style tokenizer.json for v's pieces with the given
// merges (as "a b" strings, the older encoding).
func hfFile(t *testing.T, v tokenizer.Vocab, merges [][2]string) []byte {
	t.Helper()
	vocab := map[string]int{}
	for i, p := range v.Pieces {
		vocab[p] = i
	}
	strs := make([]string, len(merges))
	for i, m := range merges {
		strs[i] = m[0] + " " + m[1]
	}
	b, err := json.Marshal(map[string]any{
		"added_tokens": []map[string]any{
			{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true},
			{"id": 2, "content": "</s>", "special": true}},
		"normalizer": map[string]any{"type": "Sequence", "normalizers": []map[string]any{
			{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": map[string]string{"String": " "}, "content": "▁"}}},
		"pre_tokenizer": nil,
		"post_processor": map[string]any{"type": "TemplateProcessing", "single": []map[string]any{
			{"SpecialToken": map[string]any{"id": "<s>", "type_id": 0}}, {"Sequence": map[string]any{"id": "A", "type_id": 0}}}},
		"model": map[string]any{"type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true, "vocab": vocab, "merges": strs},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRealMistralTokenizerJSONMatchesTheGGUFVocabulary(t *testing.T) {
	gv := modelgen.MistralVocab()
	merges := realMistralMerges(t, gv.Pieces)
	hv, err := tokenizer.VocabFromHFJSON(hfFile(t, gv, merges), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(hv.Types, gv.Types) || hv.BOS != gv.BOS || hv.EOS != gv.EOS || hv.UNK != gv.UNK || !hv.AddBOS || hv.AddEOS || !hv.AddSpacePrefix {
		t.Errorf("special tokens, types or flags differ from the GGUF vocabulary")
	}
	hf, _ := tokenizer.New(hv)
	gg, _ := tokenizer.New(gv)
	for _, s := range append(hfStrings, strings.Repeat(" ", 17)+"x", "a"+strings.Repeat(" ", 9)+"b") {
		got, want := hf.Encode(s, true), gg.Encode(s, true)
		if !slices.Equal(got, want) {
			t.Errorf("%q:\n tokenizer.json %v\n GGUF           %v", s, got, want)
		}
	}
	t.Logf("%d merges; %d strings encode identically", len(merges), len(hfStrings)+2)
}

func TestTokenizerJSONRoundTripKeepsEncodings(t *testing.T) {
	synthetic, _ := modelgen.SyntheticVocab(600)
	for name, v := range map[string]tokenizer.Vocab{"mistral": modelgen.MistralVocab(), "synthetic": synthetic} {
		t.Run(name, func(t *testing.T) {
			v.ChatTemplate = "{{ bos_token }}{% for m in messages %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endfor %}"
			tj, cj, err := v.HFJSON()
			if err != nil {
				t.Fatal(err)
			}
			back, err := tokenizer.FromHFJSON(tj, cj)
			if err != nil {
				t.Fatal(err)
			}
			orig, _ := tokenizer.New(v)
			for _, s := range hfStrings {
				if got, want := back.Encode(s, true), orig.Encode(s, true); !slices.Equal(got, want) {
					t.Errorf("%q:\n tokenizer.json %v\n original       %v", s, got, want)
				}
				if got, want := back.Decode(orig.Encode(s, false)), orig.Decode(orig.Encode(s, false)); got != want {
					t.Errorf("%q: decodes to %q, want %q", s, got, want)
				}
			}
			if back.ChatFormat() != tokenizer.ChatMistralV1 {
				t.Errorf("chat template not recognised as Mistral v1")
			}
		})
	}
}

func TestMistralChatTemplatesAreRecognised(t *testing.T) {
	// The shape of Mixtral-8x7B-Instruct-v0.1's template (v1), and of the
	// v3 template with tool tokens.
	v1 := `{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}`
	v3 := `{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{% if tools %}[AVAILABLE_TOOLS]{{ tools|tojson }}[/AVAILABLE_TOOLS]{% endif %}[INST]{{ message['content'] }}[/INST]{% endif %}{% endfor %}`
	for tmpl, want := range map[string]tokenizer.ChatFormat{v1: tokenizer.ChatMistralV1, v3: tokenizer.ChatUnknown, "": tokenizer.ChatUnknown,
		"{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}": tokenizer.ChatUnknown} {
		if got := tokenizer.DetectChatFormat(tmpl); got != want {
			t.Errorf("template %.40q...: %q, want %q", tmpl, got, want)
		}
	}
}

func TestUnsupportedTokenizerJSONIsRefusedWithAReason(t *testing.T) {
	v, _ := modelgen.SyntheticVocab(300)
	good, _, err := v.HFJSON()
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(good, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	model := func(m map[string]any) map[string]any { return m["model"].(map[string]any) }
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"not json", []byte("{"), "invalid vocabulary"},
		{"unigram", edit(func(m map[string]any) { model(m)["type"] = "Unigram" }), `model type "Unigram"`},
		{"byte-level", edit(func(m map[string]any) {
			m["normalizer"] = nil
			m["pre_tokenizer"] = map[string]any{"type": "ByteLevel", "add_prefix_space": false}
		}), "byte-level BPE"},
		{"no space handling", edit(func(m map[string]any) { m["normalizer"] = nil }), "turns spaces into"},
		{"lowercasing", edit(func(m map[string]any) { m["normalizer"] = map[string]any{"type": "Lowercase"} }), `normalizer "Lowercase"`},
		{"id gap", edit(func(m map[string]any) { model(m)["vocab"].(map[string]any)["▁e"] = 5000 }), "without gaps"},
		{"merge result missing", edit(func(m map[string]any) { model(m)["merges"] = []string{"q z"} }), "not in the vocabulary"},
		{"bad merge", edit(func(m map[string]any) { model(m)["merges"] = []string{"abc"} }), "two pieces"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tokenizer.FromHFJSON(tt.file, nil)
			if err == nil {
				t.Fatal("loaded without error")
			}
			if !errors.Is(err, tokenizer.ErrVocab) && !errors.Is(err, tokenizer.ErrHFTokenizer) {
				t.Errorf("error %v wraps neither ErrVocab nor ErrHFTokenizer", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func FuzzLoadTokenizerJSON(f *testing.F) {
	v, _ := modelgen.SyntheticVocab(300)
	tj, cj, err := v.HFJSON()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(tj, cj)
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"<unk>":0,"<s>":1,"</s>":2,"▁":3,"a":4,"▁a":5},"merges":[["▁","a"]]},"pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":false}}`), []byte(`{"add_bos_token":false}`))
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"<unk>":0,"<s>":1,"</s>":2},"merges":[]},"added_tokens":[{"id":3,"content":"x","special":false}],"normalizer":{"type":"Replace","pattern":{"String":" "},"content":"▁"}}`), []byte(nil))
	f.Fuzz(func(t *testing.T, tokJSON, cfgJSON []byte) {
		tok, err := tokenizer.FromHFJSON(tokJSON, cfgJSON)
		if err != nil {
			return
		}
		// A tokenizer that loads encodes and decodes without panicking, and
		// every id it produces is in the vocabulary.
		for _, s := range []string{"Hello world", "  \n\t", "ünï 😀", "<s>[INST]"} {
			ids := tok.Encode(s, true)
			for _, id := range ids {
				if id < 0 || int(id) >= tok.Size() {
					t.Fatalf("%q encodes to id %d outside the %d-piece vocabulary", s, id, tok.Size())
				}
			}
			tok.Decode(ids)
		}
		tok.ChatFormat()
	})
}
