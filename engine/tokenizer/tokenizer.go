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
	"errors"
	"fmt"
	"math"
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
	// joins holds each pair of adjacent characters found inside a piece.
	// No merge can join two characters whose pair is not in it, so the
	// text is encoded in chunks split between such characters (the result
	// is the same), which bounds the encoder's memory by a chunk, not the
	// whole text.
	joins map[uint64]struct{}
	// maxPieceBytes is the most input bytes one token covers.
	maxPieceBytes int
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
	t := &Tokenizer{v: v, index: make(map[string]int32, n), byteOf: map[int32]byte{}, joins: map[uint64]struct{}{}, maxPieceBytes: 1}
	for i, p := range v.Pieces {
		if _, dup := t.index[p]; !dup { // the first of duplicate pieces wins, as in llama.cpp
			t.index[p] = int32(i)
		}
		if v.Types[i] != Byte {
			t.maxPieceBytes = max(t.maxPieceBytes, len(strings.ReplaceAll(p, spaceMark, " ")))
			prev := uint64(0)
			for off := 0; off < len(p); {
				n := charLen(p, off)
				c := pack(p[off : off+n])
				if off > 0 {
					t.joins[prev<<32|c] = struct{}{}
				}
				prev = c
				off += n
			}
		} else {
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
	out, _ := t.EncodeLimit(text, addSpecial, math.MaxInt)
	return out
}

// EncodeLimit is Encode that gives up once the text has taken more than
// limit tokens: it returns ok false, and ids are then not the whole
// encoding. Text that cannot fit (see MinTokens) is refused before any work.
func (t *Tokenizer) EncodeLimit(text string, addSpecial bool, limit int) (ids []int32, ok bool) {
	if t.MinTokens(len(text)) > limit {
		return nil, false
	}
	var out []int32
	if addSpecial && t.v.AddBOS {
		out = append(out, t.v.BOS)
	}
	if text != "" {
		if t.v.AddSpacePrefix {
			text = " " + text
		}
		if out = t.encodeChunks(strings.ReplaceAll(text, " ", spaceMark), out, limit); len(out) > limit {
			return out, false
		}
	}
	if addSpecial && t.v.AddEOS {
		out = append(out, t.v.EOS)
	}
	return out, len(out) <= limit
}

// MinTokens is a lower bound on the tokens of any text of n bytes: no token
// covers more bytes than the vocabulary's longest piece.
func (t *Tokenizer) MinTokens(n int) int { return (n + t.maxPieceBytes - 1) / t.maxPieceBytes }

// MaxBytes is the most bytes a text of n tokens can have.
func (t *Tokenizer) MaxBytes(n int) int { return n * t.maxPieceBytes }

// encodeChunks encodes text (spaces already "▁") in chunks split where no
// merge can cross, stopping once out holds more than limit tokens.
func (t *Tokenizer) encodeChunks(text string, out []int32, limit int) []int32 {
	var m merger
	start, prev := 0, uint64(0)
	for off, n := 0, 0; off < len(text); off += n {
		n = charLen(text, off)
		c := pack(text[off : off+n])
		if off > start {
			if _, joined := t.joins[prev<<32|c]; !joined {
				if out = m.encode(t, text[start:off], out); len(out) > limit {
					return out
				}
				start = off
			}
		}
		prev = c
	}
	return m.encode(t, text[start:], out)
}

// charLen is the length of the character at text[off:] as the encoder
// splits text (see utf8Len).
func charLen(text string, off int) int { return min(utf8Len(text[off]), len(text)-off) }

// pack packs a character (at most 4 bytes) into a number.
func pack(ch string) uint64 {
	c := uint64(0)
	for _, b := range []byte(ch) {
		c = c<<8 | uint64(b)
	}
	return c
}

// symbol and bigram use int32 to halve the encoder's memory per byte of
// text; a chunk is far shorter than 2^31 bytes (see EncodeLimit).
type symbol struct {
	start, n   int32 // byte range in the text
	prev, next int32
}

type bigram struct {
	left, right int32
	score       float32
	size        int32
}

// merger runs the BPE merges; its buffers are reused from chunk to chunk.
type merger struct {
	syms []symbol
	q    []bigram // a max-heap: the highest score first, then the leftmost
}

func (b bigram) before(c bigram) bool {
	if b.score != c.score {
		return b.score > c.score
	}
	return b.left < c.left
}

func (m *merger) push(b bigram) {
	m.q = append(m.q, b)
	for i := len(m.q) - 1; i > 0; {
		parent := (i - 1) / 2
		if !m.q[i].before(m.q[parent]) {
			break
		}
		m.q[i], m.q[parent] = m.q[parent], m.q[i]
		i = parent
	}
}

func (m *merger) pop() bigram {
	q := m.q
	top := q[0]
	last := len(q) - 1
	q[0] = q[last]
	q = q[:last]
	for i := 0; ; {
		best, l, r := i, 2*i+1, 2*i+2
		if l < len(q) && q[l].before(q[best]) {
			best = l
		}
		if r < len(q) && q[r].before(q[best]) {
			best = r
		}
		if best == i {
			break
		}
		q[i], q[best] = q[best], q[i]
		i = best
	}
	m.q = q
	return top
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

// encode runs the BPE merges over text (spaces already "▁") and appends
// the pieces' ids to out.
func (m *merger) encode(t *Tokenizer, text string, out []int32) []int32 {
	if text == "" {
		return out
	}
	if cap(m.syms) < len(text) {
		m.syms = make([]symbol, 0, len(text))
		m.q = make([]bigram, 0, len(text))
	}
	syms := m.syms[:0]
	for off := 0; off < len(text); {
		n := charLen(text, off)
		syms = append(syms, symbol{start: int32(off), n: int32(n), prev: int32(len(syms) - 1), next: int32(len(syms) + 1)})
		off += n
	}
	syms[len(syms)-1].next = -1
	m.syms = syms
	m.q = m.q[:0]

	tryAdd := func(left, right int32) {
		if left < 0 || right < 0 {
			return
		}
		s := text[syms[left].start : syms[right].start+syms[right].n]
		id, ok := t.index[s]
		if !ok {
			return
		}
		m.push(bigram{left: left, right: right, score: t.v.Scores[id], size: int32(len(s))})
	}
	for i := int32(1); i < int32(len(syms)); i++ {
		tryAdd(i-1, i)
	}
	for len(m.q) > 0 {
		b := m.pop()
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

	// A merged symbol is always a piece; only single characters outside the
	// vocabulary fall back to bytes.
	for i := int32(0); i != -1; i = syms[i].next {
		s := text[syms[i].start : syms[i].start+syms[i].n]
		if id, ok := t.index[s]; ok {
			out = append(out, id)
			continue
		}
		for j := 0; j < len(s); j++ {
			out = append(out, t.byteTok[s[j]])
		}
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
