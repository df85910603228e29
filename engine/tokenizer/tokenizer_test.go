package tokenizer_test

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

func mistral(t testing.TB) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.New(modelgen.MistralVocab())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestMistralChatTemplateMatchesMistralCommonGoldenIDs(t *testing.T) {
	// Golden ids from mistral-common for Mixtral-8x7B-Instruct (v1 template).
	want := []int32{1, 733, 16289, 28793, 2188, 2928, 733, 28748, 16289, 28793, 13892, 2928, 2,
		733, 16289, 28793, 633, 2188, 2928, 733, 28748, 16289, 28793}
	got, err := mistral(t).MistralV1Chat([]tokenizer.Message{
		{Role: "user", Content: "user message"},
		{Role: "assistant", Content: "assistant message"},
		{Role: "user", Content: "new user message"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("chat ids\n got %v\nwant %v", got, want)
	}
}

func TestChatSystemPromptGoesBeforeTheFirstUserMessage(t *testing.T) {
	tok := mistral(t)
	got, err := tok.MistralV1Chat([]tokenizer.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}})
	if err != nil {
		t.Fatal(err)
	}
	want := append([]int32{1}, tok.Encode("[INST] Be brief.\n\nHi [/INST]", false)...)
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestChatRejectsMalformedConversations(t *testing.T) {
	tok := mistral(t)
	for name, msgs := range map[string][]tokenizer.Message{
		"empty":            nil,
		"only system":      {{Role: "system", Content: "x"}},
		"assistant first":  {{Role: "assistant", Content: "x"}},
		"two users":        {{Role: "user", Content: "a"}, {Role: "user", Content: "b"}},
		"ends with answer": {{Role: "user", Content: "a"}, {Role: "assistant", Content: "b"}},
		"late system":      {{Role: "user", Content: "a"}, {Role: "system", Content: "b"}},
		"unknown role":     {{Role: "tool", Content: "a"}},
	} {
		if _, err := tok.MistralV1Chat(msgs); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestEncodeBasics(t *testing.T) {
	tok := mistral(t)
	tests := []struct {
		text       string
		addSpecial bool
		want       []int32
	}{
		{"", true, []int32{1}},
		{"", false, nil},
		{"Hello", true, []int32{1, 22557}},
		{"\n", false, []int32{28705, 13}}, // "▁" then the byte token for newline
	}
	for _, tt := range tests {
		if got := tok.Encode(tt.text, tt.addSpecial); !slices.Equal(got, tt.want) {
			t.Errorf("Encode(%q, %v) = %v, want %v", tt.text, tt.addSpecial, got, tt.want)
		}
	}
}

func TestByteFallbackAndDecodeRoundTrip(t *testing.T) {
	tok := mistral(t)
	for _, s := range []string{
		"Hello, world!", "  leading spaces", "tabs\tand\nnewlines", "emoji 🦙🚀 mix", "日本語のテキスト",
		"控制字符\x01\x02", "ünïcödé", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "a  b   c", "func main() { fmt.Println(42) }",
	} {
		ids := tok.Encode(s, true)
		if got := tok.Decode(ids); got != s {
			t.Errorf("Decode(Encode(%q)) = %q (ids %v)", s, got, ids)
		}
	}
	// U+1F999 is not a piece: it must come out as its four byte tokens.
	ids := tok.Encode("🦙", false)
	if len(ids) != 5 || ids[0] != 28705 || tok.Piece(ids[1]) != "<0xF0>" {
		t.Fatalf("llama emoji ids %v, want ▁ then 4 byte tokens", ids)
	}
}

func TestStreamingDecoderNeverSplitsACharacter(t *testing.T) {
	tok := mistral(t)
	text := "a🦙b日c"
	ids := tok.Encode(text, false)
	d := tok.NewDecoder(true)
	var sb strings.Builder
	for _, id := range ids {
		part := d.Next(id)
		if !utf8.ValidString(part) {
			t.Fatalf("decoder emitted invalid UTF-8 %q", part)
		}
		sb.WriteString(part)
	}
	sb.WriteString(d.Flush())
	if sb.String() != text {
		t.Fatalf("streamed %q, want %q", sb.String(), text)
	}
}

func TestNewRejectsBrokenVocabularies(t *testing.T) {
	if _, err := tokenizer.New(tokenizer.Vocab{}); err == nil {
		t.Error("empty vocabulary accepted")
	}
	if _, err := tokenizer.New(tokenizer.Vocab{Pieces: []string{"a"}, BOS: 5}); err == nil {
		t.Error("out-of-range BOS accepted")
	}
	if _, err := tokenizer.New(tokenizer.Vocab{Pieces: []string{"a", "b"}, Types: []tokenizer.TokenType{tokenizer.Byte, 1}}); err == nil {
		t.Error("malformed byte token accepted")
	}
}

func FuzzEncodeDecodeRoundTrip(f *testing.F) {
	for _, s := range []string{"", "hello", " x  y ", "🦙\n\t", "\xff\xfe", "[INST] hi [/INST]"} {
		f.Add(s)
	}
	tok := mistral(f)
	syn, err := modelgen.SyntheticVocab(512)
	if err != nil {
		f.Fatal(err)
	}
	small, err := tokenizer.New(syn)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tk := range []*tokenizer.Tokenizer{tok, small} {
			ids := tk.Encode(s, true)
			for _, id := range ids {
				if id < 0 || int(id) >= tk.Size() {
					t.Fatalf("id %d out of range", id)
				}
			}
			got := tk.Decode(ids)
			if utf8.ValidString(s) && got != s {
				t.Fatalf("round trip of %q gave %q", s, got)
			}
		}
	})
}
