package parity

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tensor"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// tokenizerStrings exercise every path of the SentencePiece encoder: merges,
// the dummy prefix, whitespace runs, newlines and tabs (byte tokens), code,
// digits, Unicode that is in the vocabulary and Unicode that falls back to
// bytes.
var tokenizerStrings = []string{
	"Hello world",
	"Hello, world!",
	" leading space",
	"  two leading spaces",
	"   three",
	"trailing space ",
	"trailing spaces   ",
	"multiple   inner    spaces",
	"\n",
	"\n\n",
	"line one\nline two",
	"line one\n\nline three\n",
	"\ttab",
	"mixed \t\n whitespace",
	"a",
	"I",
	"The quick brown fox jumps over the lazy dog.",
	"What is the capital of France?",
	"[INST] What is your name? [/INST]",
	"<s> is not special here </s>",
	"1234567890",
	"3.14159 2.71828",
	"Version 1.2.3-beta+exp.sha.5114f85",
	"phone: +1 (555) 010-9999",
	"1,000,000 dollars",
	"def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n",
	"func main() {\n\tfmt.Println(\"hi\")\n}",
	"for (int i = 0; i < n; ++i) { sum += a[i]; }",
	"SELECT * FROM users WHERE id = 42;",
	"<html><body><p>Hi</p></body></html>",
	"{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
	"https://example.com/path?query=1&other=two#frag",
	"user@example.com",
	"snake_case_identifier and camelCaseIdentifier",
	"ALL CAPS SENTENCE",
	"naïve café résumé",
	"Größe und Übermaß",
	"¿Dónde está la biblioteca?",
	"Привет, мир!",
	"Γειά σου Κόσμε",
	"שלום עולם",
	"مرحبا بالعالم",
	"नमस्ते दुनिया",
	"こんにちは世界",
	"你好，世界！",
	"안녕하세요 세계",
	"ไทย ภาษา",
	"emoji 😀",
	"🦙 llama",
	"🚀🚀🚀",
	"👨‍👩‍👧‍👦 family",
	"flags 🇫🇷🇩🇪",
	"✓ done ✗ failed",
	"math: ∑ ∫ √ ∞ ≠ ≤",
	"arrows → ← ↑ ↓",
	"€100 £50 ¥1000 ₹20",
	"𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝓉𝑒𝓍𝓉",
	"control\x01chars\x02",
	"zero\u200bwidth\u200bspace",
	"combining e\u0301 accent",
	"ＦＵＬＬＷＩＤＴＨ",
	"....!!!???",
	"---===___",
	"a-b_c.d,e;f:g",
	"The year 2024 had 366 days.",
	"can't won't shouldn't",
	"\"quoted\" and 'single'",
	"end.",
}

func TestTokenizerMatchesLlamaCpp(t *testing.T) {
	if len(tokenizerStrings) < 60 {
		t.Fatalf("only %d strings; the issue asks for at least 60", len(tokenizerStrings))
	}
	path := filepath.Join(t.TempDir(), "vocab.gguf")
	cfg := modelgen.Config{Name: "vocab", Layers: 1, Dim: 64, Heads: 2, KVHeads: 2, FFN: 64, Experts: 2, TopK: 1,
		Context: 64, Type: tensor.F32, Vocab: "mistral"}
	if err := modelgen.Write(path, cfg); err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.New(modelgen.MistralVocab())
	if err != nil {
		t.Fatal(err)
	}
	want := referenceTokenize(t, path, tokenizerStrings)
	byteFallbacks := 0
	for i, s := range tokenizerStrings {
		got := tok.Encode(s, false)
		if !slices.Equal(got, want[i]) {
			t.Errorf("%q:\n ours     %v\n llama.cpp %v", s, got, want[i])
		}
		for _, id := range got {
			if id >= 3 && id <= 258 {
				byteFallbacks++
				break
			}
		}
	}
	if byteFallbacks < 5 {
		t.Errorf("only %d strings exercised byte fallback", byteFallbacks)
	}
	t.Logf("%d strings identical to llama.cpp's tokenizer (%d with byte fallback)", len(tokenizerStrings), byteFallbacks)
}
