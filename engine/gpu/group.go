package gpu

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/moe-operator/moe-operator/engine/gpu/vk"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/tensor"
)

// Group runs one model over several devices, one rank each: expert
// parallelism with replicated attention. Every rank holds the attention,
// router and norm weights and a full KV cache, and computes attention for
// the whole batch (identical on every rank: same shaders, same inputs).
// Expert e lives on rank e mod N, so the experts, which are most of a
// Mixtral's weights, are split N ways. After each layer's experts the ranks'
// parts of the residual are added on the host through a model.Reducer and
// written back to every rank: one submission per rank and layer, and a
// T×dim float32 round trip through host memory per rank and layer (no
// peer-to-peer copy yet). The first rank alone holds the output head.
//
// It implements model.Accelerator.
type Group struct {
	ranks   []*Backend
	reducer model.Reducer
	parts   [][]float32
	// forwardTime and reduceTime add up the wall time of every Forward and
	// of its host-side reductions (ReduceShare).
	forwardTime, reduceTime time.Duration
}

// ReduceShare is the fraction of the Forwards' wall time so far spent adding
// the ranks' parts on the host (the copies to and from host memory run
// inside the ranks' submissions and are not in it).
func (g *Group) ReduceShare() float64 {
	if g.forwardTime == 0 {
		return 0
	}
	return g.reduceTime.Seconds() / g.forwardTime.Seconds()
}

// GroupFactory returns the model.AcceleratorFactory that opens a Group
// over the devices indexes names, in rank order; an index may repeat (two
// logical devices on one physical device, as tests do on lavapipe).
func GroupFactory(indexes []int, allowCPU bool, opts Options) model.AcceleratorFactory {
	return func(c model.Config, weightBytes int64) (model.Accelerator, error) {
		if len(indexes) < 2 {
			return nil, fmt.Errorf("gpu: a device group needs at least 2 devices, have %d", len(indexes))
		}
		g := &Group{reducer: model.SumReducer{}}
		n := len(indexes)
		for rank, index := range indexes {
			d, err := Open(index, allowCPU, opts)
			if err != nil {
				g.Close()
				return nil, fmt.Errorf("rank %d of %d: %w", rank, n, err)
			}
			// The experts are split n ways; each rank's exact share is
			// checked as its buffers are allocated.
			b, err := NewBackend(d, c, weightBytes/int64(n))
			if err != nil {
				d.Close()
				g.Close()
				return nil, fmt.Errorf("rank %d of %d: %w", rank, n, err)
			}
			b.rank, b.ranks = rank, n
			g.ranks = append(g.ranks, b)
		}
		return g, nil
	}
}

// Shards is the number of ranks (the model's tensor parallelism).
func (g *Group) Shards() int { return len(g.ranks) }

// Name implements model.Accelerator: the ranks' devices.
func (g *Group) Name() string {
	names := make([]string, len(g.ranks))
	same := true
	for i, b := range g.ranks {
		names[i] = b.Name()
		same = same && names[i] == names[0]
	}
	if same {
		return fmt.Sprintf("%s ×%d", names[0], len(names))
	}
	return strings.Join(names, " + ")
}

// Upload implements model.Accelerator: an expert's matrix to its rank, the
// output head to the first, the rest to every rank.
func (g *Group) Upload(ref model.TensorRef, m *tensor.Matrix) error {
	switch {
	case ref.Expert >= 0:
		return g.ranks[ref.Expert%len(g.ranks)].Upload(ref, m)
	case ref.Kind == model.TensorOutput:
		return g.ranks[0].Upload(ref, m)
	}
	for _, b := range g.ranks {
		if err := b.Upload(ref, m); err != nil {
			return err
		}
	}
	return nil
}

// UploadVector implements model.Accelerator.
func (g *Group) UploadVector(ref model.TensorRef, v []float32) error {
	for _, b := range g.ranks {
		if err := b.UploadVector(ref, v); err != nil {
			return err
		}
	}
	return nil
}

