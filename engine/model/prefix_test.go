package model

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// bareCache is a Cache without keys and values: the block bookkeeping alone.
func bareCache(blocks, blockSize int) *Cache {
	c := &Cache{BlockSize: blockSize, numBlocks: blocks, free: make([]int32, blocks)}
	for i := range c.free {
		c.free[i] = int32(blocks - 1 - i)
	}
	c.EnablePrefixCaching()
	return c
}

func TestMatchFindsTheLongestIndexedPrefixInWholeBlocks(t *testing.T) {
	c := bareCache(8, 4)
	a := &Seq{}
	toks := []int32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if err := c.Reserve(a, len(toks)); err != nil {
		t.Fatal(err)
	}
	c.Commit(a, toks, len(toks)) // two full blocks indexed; the third is partial
	for _, tt := range []struct {
		tokens []int32
		want   int
	}{
		{[]int32{1, 2, 3, 4, 5, 6, 7, 8, 99}, 8},
		{[]int32{1, 2, 3, 4, 5, 6, 7, 8}, 4}, // the last token is always computed
		{[]int32{1, 2, 3, 4, 5, 6, 7, 0, 0}, 4},
		{[]int32{0, 2, 3, 4, 5, 6, 7, 8, 9}, 0},
		{[]int32{1, 2, 3}, 0},
	} {
		s := &Seq{}
		if got := c.Match(s, tt.tokens); got != tt.want {
			t.Errorf("Match(%v) = %d, want %d", tt.tokens, got, tt.want)
		}
		if !slices.Equal(s.Blocks, a.Blocks[:tt.want/4]) {
			t.Errorf("Match(%v) gave blocks %v, want the first %d of %v", tt.tokens, s.Blocks, tt.want/4, a.Blocks)
		}
		c.Release(s)
	}
	// Shared blocks are not free while a sequence holds them, and cached
	// blocks no one holds are (they are evicted on demand).
	if got := c.FreeBlocks(); got != 5 {
		t.Errorf("free %d with one sequence of 3 blocks, want 5", got)
	}
	c.Release(a)
	if got := c.FreeBlocks(); got != 8 {
		t.Errorf("free %d after release, want 8", got)
	}
}

func TestEvictionIsLeastRecentlyUsedFirst(t *testing.T) {
	c := bareCache(4, 2)
	seqs := [][]int32{{1, 1, 1}, {2, 2, 2}, {3, 3, 3}} // one full block each
	for _, toks := range seqs {
		s := &Seq{}
		if err := c.Reserve(s, len(toks)); err != nil {
			t.Fatal(err)
		}
		c.Commit(s, toks, len(toks))
		c.Release(s)
	}
	// Use the first again, so the second is now the least recent.
	s := &Seq{}
	if c.Match(s, seqs[0]) != 2 {
		t.Fatal("the first prefix is not cached")
	}
	c.Release(s)
	// Three blocks are needed: the free one, then the LRU second and third.
	big := &Seq{}
	if err := c.Reserve(big, 6); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{2, 0, 0} {
		probe := &Seq{}
		if got := c.Match(probe, seqs[i]); got != want {
			t.Errorf("prefix %d: %d cached, want %d", i, got, want)
		}
		c.Release(probe)
	}
}

// TestPrefixCacheNeverHandsOutAnotherPrefixsBlocks runs random sequences
// over a few shared prefixes through a small cache, recording what each
// block was written with. Every block a match hands out must hold exactly
// the prefix asked for, and the counts must add up. It runs once with the
// real hash and once with one that collides all the time, which only the
// index's checks of tokens and predecessors stand against.
func TestPrefixCacheNeverHandsOutAnotherPrefixsBlocks(t *testing.T) {
	t.Run("hash", func(t *testing.T) { prefixCacheProperty(t, nil) })
	t.Run("colliding hash", func(t *testing.T) {
		prefixCacheProperty(t, func(h uint64, block []int32) uint64 {
			for _, tok := range block {
				h += uint64(tok)
			}
			return h % 5
		})
	})
}

