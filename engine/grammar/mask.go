package grammar

import (
	"math"
	"sort"
	"unicode/utf8"
)

// Vocab is a model's vocabulary as the grammar sees it: each token's bytes, indexed for
// mask computation. Build it once per model.
type Vocab struct {
	tokens [][]byte
	eos    int32
	// trie holds every token with bytes, for the walk of a state's continuations.
	trie []trieNode
	// plain are the tokens that can only be string content (no quote, backslash or
	// control byte; whole UTF-8 characters), by their character count: plainUpTo[k] is
	// the set of those of at most k characters (the last entry: all of them).
	plainUpTo [][]uint64
	// others are the tokens with bytes that are not plain.
	others []int32
}

type trieNode struct {
	next   []trieEdge
	tokens []int32 // the tokens whose bytes end here
}

type trieEdge struct {
	b    byte
	node int32
}

// NewVocab indexes tokens (each token's bytes; empty for control tokens, which are never
// allowed) with eos as the end-of-sequence token.
func NewVocab(tokens [][]byte, eos int32) *Vocab {
	v := &Vocab{tokens: tokens, eos: eos, trie: []trieNode{{}}}
	words := (len(tokens) + 63) / 64
	maxRunes := 0
	runes := make([]int, len(tokens))
	for id, t := range tokens {
		if len(t) == 0 {
			continue
		}
		v.insert(t, int32(id))
		if n, ok := plainRunes(t); ok {
			runes[id] = n
			maxRunes = max(maxRunes, n)
		} else {
			runes[id] = -1
			v.others = append(v.others, int32(id))
		}
	}
	v.plainUpTo = make([][]uint64, maxRunes+1)
	for k := range v.plainUpTo {
		v.plainUpTo[k] = make([]uint64, words)
	}
	for id, t := range tokens {
		if len(t) > 0 && runes[id] > 0 {
			for k := runes[id]; k <= maxRunes; k++ {
				v.plainUpTo[k][id/64] |= 1 << (id % 64)
			}
		}
	}
	return v
}

func (v *Vocab) insert(t []byte, id int32) {
	at := int32(0)
	for _, b := range t {
		edges := v.trie[at].next
		i := sort.Search(len(edges), func(i int) bool { return edges[i].b >= b })
		if i < len(edges) && edges[i].b == b {
			at = edges[i].node
			continue
		}
		v.trie = append(v.trie, trieNode{})
		child := int32(len(v.trie) - 1)
		edges = append(edges, trieEdge{})
		copy(edges[i+1:], edges[i:])
		edges[i] = trieEdge{b, child}
		v.trie[at].next = edges
		at = child
	}
	v.trie[at].tokens = append(v.trie[at].tokens, id)
}

// plainRunes is the character count of t if t can only be string content.
func plainRunes(t []byte) (int, bool) {
	if !utf8.Valid(t) {
		return 0, false
	}
	for _, b := range t {
		if b == '"' || b == '\\' || b < 0x20 {
			return 0, false
		}
	}
	return utf8.RuneCount(t), true
}

// Size is the number of tokens.
func (v *Vocab) Size() int { return len(v.tokens) }

// Constraint holds one output to a grammar, token by token.
type Constraint struct {
	v *Vocab
	m Matcher
	// strip drops the first token's leading space, as the decoder does at the start of a
	// text (SentencePiece's dummy prefix), so that the grammar sees the text the client
	// will.
	strip bool
	mask  []uint64
}

// Constrain starts a constraint over v.
func (g *Grammar) Constrain(v *Vocab, stripLeadingSpace bool) *Constraint {
	return &Constraint{v: v, m: g.Start(), strip: stripLeadingSpace, mask: make([]uint64, (len(v.tokens)+63)/64)}
}

// Mask sets the logits of the tokens that may not come next to -Inf. It reports false
// when none may: the output is complete (and the end of sequence is taken as given).
func (c *Constraint) Mask(logits []float32) bool {
	c.Allowed(c.mask)
	some := false
	for w, bitsW := range c.mask {
		if bitsW != 0 {
			some = true
		}
		for b := 0; b < 64; b++ {
			id := w*64 + b
			if id >= len(logits) {
				break
			}
			if bitsW&(1<<b) == 0 {
				logits[id] = float32(math.Inf(-1))
			}
		}
	}
	return some
}

// Allowed sets mask to the tokens that may come next.
func (c *Constraint) Allowed(mask []uint64) {
	clear(mask)
	v, m := c.v, c.m
	if m.Accepting() && v.eos >= 0 && int(v.eos) < len(v.tokens) {
		mask[v.eos/64] |= 1 << (v.eos % 64)
	}
	if m.Done() {
		return
	}
	if c.strip {
		// The first token: those with a leading space are read without it; a lone space
		// is nothing at all.
		root := &v.trie[0]
		for _, e := range root.next {
			if e.b == ' ' {
				sp := &v.trie[e.node]
				for _, id := range sp.tokens {
					mask[id/64] |= 1 << (id % 64)
				}
				for _, e2 := range sp.next {
					if next, ok := m.Step(e2.b); ok {
						v.walk(e2.node, next, mask)
					}
				}
				continue
			}
			if next, ok := m.Step(e.b); ok {
				v.walk(e.node, next, mask)
			}
		}
		return
	}
	if f := m.top; f.phase == phStrIn && f.j == 0 {
		// Inside a string, every plain token that fits is string content; only the others
		// need the walk.
		room := len(v.plainUpTo) - 1
		if f.n.maxLen >= 0 {
			room = min(room, f.n.maxLen-f.i)
		}
		if room > 0 {
			for w, x := range v.plainUpTo[room] {
				mask[w] |= x
			}
		}
		for _, id := range v.others {
			if _, ok := m.Feed(v.tokens[id]); ok {
				mask[id/64] |= 1 << (id % 64)
			}
		}
		return
	}
	v.walk(0, m, mask)
}

// walk adds the tokens of the trie below node that m accepts (m has consumed the bytes
// to node).
func (v *Vocab) walk(node int32, m Matcher, mask []uint64) {
	n := &v.trie[node]
	for _, id := range n.tokens {
		mask[id/64] |= 1 << (id % 64)
	}
	for _, e := range n.next {
		if next, ok := m.Step(e.b); ok {
			v.walk(e.node, next, mask)
		}
	}
}

// Accept advances past tok, which Mask allowed.
func (c *Constraint) Accept(tok int32) {
	if tok == c.v.eos || tok < 0 || int(tok) >= len(c.v.tokens) {
		c.m = Matcher{done: true}
		c.strip = false
		return
	}
	t := c.v.tokens[tok]
	if c.strip && len(t) > 0 && t[0] == ' ' {
		t = t[1:]
	}
	c.strip = c.strip && len(t) == 0 && len(c.v.tokens[tok]) == 0
	next, ok := c.m.Feed(t)
	if !ok {
		// A token Mask did not allow (all were masked and the sampler took one anyway):
		// nothing more may follow.
		next = Matcher{done: true}
	}
	c.m = next
}

// Complete reports whether the output so far is a whole sentence of the grammar.
func (c *Constraint) Complete() bool { return c.m.Accepting() }
