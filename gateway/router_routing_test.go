package gateway

import (
	"net/url"
	"testing"
)

func TestRoundRobinAndLeastLoadedIgnoreThePrefix(t *testing.T) {
	var reps []*Replica
	for _, h := range []string{"a:1", "b:1", "c:1"} {
		reps = append(reps, &Replica{Model: "m", URL: &url.URL{Scheme: "http", Host: h}})
	}
	rt := NewRouter(reps)
	rt.Routing = RoutingRoundRobin
	seen := map[string]int{}
	for range 9 {
		r, d, err := rt.Pick("m", "the same system prompt", nil)
		if err != nil || d != DecisionRoundRobin {
			t.Fatalf("%v %v", d, err)
		}
		seen[r.URL.Host]++
	}
	if len(seen) != 3 || seen["a:1"] != 3 || seen["b:1"] != 3 {
		t.Errorf("round robin over one prefix: %v", seen)
	}
	rt.Routing = RoutingLeastLoaded
	reps[0].inflight.Store(2)
	reps[1].inflight.Store(1)
	reps[2].inflight.Store(3)
	if r, d, _ := rt.Pick("m", "the same system prompt", nil); r != reps[1] || d != DecisionLeastLoaded {
		t.Errorf("least loaded picked %s (%s)", r.URL.Host, d)
	}
	if _, err := ParseRouting("random"); err == nil {
		t.Error("an unknown routing was accepted")
	}
}