// groupCache is a KV cache on every rank.
type groupCache struct{ parts []*Cache }

func (c *groupCache) Bytes() int64 {
	var n int64
	for _, p := range c.parts {
		n += p.Bytes()
	}
	return n
}

func (c *groupCache) Close() {
	for _, p := range c.parts {
		p.Close()
	}
}

// NewCache implements model.Accelerator: rows rows on every rank.
func (g *Group) NewCache(rows int) (model.DeviceCache, error) {
	c := &groupCache{}
	for _, b := range g.ranks {
		p, err := b.NewCache(rows)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.parts = append(c.parts, p.(*Cache))
	}
	return c, nil
}

// Reserve implements model.Accelerator.
func (g *Group) Reserve(tokens, outputs int) error {
	for _, b := range g.ranks {
		if err := b.Reserve(tokens, outputs); err != nil {
			return err
		}
	}
	return nil
}

// Memory implements model.Accelerator: the tightest rank's, since every
// rank holds the same cache.
func (g *Group) Memory() model.DeviceMemory {
	var m model.DeviceMemory
	for i, b := range g.ranks {
		r := b.Memory()
		if i == 0 || r.Budget-r.Used < m.Budget-m.Used {
			m.Budget, m.Used = r.Budget, r.Used
		}
		if i == 0 || r.MaxCacheRows < m.MaxCacheRows {
			m.MaxCacheRows = r.MaxCacheRows
		}
	}
	return m
}

// Forward implements model.Accelerator.
func (g *Group) Forward(in *model.DeviceBatch) ([]float32, []model.Candidate, error) {
	cache, ok := in.Cache.(*groupCache)
	if !ok || len(cache.parts) != len(g.ranks) {
		return nil, nil, errors.New("gpu: the batch's cache is not a live cache of this device group")
	}
	start := time.Now()
	defer func() { g.forwardTime += time.Since(start) }()
	recs := make([]*recorder, len(g.ranks))
	for i, b := range g.ranks {
		if !cache.parts[i].liveOn(b) {
			return nil, nil, errors.New("gpu: the batch's cache is not a live cache of this device group")
		}
		b.d.mu.Lock()
		defer b.d.mu.Unlock()
		r, err := b.prepare(in, cache.parts[i])
		if err != nil {
			return nil, nil, err
		}
		recs[i] = r
	}
	T, D := len(in.Pos), g.ranks[0].c.Dim
	g.parts = g.parts[:0]
	for _, b := range g.ranks {
		g.parts = append(g.parts, b.s.xout.Floats()[:T*D])
	}
	errs := make([]error, len(g.ranks))
	for l := range g.ranks[0].layers {
		var wg sync.WaitGroup
		for i, b := range g.ranks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := recs[i]
				src := b.s.xin
				if l > 0 {
					src = b.s.xout
				}
				errs[i] = b.d.submit(func(cmd vk.CommandBuffer) {
					r.cmd = cmd
					r.loadX(src)
					r.layer(l)
					r.storeX()
				})
				if errs[i] == nil {
					errs[i] = r.err
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, nil, err
		}
		// Add the ranks' parts: then every rank's xout holds the residual after
		// layer l, which its next submission copies in.
		t := time.Now()
		g.reducer.AllReduce(g.parts)
		g.reduceTime += time.Since(t)
	}
	first, r := g.ranks[0], recs[0]
	if len(in.Outputs) == 0 {
		return nil, nil, nil // a prefill chunk that needs no logits
	}
	err := first.d.submit(func(cmd vk.CommandBuffer) {
		r.cmd = cmd
		r.loadX(first.s.xout)
		r.head()
	})
	if err == nil {
		err = r.err
	}
	if err != nil {
		return nil, nil, err
	}
	return first.results(in)
}

// Close implements model.Accelerator.
func (g *Group) Close() error {
	for _, b := range g.ranks {
		b.Close()
	}
	g.ranks = nil
	return nil
}
