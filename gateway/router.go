package gateway

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/moe-operator/moe-operator/gateway/enginemetrics"
)

// Replica is one engine endpoint of a model.
type Replica struct {
	Model string
	URL   *url.URL

	// inflight counts the requests this gateway has open on the replica.
	inflight atomic.Int64
	// load is what the replica's /metrics said at the last scrape.
	load atomic.Pointer[enginemetrics.Reading]
	// down is set while the latest scrape or request failed to reach the replica.
	down atomic.Bool
}

// score is the replica's load as the router weighs it: the requests this gateway has open on
// it plus those waiting in its queue (which include other gateways' and clients').
func (r *Replica) score() float64 {
	s := float64(r.inflight.Load())
	if l := r.load.Load(); l != nil {
		s += l.Waiting
	}
	return s
}

// full reports whether the replica's KV cache is nearly exhausted: new requests there would
// wait or preempt others.
func (r *Replica) full() bool {
	l := r.load.Load()
	return l != nil && l.KVCacheUsage >= kvFull
}

const (
	kvFull = 0.98
	// virtualNodes is each replica's points on the hash ring: enough for an even spread
	// over a handful of replicas.
	virtualNodes = 64
)

// Decision says how a replica was chosen.
type Decision string

// Routing decisions, as the moe_gateway_routing_decisions_total metric labels them.
const (
	// DecisionPrefix: the prompt's prefix hashed to this replica and it had room.
	DecisionPrefix Decision = "prefix"
	// DecisionPrefixOverflow: the prefix's replica was over the load bound (or full); the
	// next one on the ring took it.
	DecisionPrefixOverflow Decision = "prefix_overflow"
	// DecisionLeastLoaded: no prefix to hash (or a retry, or the least-loaded routing):
	// the least-loaded replica.
	DecisionLeastLoaded Decision = "least_loaded"
	// DecisionRoundRobin: the round-robin routing's next replica.
	DecisionRoundRobin Decision = "round_robin"
)

// Routing is how the router picks among a model's replicas.
type Routing string

// The routings. Prefix is the default; the others ignore the prompt, and serve as the
// baselines prefix affinity is measured against (hack/bench-gateway-prefix.sh).
const (
	// RoutingPrefix: consistent hashing of the prompt's prefix with bounded load.
	RoutingPrefix Routing = "prefix"
	// RoutingLeastLoaded: the replica with the fewest requests open and waiting.
	RoutingLeastLoaded Routing = "least-loaded"
	// RoutingRoundRobin: each replica in turn.
	RoutingRoundRobin Routing = "round-robin"
)

// ParseRouting checks a routing's name.
func ParseRouting(s string) (Routing, error) {
	switch r := Routing(s); r {
	case RoutingPrefix, RoutingLeastLoaded, RoutingRoundRobin:
		return r, nil
	}
	return "", fmt.Errorf("unknown routing %q: use %s, %s or %s", s, RoutingPrefix, RoutingLeastLoaded, RoutingRoundRobin)
}

// pool is one model's replicas and their hash ring.
type pool struct {
	replicas []*Replica
	ring     []ringPoint
	turn     atomic.Uint64 // round-robin's counter
}

type ringPoint struct {
	hash    uint64
	replica *Replica
}

func hash64(s string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	// fnv's low bits mix poorly for short keys; finish like SplitMix64.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ (x >> 31)
}

func newPool(replicas []*Replica) *pool {
	p := &pool{replicas: replicas}
	for _, r := range replicas {
		for i := range virtualNodes {
			p.ring = append(p.ring, ringPoint{hash64(r.URL.String() + "#" + strconv.Itoa(i)), r})
		}
	}
	sort.Slice(p.ring, func(i, j int) bool { return p.ring[i].hash < p.ring[j].hash })
	return p
}

// Router holds every model's replicas and picks one per request.
type Router struct {
	// Epsilon is the bounded-load slack: no replica takes a request while its score is
	// above (1+Epsilon) × the mean (plus the request). 0 means 0.25.
	Epsilon float64
	// Routing is how a replica is picked; "" means RoutingPrefix.
	Routing Routing

	mu    sync.RWMutex
	pools map[string]*pool
	// ready holds, per model without a replica, a channel that Set closes when the model
	// gets one or goes away.
	ready map[string]chan struct{}
}

// NewRouter returns a router over replicas (grouped by model).
func NewRouter(replicas []*Replica) *Router {
	r := &Router{}
	r.Set(replicas)
	return r
}

// Set replaces the replicas. A replica keeps its counters when its model and URL stay.
// models names models that exist without a ready replica (starting, or scaled to zero):
// their requests get 503 rather than 404.
func (rt *Router) Set(replicas []*Replica, models ...string) {
	byModel := map[string][]*Replica{}
	for _, m := range models {
		byModel[m] = nil
	}
	rt.mu.RLock()
	old := rt.pools
	rt.mu.RUnlock()
	for _, r := range replicas {
		if p := old[r.Model]; p != nil {
			if i := slices.IndexFunc(p.replicas, func(o *Replica) bool { return o.URL.String() == r.URL.String() }); i >= 0 {
				r = p.replicas[i]
			}
		}
		byModel[r.Model] = append(byModel[r.Model], r)
	}
	pools := make(map[string]*pool, len(byModel))
	for m, rs := range byModel {
		pools[m] = newPool(rs)
	}
	rt.mu.Lock()
	rt.pools = pools
	for m, ch := range rt.ready {
		if p := pools[m]; p == nil || len(p.replicas) > 0 {
			close(ch)
			delete(rt.ready, m)
		}
	}
	rt.mu.Unlock()
}