func prefixCacheProperty(t *testing.T, weak func(uint64, []int32) uint64) {
	const blocks, bs = 24, 4
	r := rand.New(rand.NewPCG(1, 2))
	c := bareCache(blocks, bs)
	c.prefix.weakHash = weak
	written := make([][]int32, blocks) // the prefix each block's keys and values belong to
	type live struct {
		seq    *Seq
		tokens []int32
	}
	var seqs []*live
	bases := [][]int32{}
	for i := range 4 {
		b := []int32{int32(i)}
		for range 3 + r.IntN(12) {
			b = append(b, int32(r.IntN(3))) // few distinct tokens: many equal blocks
		}
		bases = append(bases, b)
	}
	write := func(l *live, from int) {
		for p := from; p < len(l.tokens); p++ {
			b := l.seq.Blocks[p/bs]
			written[b] = slices.Clone(l.tokens[:p+1])
		}
	}
	hits := 0
	for step := range 20000 {
		switch op := r.IntN(10); {
		case op < 4: // start a sequence
			toks := slices.Clone(bases[r.IntN(len(bases))])
			toks = toks[:1+r.IntN(len(toks))]
			for range r.IntN(6) {
				toks = append(toks, int32(r.IntN(3)))
			}
			l := &live{seq: &Seq{}, tokens: toks}
			got := c.Match(l.seq, toks)
			if got%bs != 0 || got >= len(toks) && len(toks) > 0 {
				t.Fatalf("step %d: matched %d of %d tokens", step, got, len(toks))
			}
			for i, b := range l.seq.Blocks {
				if want := toks[:(i+1)*bs]; !slices.Equal(written[b], want) {
					t.Fatalf("step %d: block %d handed out for prefix %v holds %v", step, b, want, written[b])
				}
			}
			hits += got
			if err := c.Reserve(l.seq, len(toks)); err != nil {
				c.Release(l.seq)
				continue
			}
			write(l, got)
			c.Commit(l.seq, l.tokens, len(l.tokens))
			seqs = append(seqs, l)
		case op < 7 && len(seqs) > 0: // a sequence grows
			l := seqs[r.IntN(len(seqs))]
			n := len(l.tokens)
			grown := append(l.tokens, int32(r.IntN(3)))
			if c.Reserve(l.seq, len(grown)) != nil {
				continue
			}
			l.tokens = grown
			write(l, n)
			c.Commit(l.seq, l.tokens, len(l.tokens))
		case len(seqs) > 0: // one ends
			i := r.IntN(len(seqs))
			c.Release(seqs[i].seq)
			seqs = slices.Delete(seqs, i, i+1)
		}
		used := map[int32]int{}
		for _, l := range seqs {
			for _, b := range l.seq.Blocks {
				used[b]++
			}
		}
		for b, n := range used {
			if int(c.prefix.refs[b]) != n {
				t.Fatalf("step %d: block %d has %d references, %d sequences hold it", step, b, c.prefix.refs[b], n)
			}
		}
		if len(used)+c.FreeBlocks() != blocks {
			t.Fatalf("step %d: %d blocks held, %d free, of %d", step, len(used), c.FreeBlocks(), blocks)
		}
	}
	if hits == 0 {
		t.Fatal("no prefix was ever found cached: the test does not exercise sharing")
	}
	t.Logf("%d positions found cached", hits)
}

// TestABlockReusedForAnotherPrefixDoesNotLeadToItsOldSuccessor: with a
// hash that names only the depth, the index itself must tell prefixes
// apart. A's first block is evicted and rewritten with B's, whose second
// block would have A's second block's tokens; the successor A left in the
// index must not be found through the rewritten block.
func TestABlockReusedForAnotherPrefixDoesNotLeadToItsOldSuccessor(t *testing.T) {
	c := bareCache(3, 2)
	c.prefix.weakHash = func(h uint64, _ []int32) uint64 { return h + 1 }
	a := &Seq{}
	aToks := []int32{1, 1, 7, 7}
	if err := c.Reserve(a, 4); err != nil {
		t.Fatal(err)
	}
	c.Commit(a, aToks, 4)
	first := a.Blocks[0]
	c.Release(a)         // A's first block is now the least recently used
	c.Reserve(&Seq{}, 2) // takes the free block
	b := &Seq{}
	bToks := []int32{2, 2}
	if err := c.Reserve(b, 2); err != nil { // evicts A's first block
		t.Fatal(err)
	}
	if b.Blocks[0] != first {
		t.Fatalf("B got block %d, want A's first (%d), evicted", b.Blocks[0], first)
	}
	c.Commit(b, bToks, 2)
	probe := &Seq{}
	if got := c.Match(probe, []int32{2, 2, 7, 7, 9}); got != 2 {
		t.Errorf("matched %d positions of B's prefix and A's old second block, want 2 (B's first block only)", got)
	}
}
