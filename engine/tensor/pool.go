package tensor

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Pool is a fixed set of worker goroutines that run parallel loops. The
// goroutine calling For works too, so a Pool of n threads starts n-1
// workers. A Pool with one thread runs everything on the caller.
//
// For calls on one Pool must not overlap; use one Pool per concurrent
// caller (a tensor-parallel shard, for example).
type Pool struct {
	threads int
	jobs    []chan *job
	wg      sync.WaitGroup
	closed  atomic.Bool
}

type job struct {
	fn    func(worker, lo, hi int)
	n     int
	grain int
	next  atomic.Int64
	done  sync.WaitGroup
}

// NewPool starts a pool of the given number of threads; threads <= 0 means
// runtime.NumCPU().
func NewPool(threads int) *Pool {
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	p := &Pool{threads: threads}
	for i := 1; i < threads; i++ {
		ch := make(chan *job, 1)
		p.jobs = append(p.jobs, ch)
		p.wg.Add(1)
		go p.worker(i, ch)
	}
	return p
}

// Threads returns the number of threads, counting the caller (1 for a nil Pool).
func (p *Pool) Threads() int {
	if p == nil {
		return 1
	}
	return p.threads
}

// Close stops the workers. The Pool must not be used afterwards.
func (p *Pool) Close() {
	if p.closed.Swap(true) {
		return
	}
	for _, ch := range p.jobs {
		close(ch)
	}
	p.wg.Wait()
}

func (p *Pool) worker(id int, ch chan *job) {
	defer p.wg.Done()
	for j := range ch {
		j.run(id)
		j.done.Done()
	}
}

func (j *job) run(worker int) {
	for {
		lo := int(j.next.Add(int64(j.grain))) - j.grain
		if lo >= j.n {
			return
		}
		j.fn(worker, lo, min(lo+j.grain, j.n))
	}
}

// For calls fn over [0, n) split into chunks of at most grain indices,
// in parallel, and returns when all chunks are done. Chunks are handed out
// dynamically, so uneven work balances itself. A nil Pool runs fn on the
// caller.
func (p *Pool) For(n, grain int, fn func(lo, hi int)) {
	p.ForWorker(n, grain, func(_, lo, hi int) { fn(lo, hi) })
}

// ForWorker is For with the index (0 <= worker < Threads()) of the thread
// running each chunk, so callers can give each thread its own scratch.
func (p *Pool) ForWorker(n, grain int, fn func(worker, lo, hi int)) {
	if n <= 0 {
		return
	}
	grain = max(grain, 1)
	if p == nil || p.threads == 1 || n <= grain {
		fn(0, 0, n)
		return
	}
	j := &job{fn: fn, n: n, grain: grain}
	helpers := min(len(p.jobs), (n+grain-1)/grain-1)
	j.done.Add(helpers)
	for _, ch := range p.jobs[:helpers] {
		ch <- j
	}
	j.run(0)
	j.done.Wait()
}
