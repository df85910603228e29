// Package tokenizer implements the SentencePiece-BPE tokenizer of the
// llama / Mistral family, as llama.cpp runs it from GGUF metadata
// (tokenizer.ggml.model = "llama"), and Mistral's v1 chat template.
//
// Encoding follows SentencePiece's BPE with scores: the text gets a dummy
// prefix space, spaces become "▁" (U+2581), the text is split into UTF-8
// characters, and the adjacent pair whose concatenation is a vocabulary
// piece with the highest score is merged repeatedly (ties go to the
// leftmost pair). Characters that end up outside the vocabulary fall back to
// byte tokens <0xXX>.
package tokenizer

import (
	"container/heap"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// TokenType is the SentencePiece piece type stored in tokenizer.ggml.token_type.
type TokenType int32

// Piece types.
const (
	Normal      TokenType = 1
	Unknown     TokenType = 2
	Control     TokenType = 3
	UserDefined TokenType = 4
	Unused      TokenType = 5
	Byte        TokenType = 6
)

// Vocab is the data a tokenizer is built from.
type Vocab struct {
	Pieces []string
	Scores []float32   // nil means all zero
	Types  []TokenType // nil means all Normal
	BOS    int32
	EOS    int32
	UNK    int32
	// AddBOS puts BOS before encoded text when special tokens are requested;
	// AddEOS appends EOS likewise.
	AddBOS, AddEOS bool
	// AddSpacePrefix prepends the dummy space ("▁") to text.
	AddSpacePrefix bool
	// ChatTemplate is the model's Jinja chat template (tokenizer_config.json
	// chat_template or GGUF tokenizer.chat_template), if it has one. The
	// engine does not run Jinja: see DetectChatFormat.
	ChatTemplate string
}

// ErrVocab reports an unusable vocabulary.
var ErrVocab = errors.New("tokenizer: invalid vocabulary")

// Tokenizer encodes text to token ids and decodes ids to text. It is safe
// for concurrent use.
type Tokenizer struct {
	v       Vocab
	index   map[string]int32
	byteTok [256]int32
	byteOf  map[int32]byte
}

const spaceMark = "\u2581" // ▁

// New validates v and builds a tokenizer.
func New(v Vocab) (*Tokenizer, error) {
	n := len(v.Pieces)
	if n == 0 {
		return nil, fmt.Errorf("%w: no pieces", ErrVocab)
	}
	if v.Scores == nil {
		v.Scores = make([]float32, n)
	}
	if v.Types == nil {
		v.Types = make([]TokenType, n)
		for i := range v.Types {
			v.Types[i] = Normal
		}
	}
	if len(v.Scores) != n || len(v.Types) != n {
		return nil, fmt.Errorf("%w: %d pieces but %d scores and %d types", ErrVocab, n, len(v.Scores), len(v.Types))
	}
	for _, id := range []struct {
		name string
		id   int32
	}{{"BOS", v.BOS}, {"EOS", v.EOS}, {"UNK", v.UNK}} {
		if id.id < 0 || int(id.id) >= n {
			return nil, fmt.Errorf("%w: %s id %d outside the %d-piece vocabulary", ErrVocab, id.name, id.id, n)
		}
	}
	t := &Tokenizer{v: v, index: make(map[string]int32, n), byteOf: map[int32]byte{}}
	for i, p := range v.Pieces {
		if _, dup := t.index[p]; !dup { // the first of duplicate pieces wins, as in llama.cpp
			t.index[p] = int32(i)
		}
		if v.Types[i] == Byte {
			b, ok := parseByteToken(p)
			if !ok {
				return nil, fmt.Errorf("%w: byte token %d is %q, want <0xXX>", ErrVocab, i, p)
			}
			t.byteOf[int32(i)] = b
		}
	}
	for b := 0; b < 256; b++ {
		id, ok := t.index[fmt.Sprintf("<0x%02X>", b)]
		if !ok {
			id, ok = t.index[string(rune(b))]
		}
		if !ok {
			id = v.UNK
		}
		t.byteTok[b] = id
	}
	return t, nil
}

func parseByteToken(p string) (byte, bool) {
	if len(p) != 6 || !strings.HasPrefix(p, "<0x") || p[5] != '>' {
		return 0, false
	}
	b, err := strconv.ParseUint(p[3:5], 16, 8)
	return byte(b), err == nil
}

// Size is the number of pieces.
func (t *Tokenizer) Size() int { return len(t.v.Pieces) }

// BOS returns the beginning-of-sequence id.
func (t *Tokenizer) BOS() int32 { return t.v.BOS }

// EOS returns the end-of-sequence id.
func (t *Tokenizer) EOS() int32 { return t.v.EOS }

// Piece returns the vocabulary piece of id.
func (t *Tokenizer) Piece(id int32) string {
	if id < 0 || int(id) >= len(t.v.Pieces) {
		return ""
	}
	return t.v.Pieces[id]
}

// Vocab returns the vocabulary the tokenizer was built from.
func (t *Tokenizer) Vocab() Vocab { return t.v }

// Encode tokenizes text. With addSpecial, BOS (and EOS) are added as the
// vocabulary asks. Empty text encodes to nothing but those.
func (t *Tokenizer) Encode(text string, addSpecial bool) []int32 {
	var out []int32
	if addSpecial && t.v.AddBOS {
		out = append(out, t.v.BOS)
	}
	if text != "" {
		if t.v.AddSpacePrefix {
			text = " " + text
		}
		out = t.encodePieces(strings.ReplaceAll(text, " ", spaceMark), out)
	}
	if addSpecial && t.v.AddEOS {
		out = append(out, t.v.EOS)
	}
	return out
}

type symbol struct {
	start, n   int // byte range in the text
	prev, next int
}

type bigram struct {
	left, right int
	score       float32
	size        int
}

type bigramQueue []bigram

func (q bigramQueue) Len() int { return len(q) }
func (q bigramQueue) Less(i, j int) bool {
	if q[i].score != q[j].score {
		return q[i].score > q[j].score
	}
	return q[i].left < q[j].left
}
func (q bigramQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *bigramQueue) Push(x any)   { *q = append(*q, x.(bigram)) }
func (q *bigramQueue) Pop() any {
	old := *q
	b := old[len(old)-1]
	*q = old[:len(old)-1]
	return b
}

// utf8Len is the length of the UTF-8 sequence a lead byte announces, with
// stray continuation bytes counted as single characters (as llama.cpp does).
func utf8Len(b byte) int {
	switch {
	case b < 0x80, b < 0xc0:
		return 1
	case b < 0xe0:
		return 2
	case b < 0xf0:
		return 3
	default:
		return 4
	}
}

func (t *Tokenizer) encodePieces(text string, out []int32) []int32 {
	syms := make([]symbol, 0, len(text))
	for off := 0; off < len(text); {
		n := min(utf8Len(text[off]), len(text)-off)
		syms = append(syms, symbol{start: off, n: n, prev: len(syms) - 1, next: len(syms) + 1})
		off += n
	}
	syms[len(syms)-1].next = -1

	var q bigramQueue
	revMerge := map[string][2]int{}
	tryAdd := func(left, right int) {
		if left < 0 || right < 0 {
			return
		}
		s := text[syms[left].start : syms[right].start+syms[right].n]
		id, ok := t.index[s]
		if !ok {
			return
		}
		heap.Push(&q, bigram{left: left, right: right, score: t.v.Scores[id], size: len(s)})
		revMerge[s] = [2]int{left, right}
	}
	for i := 1; i < len(syms); i++ {
		tryAdd(i-1, i)
	}
	for q.Len() > 0 {
		b := heap.Pop(&q).(bigram)
		l, r := &syms[b.left], &syms[b.right]
		if l.n == 0 || r.n == 0 || l.n+r.n != b.size {
			continue // stale: one side was merged since
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = b.left
		}
		tryAdd(l.prev, b.left)
		tryAdd(b.left, l.next)
	}

	var resegment func(i int)
	resegment = func(i int) {
		s := text[syms[i].start : syms[i].start+syms[i].n]
		if id, ok := t.index[s]; ok {
			out = append(out, id)
			return
		}
		if p, ok := revMerge[s]; ok {
			resegment(p[0])
			resegment(p[1])
			return
		}
		for j := 0; j < len(s); j++ {
			out = append(out, t.byteTok[s[j]])
		}
	}
	for i := 0; i != -1; i = syms[i].next {
		resegment(i)
	}
	return out
}

// Decode turns ids into text: "▁" becomes a space, byte tokens become their
// bytes, control and unknown tokens are dropped, and the dummy prefix space
// of the first piece is removed. Invalid UTF-8 is replaced by U+FFFD.
func (t *Tokenizer) Decode(ids []int32) string {
	d := t.NewDecoder(true)
	var sb strings.Builder
	for _, id := range ids {
		sb.WriteString(d.Next(id))
	}
	sb.WriteString(d.Flush())
	return sb.String()
}

// Decoder turns a stream of ids into text, holding back byte tokens until
// they form whole UTF-8 characters, so streamed text never splits a
// character.
type Decoder struct {
	t           *Tokenizer
	pending     []byte
	stripPrefix bool
}

// NewDecoder returns a stream decoder. With atStart, the dummy prefix space
// of the first piece is removed (the decoded text is the start of a
// sequence, not a continuation).
func (t *Tokenizer) NewDecoder(atStart bool) *Decoder {
	return &Decoder{t: t, stripPrefix: atStart && t.v.AddSpacePrefix}
}

// Next returns the text that id completes; it may be empty.
func (d *Decoder) Next(id int32) string {
	if id < 0 || int(id) >= len(d.t.v.Pieces) {
		return ""
	}
	switch d.t.v.Types[id] {
	case Control, Unknown, Unused:
		return ""
	case Byte:
		d.pending = append(d.pending, d.t.byteOf[id])
	default:
		piece := strings.ReplaceAll(d.t.v.Pieces[id], spaceMark, " ")
		d.pending = append(d.pending, piece...)
	}
	if d.stripPrefix && len(d.pending) > 0 {
		if d.pending[0] == ' ' {
			d.pending = d.pending[1:]
		}
		d.stripPrefix = false
	}
	return d.take(false)
}

// Flush returns whatever is held back, with incomplete characters replaced
// by U+FFFD.
func (d *Decoder) Flush() string { return d.take(true) }

func (d *Decoder) take(all bool) string {
	// Emit everything up to the last position where a complete character ends.
	end := len(d.pending)
	if !all {
		end = completePrefix(d.pending)
	}
	if end == 0 {
		return ""
	}
	s := strings.ToValidUTF8(string(d.pending[:end]), "\uFFFD")
	d.pending = append(d.pending[:0], d.pending[end:]...)
	return s
}

// completePrefix returns the length of the longest prefix of b that does
// not end inside a UTF-8 sequence that could still be completed.
func completePrefix(b []byte) int {
	// Look back at most 3 bytes for a lead byte whose sequence is unfinished.
	for back := 1; back <= 3 && back <= len(b); back++ {
		c := b[len(b)-back]
		if c < 0x80 {
			return len(b)
		}
		if c >= 0xc0 { // lead byte
			if utf8Len(c) > back {
				if utf8.FullRune(b[len(b)-back:]) {
					return len(b)
				}
				return len(b) - back
			}
			return len(b)
		}
	}
	return len(b)
}