// Ready reports whether model has a replica. When it has none, the channel is closed the
// next time Set gives it one or removes the model; look again then.
func (rt *Router) Ready(model string) (bool, <-chan struct{}) {
	// Every request asks; a model with replicas needs only the read lock.
	rt.mu.RLock()
	p := rt.pools[model]
	rt.mu.RUnlock()
	if p != nil && len(p.replicas) > 0 {
		return true, nil
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if p := rt.pools[model]; p == nil || len(p.replicas) > 0 {
		return p != nil, nil
	}
	ch := rt.ready[model]
	if ch == nil {
		if rt.ready == nil {
			rt.ready = map[string]chan struct{}{}
		}
		ch = make(chan struct{})
		rt.ready[model] = ch
	}
	return false, ch
}

// Models lists the models served, sorted.
func (rt *Router) Models() []string {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	models := make([]string, 0, len(rt.pools))
	for m := range rt.pools {
		models = append(models, m)
	}
	sort.Strings(models)
	return models
}

// Known reports whether the router has model, with or without a ready replica.
func (rt *Router) Known(model string) bool {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	_, ok := rt.pools[model]
	return ok
}

// Replicas lists every replica.
func (rt *Router) Replicas() []*Replica {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	var out []*Replica
	for _, p := range rt.pools {
		out = append(out, p.replicas...)
	}
	return out
}

// Pick's errors: a model the router does not know, and a known model with no replica left
// to try.
var (
	errUnknownModel = errors.New("unknown model")
	errNoReplica    = errors.New("no replica")
)

// Pick chooses a replica of model for a request whose prompt starts with prefix, skipping
// those in exclude (replicas already tried). Replicas that are down are chosen only when
// every other one is. An empty prefix picks the least-loaded replica; otherwise the walk
// starts at the prefix's point on the ring and takes the first replica within the load
// bound (consistent hashing with bounded load).
func (rt *Router) Pick(model, prefix string, exclude []*Replica) (*Replica, Decision, error) {
	rt.mu.RLock()
	p := rt.pools[model]
	rt.mu.RUnlock()
	if p == nil {
		return nil, "", errUnknownModel
	}
	usable := func(r *Replica, allowDown bool) bool {
		return !slices.Contains(exclude, r) && (allowDown || !r.down.Load())
	}
	if len(p.replicas) == 0 {
		return nil, "", fmt.Errorf("%w: no replica of %s is ready (it is starting, or scaled to zero)", errNoReplica, model)
	}
	for _, allowDown := range []bool{false, true} {
		var candidates []*Replica
		for _, r := range p.replicas {
			if usable(r, allowDown) {
				candidates = append(candidates, r)
			}
		}
		if len(candidates) == 0 {
			continue
		}
		switch {
		case rt.Routing == RoutingRoundRobin:
			return candidates[(p.turn.Add(1)-1)%uint64(len(candidates))], DecisionRoundRobin, nil
		case prefix == "" || rt.Routing == RoutingLeastLoaded:
			return leastLoaded(candidates), DecisionLeastLoaded, nil
		}
		r, d := rt.walk(p, prefix, candidates)
		return r, d, nil
	}
	return nil, "", fmt.Errorf("%w: every replica of %s was tried", errNoReplica, model)
}

// walk is the bounded-load walk of the ring from prefix's point over candidates: the
// first candidate within the load bound whose KV cache has room. The first candidate met
// owns the prefix (DecisionPrefix); a later one took it over (DecisionPrefixOverflow).
func (rt *Router) walk(p *pool, prefix string, candidates []*Replica) (*Replica, Decision) {
	eps := rt.Epsilon
	if eps <= 0 {
		eps = 0.25
	}
	total := 1.0 // the request being placed
	for _, r := range candidates {
		total += r.score()
	}
	bound := math.Ceil(total / float64(len(candidates)) * (1 + eps))
	h := hash64(prefix)
	start := sort.Search(len(p.ring), func(i int) bool { return p.ring[i].hash >= h })
	var owner *Replica
	for i := range p.ring {
		r := p.ring[(start+i)%len(p.ring)].replica
		if !slices.Contains(candidates, r) {
			continue
		}
		if owner == nil {
			owner = r
		}
		if r.score()+1 <= bound && !r.full() {
			if r == owner {
				return r, DecisionPrefix
			}
			return r, DecisionPrefixOverflow
		}
	}
	return leastLoaded(candidates), DecisionPrefixOverflow
}

// leastLoaded is the replica with the lowest score, then the emptier KV cache, then the
// first listed.
func leastLoaded(rs []*Replica) *Replica {
	best := rs[0]
	for _, r := range rs[1:] {
		if s, b := r.score(), best.score(); s < b || (s == b && kvUsage(r) < kvUsage(best)) {
			best = r
		}
	}
	return best
}

func kvUsage(r *Replica) float64 {
	if l := r.load.Load(); l != nil {
		return l.KVCacheUsage
	}
	return 0
}
