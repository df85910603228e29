package model

import (
	"encoding/binary"
	"hash/maphash"
	"slices"
)

// Automatic prefix caching, as vLLM's: a full block whose keys and values
// are computed is indexed by its content, the hash of its tokens chained
// to the hash of the block before it, so one hash names a whole prefix. A
// new sequence takes the blocks of the longest indexed prefix of its
// tokens instead of computing them. A block is shared by reference count
// and never written once full (a sequence writes only positions past the
// ones it has computed), so no copy-on-write is needed. A block no sequence
// uses stays indexed, and the least recently used of those is evicted when
// a block is needed.
//
// The index compares a candidate block's tokens and its predecessor, not
// only its hash, so a hash collision can never hand a sequence another
// prefix's keys and values.

// prefixIndex is the cache's table of indexed blocks. Its methods are safe
// on a nil index (prefix caching off): nothing is indexed then.
type prefixIndex struct {
	seed maphash.Seed
	bs   int
	refs []int32  // sequences using each block
	hash []uint64 // each indexed block's chained hash
	has  []bool   // whether the block is indexed
	prev []int32  // the block before it in its prefix, -1 for a first block
	// gen counts each block's evictions; prevGen is prev's gen when the
	// block was indexed, so a block indexed after a prev that has since been
	// evicted and reused for another prefix is never found through it.
	gen, prevGen []uint32
	toks         []int32 // each indexed block's tokens, bs per block
	table        map[uint64]int32
	// The unused indexed blocks, least recently used first: a doubly
	// linked list through lruPrev and lruNext with sentinel numBlocks.
	lruPrev, lruNext []int32
	unused           int
	buf              []byte
	// weakHash, in tests, replaces the hash with one that collides often.
	weakHash func(h uint64, block []int32) uint64
}

// EnablePrefixCaching turns on automatic prefix caching; it must be called
// before any block is reserved.
func (c *Cache) EnablePrefixCaching() {
	n := c.numBlocks
	p := &prefixIndex{
		seed: maphash.MakeSeed(), bs: c.BlockSize,
		refs: make([]int32, n), hash: make([]uint64, n), has: make([]bool, n), prev: make([]int32, n),
		gen: make([]uint32, n), prevGen: make([]uint32, n),
		toks: make([]int32, n*c.BlockSize), table: map[uint64]int32{},
		lruPrev: make([]int32, n+1), lruNext: make([]int32, n+1),
		buf: make([]byte, 8+4*c.BlockSize),
	}
	p.lruPrev[n], p.lruNext[n] = int32(n), int32(n)
	c.prefix = p
}

// PrefixCaching reports whether prefix caching is on.
func (c *Cache) PrefixCaching() bool { return c.prefix != nil }

// Match gives the empty s the indexed blocks of the longest prefix of
// tokens it can, leaving at least the last token to compute (its logits
// are needed), and returns the number of positions they hold, whose keys
// and values s need not compute.
func (c *Cache) Match(s *Seq, tokens []int32) int {
	p := c.prefix
	if p == nil || len(s.Blocks) > 0 {
		return 0
	}
	for i := 0; (i+1)*p.bs < len(tokens); i++ {
		block := tokens[i*p.bs : (i+1)*p.bs]
		h := p.chain(s.last, block)
		b, ok := p.find(h, s.tail, block)
		if !ok {
			break
		}
		p.use(b)
		s.Blocks = append(s.Blocks, b)
		s.last, s.tail = h, b+1
	}
	s.indexed = len(s.Blocks)
	return len(s.Blocks) * p.bs
}

// Commit indexes s's full blocks among its first computed positions
// (tokens holds at least those). A block whose prefix another block
// already holds is left out of the index (and freed with s); the chain
// goes on from that other block.
func (c *Cache) Commit(s *Seq, tokens []int32, computed int) {
	p := c.prefix
	if p == nil {
		return
	}
	for full := min(computed, len(tokens)/p.bs*p.bs, len(s.Blocks)*p.bs) / p.bs; s.indexed < full && s.tail >= 0; s.indexed++ {
		i := s.indexed
		block := tokens[i*p.bs : (i+1)*p.bs]
		h := p.chain(s.last, block)
		s.last = h
		if b, ok := p.find(h, s.tail, block); ok {
			s.tail = b + 1
			continue
		}
		b := s.Blocks[i]
		if p.has[b] {
			s.tail = -1 // cannot happen: b would have been found
			continue
		}
		// An entry under h that find refused is a block whose prefix was
		// evicted (or a hash collision): b takes its place in the table.
		p.table[h], p.hash[b], p.has[b], p.prev[b] = b, h, true, s.tail-1
		if s.tail > 0 {
			p.prevGen[b] = p.gen[s.tail-1]
		}
		copy(p.toks[int(b)*p.bs:], block)
		s.tail = b + 1
	}
}

// find is the indexed block with hash h that follows the block tail-1 (or
// starts a prefix, for tail 0) and holds block's tokens.
func (p *prefixIndex) find(h uint64, tail int32, block []int32) (int32, bool) {
	b, ok := p.table[h]
	if !ok || tail < 0 || p.prev[b] != tail-1 || (tail > 0 && p.prevGen[b] != p.gen[tail-1]) ||
		!slices.Equal(p.toks[int(b)*p.bs:int(b+1)*p.bs], block) {
		return 0, false
	}
	return b, true
}

// chain is the hash of block after the prefix whose hash is h.
func (p *prefixIndex) chain(h uint64, block []int32) uint64 {
	if p.weakHash != nil {
		return p.weakHash(h, block)
	}
	binary.LittleEndian.PutUint64(p.buf, h)
	for j, t := range block {
		binary.LittleEndian.PutUint32(p.buf[8+4*j:], uint32(t))
	}
	return maphash.Bytes(p.seed, p.buf[:8+4*len(block)])
}

// use counts one more sequence on block b, taking it off the unused list.
func (p *prefixIndex) use(b int32) {
	if p == nil {
		return
	}
	if p.refs[b] == 0 && p.has[b] {
		p.unlink(b)
	}
	p.refs[b]++
}

// drop counts one sequence fewer on b. It reports whether b stays with the
// index (indexed, in use or on the unused list); false means b is free.
func (p *prefixIndex) drop(b int32) bool {
	if p == nil {
		return false
	}
	if p.refs[b]--; p.refs[b] > 0 {
		return true
	}
	if !p.has[b] {
		return false
	}
	// The most recently used end.
	n := int32(len(p.refs))
	last := p.lruPrev[n]
	p.lruNext[last], p.lruPrev[b], p.lruNext[b], p.lruPrev[n] = b, last, n, b
	p.unused++
	return true
}

func (p *prefixIndex) evictable() int {
	if p == nil {
		return 0
	}
	return p.unused
}

// evict takes the least recently used unused block out of the index and
// returns it; there must be one.
func (p *prefixIndex) evict() int32 {
	b := p.lruNext[len(p.refs)]
	p.unlink(b)
	if p.table[p.hash[b]] == b {
		delete(p.table, p.hash[b])
	}
	p.has[b] = false
	p.gen[b]++
	return b
}

func (p *prefixIndex) unlink(b int32) {
	prev, next := p.lruPrev[b], p.lruNext[b]
	p.lruNext[prev], p.lruPrev[next] = next, prev
	p.unused--
}
