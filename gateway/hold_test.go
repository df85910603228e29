package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// wakes records what a Waker is told.
type wakes struct {
	mu    sync.Mutex
	calls []string
}

func (w *wakes) Wake(_ context.Context, model string, held int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, fmt.Sprintf("%s=%d", model, held))
	return nil
}

func (w *wakes) last() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.calls) == 0 {
		return ""
	}
	return w.calls[len(w.calls)-1]
}

func (w *wakes) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.calls)
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newServer(t *testing.T, g *Gateway) string {
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return srv.URL
}

// metricValue reads one sample of the gateway's /metrics, -1 when absent.
func metricValue(t *testing.T, base, series string) float64 {
	t.Helper()
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

const chatBody = `{"model":"m","messages":[{"role":"user","content":"hi"}]}`

func TestARequestForAModelAtZeroIsHeldUntilAReplicaIsReady(t *testing.T) {
	w := &wakes{}
	router := NewRouter(nil)
	router.Set(nil, "m") // known, scaled to zero
	g := New(router, Options{Waker: w, WakeMinInterval: 10 * time.Millisecond, WakeRefresh: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go g.Wake(ctx)
	srv := newServer(t, g)

	type answer struct {
		code int
		body string
	}
	answers := make(chan answer, 3)
	for range 3 {
		go func() {
			res, body := post(t, srv, "/v1/chat/completions", chatBody)
			answers <- answer{res.StatusCode, body}
		}()
	}
	waitFor(t, "three requests are held", func() bool { return metricValue(t, srv, `moe_gateway_held_requests{model="m"}`) == 3 })
	waitFor(t, "the waker hears of them", func() bool { return w.last() == "m=3" })
	// While they stay held, the count is told again (a heartbeat the operator trusts).
	n := w.count()
	waitFor(t, "the count is refreshed", func() bool { return w.count() > n && w.last() == "m=3" })

	e := newEngine(t, "replica-a")
	router.Set([]*Replica{replicaOf(t, "m", e)}, "m")
	for range 3 {
		select {
		case a := <-answers:
			if a.code != 200 || !strings.Contains(a.body, "replica-a") {
				t.Fatalf("a held request got %d %s", a.code, a.body)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the held requests were not released when the replica came")
		}
	}
	waitFor(t, "the waker hears that none is held", func() bool { return w.last() == "m=0" })
	if got := metricValue(t, srv, `moe_gateway_hold_duration_seconds_count{model="m"}`); got != 3 {
		t.Fatalf("hold durations observed: %v, want 3", got)
	}
}

func TestAHeldRequestTimesOutWith503AndRetryAfter(t *testing.T) {
	router := NewRouter(nil)
	router.Set(nil, "m")
	srv := newServer(t, New(router, Options{HoldTimeout: 100 * time.Millisecond}))
	start := time.Now()
	res, body := post(t, srv, "/v1/chat/completions", chatBody)
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Fatalf("answered after %s, before the hold timeout", waited)
	}
	_, code, msg := errorOf(t, body)
	if res.StatusCode != http.StatusServiceUnavailable || code != "no_replica" || res.Header.Get("Retry-After") == "" ||
		!strings.Contains(msg, "became ready within 100ms") {
		t.Fatalf("%d %s (Retry-After %q)", res.StatusCode, body, res.Header.Get("Retry-After"))
	}
}

func TestTheHoldQueueIsBounded(t *testing.T) {
	router := NewRouter(nil)
	router.Set(nil, "m")
	srv := newServer(t, New(router, Options{MaxHeldPerModel: 2, HoldTimeout: time.Minute}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 2 {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv+"/v1/chat/completions", strings.NewReader(chatBody))
			if res, err := http.DefaultClient.Do(req); err == nil {
				res.Body.Close()
			}
		}()
	}
	waitFor(t, "two are held", func() bool { return metricValue(t, srv, `moe_gateway_held_requests{model="m"}`) == 2 })
	res, body := post(t, srv, "/v1/chat/completions", chatBody)
	if _, code, _ := errorOf(t, body); res.StatusCode != 503 || code != "hold_queue_full" || res.Header.Get("Retry-After") == "" {
		t.Fatalf("the third: %d %s", res.StatusCode, body)
	}
	// A client that gives up leaves the queue.
	cancel()
	waitFor(t, "the cancelled requests leave", func() bool { return metricValue(t, srv, `moe_gateway_held_requests{model="m"}`) == 0 })
}

func TestAModelRemovedWhileHeldAnswers404(t *testing.T) {
	router := NewRouter(nil)
	router.Set(nil, "m", "other")
	srv := newServer(t, New(router, Options{}))
	done := make(chan string, 1)
	go func() {
		res, body := post(t, srv, "/v1/chat/completions", chatBody)
		done <- fmt.Sprint(res.StatusCode, " ", body)
	}()
	waitFor(t, "it is held", func() bool { return metricValue(t, srv, `moe_gateway_held_requests{model="m"}`) == 1 })
	router.Set(nil, "other")
	select {
	case got := <-done:
		if !strings.HasPrefix(got, "404 ") || !strings.Contains(got, "model_not_found") {
			t.Fatalf("got %s", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held request was not answered when its model went away")
	}
}
