package tokenizer_test

import (
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// randomText mixes words, runs of spaces, newlines, letters without spaces,
// non-Latin scripts, emoji and invalid UTF-8: the places where chunk
// boundaries could go wrong.
func randomText(r *rand.Rand, n int) string {
	parts := []string{"the", " ", "  ", "\n", "Hello", "world", "aaaaaaaa", "министратив", "▁", "🦙", "\xe2", "\xff", "[INST]", "<s>", "x", "1234", "  \t", "é", "日本語"}
	var sb strings.Builder
	for sb.Len() < n {
		sb.WriteString(parts[r.IntN(len(parts))])
	}
	return sb.String()
}

func tokenizers(t testing.TB) []*tokenizer.Tokenizer {
	syn, err := modelgen.SyntheticVocab(512)
	if err != nil {
		t.Fatal(err)
	}
	small, err := tokenizer.New(syn)
	if err != nil {
		t.Fatal(err)
	}
	return []*tokenizer.Tokenizer{mistral(t), small}
}

func TestChunkedEncodingMatchesTheWholeText(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tok := range tokenizers(t) {
		for i := range 300 {
			text := randomText(r, 1+r.IntN(400))
			if got, want := tok.Encode(text, false), tok.EncodeWhole(text); !slices.Equal(got, want) {
				t.Fatalf("text %d %q:\nchunked %v\n  whole %v", i, text, got, want)
			}
		}
	}
}

func FuzzChunkedEncodingMatchesTheWholeText(f *testing.F) {
	for _, s := range []string{"", "hello world", " x  y ", "🦙\n\t", "\xff\xfe", "[INST] hi [/INST]", "aaaa bbbb", "\xe2 x"} {
		f.Add(s)
	}
	toks := tokenizers(f)
	f.Fuzz(func(t *testing.T, s string) {
		for _, tok := range toks {
			if got, want := tok.Encode(s, false), tok.EncodeWhole(s); !slices.Equal(got, want) {
				t.Fatalf("%q:\nchunked %v\n  whole %v", s, got, want)
			}
		}
	})
}

// allocated is the bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestTextThatCannotFitIsRefusedBeforeEncoding(t *testing.T) {
	tok := mistral(t)
	const limit = 32768
	// 16 MB of letters: no token covers more than the longest piece, so this
	// needs far more than limit tokens whatever it says.
	text := strings.Repeat("a", 16<<20)
	var ok bool
	if n := allocated(func() { _, ok = tok.EncodeLimit(text, true, limit) }); n > 1<<20 {
		t.Errorf("refusing 16 MB of text allocated %d bytes, want under 1 MiB", n)
	}
	if ok {
		t.Fatal("16 MB of text fit in 32768 tokens")
	}
	if min := tok.MinTokens(len(text)); min <= limit {
		t.Fatalf("MinTokens(%d) = %d, not above %d", len(text), min, limit)
	}
}

func TestEncodeLimitStopsSoonAfterTheLimit(t *testing.T) {
	tok := mistral(t)
	// Words fit MinTokens' bound many times over, so the encoder must stop by itself.
	const limit = 100
	text := strings.Repeat("hello world ", 200) // 2400 bytes, ≈ 400 tokens
	if tok.MinTokens(len(text)) > limit {
		t.Fatalf("the text is refused by MinTokens: pick a shorter one")
	}
	ids, ok := tok.EncodeLimit(text, true, limit)
	if ok {
		t.Fatalf("%d bytes of words fit in %d tokens", len(text), limit)
	}
	if len(ids) <= limit || len(ids) > limit+8 {
		t.Errorf("stopped after %d tokens, want just over %d", len(ids), limit)
	}
	// Under the limit, EncodeLimit is Encode.
	short := "hello world, how are you?"
	got, ok := tok.EncodeLimit(short, true, limit)
	if want := tok.Encode(short, true); !ok || !slices.Equal(got, want) {
		t.Errorf("EncodeLimit(%q) = %v, %v; want %v, true", short, got, ok, want)
	}
	// The limit counts BOS: a text of exactly limit tokens with BOS is over by one.
	exact := tok.Encode(short, true)
	if _, ok := tok.EncodeLimit(short, true, len(exact)-1); ok {
		t.Errorf("%d tokens fit in a limit of %d", len(exact), len(exact)-1)
	}
}

func TestChatLimitCountsTheWholeConversation(t *testing.T) {
	tok := mistral(t)
	msgs := []tokenizer.Message{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: "What is a mixture of experts?"},
		{Role: "assistant", Content: "A layer whose tokens each go to a few of many feed-forward networks."},
		{Role: "user", Content: "Why?"},
	}
	full, err := tok.MistralV1Chat(msgs)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tok.MistralV1ChatLimit(msgs, len(full)); err != nil || !slices.Equal(got, full) {
		t.Fatalf("at a limit of its own length: %v, %v; want %v", got, err, full)
	}
	for _, limit := range []int{len(full) - 1, 20, 1} {
		if _, err := tok.MistralV1ChatLimit(msgs, limit); !errors.Is(err, tokenizer.ErrTooLong) {
			t.Errorf("limit %d (the chat takes %d): err = %v, want ErrTooLong", limit, len(full), err)
		}
	}
	huge := []tokenizer.Message{{Role: "user", Content: strings.Repeat("a", 16<<20)}}
	var cerr error
	if n := allocated(func() { _, cerr = tok.MistralV1ChatLimit(huge, 32768) }); n > 1<<20 {
		t.Errorf("refusing a 16 MB message allocated %d bytes, want under 1 MiB", n)
	}
	if !errors.Is(cerr, tokenizer.ErrTooLong) {
		t.Errorf("a 16 MB message: err = %v, want ErrTooLong", cerr)
	}
}
