package gateway

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Waker is told how many requests the gateway holds for a model that has no ready replica
// (scaled to zero, or starting), so that something brings one up: in a cluster,
// gateway/kube writes the count onto the model's MixtralDeployment, and the operator's
// autoscaler scales it from zero. Wake is called when the count changes (0 included, once
// the requests have gone through) and every WakeRefresh while it stays above zero.
type Waker interface {
	Wake(ctx context.Context, model string, held int) error
}

// holds counts the requests held per model and reports the counts to a Waker.
type holds struct {
	mu   sync.Mutex
	held map[string]int
	sent map[string]sentCount
	kick chan struct{}
}

// sentCount is the count a Waker last acknowledged for a model, and when.
type sentCount struct {
	n  int
	at time.Time
}

func newHolds() *holds {
	return &holds{held: map[string]int{}, sent: map[string]sentCount{}, kick: make(chan struct{}, 1)}
}

// enter counts one more request held for model, unless max are held already.
func (h *holds) enter(model string, max int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if max > 0 && h.held[model] >= max {
		return false
	}
	h.held[model]++
	h.notify()
	return true
}

func (h *holds) leave(model string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.held[model]--; h.held[model] <= 0 {
		delete(h.held, model)
	}
	h.notify()
}

func (h *holds) notify() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// due lists the counts the Waker should hear now: those that changed since last sent, and
// those above zero last sent refresh ago or more.
func (h *holds) due(now time.Time, refresh time.Duration) map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for m, n := range h.held {
		if s, ok := h.sent[m]; !ok || s.n != n || now.Sub(s.at) >= refresh {
			out[m] = n
		}
	}
	for m, s := range h.sent {
		if _, held := h.held[m]; !held && s.n != 0 {
			out[m] = 0
		}
	}
	return out
}

func (h *holds) acknowledged(model string, n int, at time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n == 0 {
		delete(h.sent, model)
		return
	}
	h.sent[model] = sentCount{n: n, at: at}
}

// Wake reports the held counts to the Waker until ctx ends: at once when a count changes
// (at most one call per model every WakeMinInterval), and every WakeRefresh while requests
// stay held. Without a Waker it returns at once.
func (g *Gateway) Wake(ctx context.Context) {
	if g.opts.Waker == nil {
		return
	}
	t := time.NewTicker(g.opts.WakeMinInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.holds.kick:
		case <-t.C:
		}
		now := time.Now()
		for model, n := range g.holds.due(now, g.opts.WakeRefresh) {
			if err := g.opts.Waker.Wake(ctx, model, n); err != nil {
				g.log.Warn("could not signal the held requests", "model", model, "held", n, "error", err)
				continue
			}
			g.holds.acknowledged(model, n, now)
		}
		// Changes that come faster than WakeMinInterval wait for the next tick.
		select {
		case <-ctx.Done():
			return
		case <-time.After(g.opts.WakeMinInterval):
		}
	}
}

// awaitReplica returns once model has a ready replica. A model without one (scaled to
// zero, or starting) holds the request: at most MaxHeldPerModel of them, each at most
// HoldTimeout, after which the client gets 503 with Retry-After. The result is the error
// to send the client, nil when a replica is ready.
func (g *Gateway) awaitReplica(ctx context.Context, model string) *apiError {
	ready, ch := g.router.Ready(model)
	if ready {
		return nil
	}
	if ch == nil {
		return modelNotFound(model, g.router.Models())
	}
	if !g.holds.enter(model, g.opts.MaxHeldPerModel) {
		return &apiError{status: http.StatusServiceUnavailable, typ: "service_unavailable_error", code: "hold_queue_full",
			message:    fmt.Sprintf("the model %s has no ready replica and %d requests are already waiting for one, the most held; retry later", model, g.opts.MaxHeldPerModel),
			retryAfter: 10}
	}
	defer g.holds.leave(model)
	gauge := g.metrics.held.WithLabelValues(model)
	gauge.Inc()
	defer gauge.Dec()
	start := time.Now()
	timer := time.NewTimer(g.opts.HoldTimeout)
	defer timer.Stop()
	for {
		select {
		case <-ch:
			if ready, ch = g.router.Ready(model); ready {
				g.metrics.holdSeconds.WithLabelValues(model).Observe(time.Since(start).Seconds())
				return nil
			}
			if ch == nil {
				return modelNotFound(model, g.router.Models())
			}
		case <-timer.C:
			g.metrics.holdSeconds.WithLabelValues(model).Observe(time.Since(start).Seconds())
			return &apiError{status: http.StatusServiceUnavailable, typ: "service_unavailable_error", code: "no_replica",
				message: fmt.Sprintf("no replica of %s became ready within %s (it is scaling up from zero, or its replicas are starting); retry later",
					model, g.opts.HoldTimeout),
				retryAfter: 30}
		case <-ctx.Done():
			return &apiError{status: 499, typ: "invalid_request_error", code: "client_closed", message: ctx.Err().Error()}
		}
	}
}
