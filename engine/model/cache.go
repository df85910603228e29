package model

import (
	"errors"
	"fmt"
	"runtime"
)

// Cache stores the keys and values of many sequences in fixed-size blocks
// of BlockSize positions, as vLLM's PagedAttention does, so sequences grow
// without reserving their whole context up front and a finished sequence
// returns its blocks for others.
//
// Layout: for every shard and layer there is one K and one V array of
// NumBlocks*BlockSize rows, each row the shard's kv heads × head dim
// floats. Position p of a sequence lives in row
// Blocks[p/BlockSize]*BlockSize + p%BlockSize.
//
// A Cache is not safe for concurrent use; the scheduler that owns it
// serialises access.
type Cache struct {
	BlockSize int
	numBlocks int
	k, v      [][][]float32 // [shard][layer][row*kvDim]; nil on an accelerator
	dev       DeviceCache   // the accelerator's cache, or nil
	free      []int32       // blocks holding nothing
	prefix    *prefixIndex  // full blocks kept by content (prefix.go); nil when off
}

// Seq is one sequence's block table. Its capacity is len(Blocks)*BlockSize
// positions; the zero Seq holds nothing.
type Seq struct {
	Blocks []int32
	// indexed is how many of Blocks (from the first) the prefix index has
	// seen, last the chained hash of their tokens, and tail the indexed
	// block that holds the last of them plus one (0 before the first
	// block; -1 once the chain cannot be continued).
	indexed int
	last    uint64
	tail    int32
}

// ErrCacheFull means there are not enough free blocks.
var ErrCacheFull = errors.New("model: KV cache is full")

// NewCache allocates a cache for at least tokens positions in blocks of
// blockSize (16 if <= 0), in host memory or, for a model on an
// accelerator, in device memory (which can run out: then it says how
// much it needed). Close releases device memory at once; otherwise the
// collector does when the cache is unreachable.
func (m *Model) NewCache(tokens, blockSize int) (*Cache, error) {
	if blockSize <= 0 {
		blockSize = 16
	}
	n := max(1, (tokens+blockSize-1)/blockSize)
	c := &Cache{BlockSize: blockSize, numBlocks: n}
	rows := n * blockSize
	if m.dev != nil {
		dc, err := m.dev.NewCache(rows)
		if err != nil {
			return nil, fmt.Errorf("model: a KV cache of %d tokens on %s: %w", rows, m.dev.Name(), err)
		}
		c.dev = dc
		runtime.AddCleanup(c, func(dc DeviceCache) { dc.Close() }, dc)
	}
	for _, s := range m.shards {
		kvDim := s.kvHeads * m.Config.HeadDim
		ks := make([][]float32, m.Config.Layers)
		vs := make([][]float32, m.Config.Layers)
		for l := range ks {
			ks[l] = make([]float32, rows*kvDim)
			vs[l] = make([]float32, rows*kvDim)
		}
		c.k = append(c.k, ks)
		c.v = append(c.v, vs)
	}
	c.free = make([]int32, n)
	for i := range c.free {
		c.free[i] = int32(n - 1 - i) // pop from the end: block 0 first
	}
	return c, nil
}

// Close releases the cache's device memory now; a host cache needs no
// Close. The cache must not be used afterwards.
func (c *Cache) Close() {
	if c.dev != nil {
		c.dev.Close()
	}
}

// NumBlocks is the total number of blocks.
func (c *Cache) NumBlocks() int { return c.numBlocks }

// FreeBlocks is the number of blocks a sequence may take: those holding
// nothing, and cached blocks no sequence uses (the least recently used of
// which are evicted to make room).
func (c *Cache) FreeBlocks() int { return len(c.free) + c.prefix.evictable() }

// BlocksFor is the number of blocks a sequence of tokens positions needs.
func (c *Cache) BlocksFor(tokens int) int { return (tokens + c.BlockSize - 1) / c.BlockSize }

// Capacity is the number of positions s can hold.
func (c *Cache) Capacity(s *Seq) int { return len(s.Blocks) * c.BlockSize }

// Reserve grows s so it holds at least tokens positions. It allocates all
// or nothing: on ErrCacheFull s is unchanged.
func (c *Cache) Reserve(s *Seq, tokens int) error {
	need := c.BlocksFor(tokens) - len(s.Blocks)
	if need <= 0 {
		return nil
	}
	if free := c.FreeBlocks(); need > free {
		return fmt.Errorf("%w: need %d more blocks, %d free", ErrCacheFull, need, free)
	}
	for range need {
		if n := len(c.free); n > 0 {
			s.Blocks = append(s.Blocks, c.free[n-1])
			c.free = c.free[:n-1]
		} else {
			s.Blocks = append(s.Blocks, c.prefix.evict())
		}
		c.prefix.use(s.Blocks[len(s.Blocks)-1])
	}
	return nil
}

// Release gives up s's blocks and empties s. A block no other sequence
// uses becomes free, or, if it is in the prefix index, stays cached until
// evicted.
func (c *Cache) Release(s *Seq) {
	for _, b := range s.Blocks {
		if !c.prefix.drop(b) {
			c.free = append(c.free, b)
		}
	}
	s.Blocks = s.Blocks[:0]
	s.indexed, s.last, s.tail = 0, 0, 0
}

// row returns the cache row of position pos of s.
func (c *Cache) row(s *Seq, pos int) int {
	return int(s.Blocks[pos/c.BlockSize])*c.BlockSize + pos%c.BlockSize
}
