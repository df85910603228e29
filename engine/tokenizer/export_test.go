package tokenizer

import "strings"

// EncodeWhole encodes text in one piece, without the chunking of Encode:
// the reference that chunking must match.
func (t *Tokenizer) EncodeWhole(text string) []int32 {
	if text == "" {
		return nil
	}
	if t.v.AddSpacePrefix {
		text = " " + text
	}
	var m merger
	return m.encode(t, strings.ReplaceAll(text, " ", spaceMark), nil)
}
