package tensor

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Pool is a fixed set of worker goroutines that run parallel loops. The
// goroutine calling For works too, so a Pool of n threads starts n-1
// workers. A Pool with one thread runs everything on the caller.
//
// A decode step runs about a hundred short loops (one per matrix), a few
// microseconds apart, so waking a parked goroutine for each would cost a
// good part of the step. Workers therefore spin for a while after a loop,
// waiting for the next one, and only then park; the caller spins for the
// helpers' last chunks instead of parking too.
//
// For calls on one Pool must not overlap; use one Pool per concurrent
// caller (a tensor-parallel shard, for example).
type Pool struct {
	threads int
	workers []*poolWorker
	wg      sync.WaitGroup
	closed  atomic.Bool
}

type poolWorker struct {
	posted   atomic.Pointer[job] // the next loop to join, taken with Swap
	sleeping atomic.Bool         // parked (or about to) on wake
	wake     chan struct{}       // capacity 1: a token for a parked worker
}

type job struct {
	fn      func(worker, lo, hi int)
	n       int
	grain   int
	next    atomic.Int64
	pending atomic.Int32 // helpers that have not finished
}

// closeJob, posted to a worker, stops it.
var closeJob = &job{}

// spinFor is how long an idle worker polls for a new loop before parking.
const spinFor = 100 * time.Microsecond

// NewPool starts a pool of the given number of threads; threads <= 0 means
// runtime.GOMAXPROCS(0), which follows a container's CPU limit.
func NewPool(threads int) *Pool {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	p := &Pool{threads: threads}
	for i := 1; i < threads; i++ {
		w := &poolWorker{wake: make(chan struct{}, 1)}
		p.workers = append(p.workers, w)
		p.wg.Add(1)
		go p.work(i, w)
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
	for _, w := range p.workers {
		w.post(closeJob)
	}
	p.wg.Wait()
}

// post hands j to the worker, waking it if it is parked. The worker announces
// sleeping before its last look for a job, and post stores the job before
// looking at sleeping, so one of them always sees the other: no job is missed.
// A token sent to a worker that then found the job anyway only causes one
// spurious wake-up later.
func (w *poolWorker) post(j *job) {
	w.posted.Store(j)
	if w.sleeping.Load() {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// take waits for the next job: polling for spinFor, then parked.
func (w *poolWorker) take() *job {
	for {
		deadline := time.Now().Add(spinFor)
		for i := 1; ; i++ {
			if w.posted.Load() != nil { // read-only polling keeps the line shared
				return w.posted.Swap(nil)
			}
			if i%64 == 0 {
				if time.Now().After(deadline) {
					break
				}
				// Let other goroutines have this thread: with more workers than
				// GOMAXPROCS a spinning one would otherwise hold it for a whole
				// time slice.
				runtime.Gosched()
			}
		}
		w.sleeping.Store(true)
		if j := w.posted.Swap(nil); j != nil {
			w.sleeping.Store(false)
			return j
		}
		<-w.wake
		w.sleeping.Store(false)
	}
}

func (p *Pool) work(id int, w *poolWorker) {
	defer p.wg.Done()
	for {
		j := w.take()
		if j == closeJob {
			return
		}
		j.run(id)
		j.pending.Add(-1)
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
	helpers := min(len(p.workers), (n+grain-1)/grain-1)
	j.pending.Store(int32(helpers))
	for _, w := range p.workers[:helpers] {
		w.post(j)
	}
	j.run(0)
	// What is left is at most one chunk per helper (or a helper still
	// waking up, which then finds no chunk): wait for it without parking,
	// yielding now and then so a helper without its own thread can run.
	for i := 1; j.pending.Load() != 0; i++ {
		if i%64 == 0 {
			runtime.Gosched()
		}
	}
}
