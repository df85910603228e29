package tokenizer_test

import (
	"strings"
	"testing"
)

func BenchmarkEncode(b *testing.B) {
	tok := mistral(b)
	for _, c := range []struct{ name, text string }{
		{"prose", strings.Repeat("The quick brown fox jumps over the lazy dog, again and again. ", 1000)},
		{"letters", strings.Repeat("a", 800_000)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.text)))
			for b.Loop() {
				tok.Encode(c.text, true)
			}
		})
	}
}
