package controllers

import (
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	servingv1alpha1 "github.com/moe-operator/moe-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func at(seconds int) time.Time { return t0.Add(time.Duration(seconds) * time.Second) }

func window(since time.Time, replicas int32) *servingv1alpha1.ScalingWindow {
	return &servingv1alpha1.ScalingWindow{Since: metav1.NewTime(since), Replicas: replicas}
}

func TestDecide(t *testing.T) {
	policy := scalePolicy{
		min: 1, max: 10, target: 4, tolerance: 0.1,
		upWindow: 30 * time.Second, downWindow: 300 * time.Second, samplePeriod: 10 * time.Second,
	}
	last := func(s int) *time.Time { v := at(s); return &v }
	tests := []struct {
		name   string
		policy scalePolicy
		state  windows
		r      reading
		now    time.Time
		want   decision
	}{
		{
			name:  "load above the target opens a scale-up window at the previous reading",
			state: windows{last: last(-10)},
			r:     reading{current: 2, total: 16, read: 2},
			now:   at(0),
			want:  decision{replicas: 2, recommended: 4, next: windows{up: window(at(-10), 4)}},
		},
		{
			name:  "without a recent previous reading the window opens now",
			state: windows{last: last(-60)},
			r:     reading{current: 2, total: 16, read: 2},
			now:   at(0),
			want:  decision{replicas: 2, recommended: 4, next: windows{up: window(at(0), 4)}},
		},
		{
			name:  "the window steps up once it has lasted, to the fewest replicas asked for",
			state: windows{up: window(at(-30), 3), last: last(-10)},
			r:     reading{current: 2, total: 16, read: 2},
			now:   at(0),
			want:  decision{replicas: 3, recommended: 4},
		},
		{
			name:  "one second short of the window holds",
			state: windows{up: window(at(-29), 4), last: last(-10)},
			r:     reading{current: 2, total: 16, read: 2},
			now:   at(0),
			want:  decision{replicas: 2, recommended: 4, next: windows{up: window(at(-29), 4)}},
		},
		{
			name:  "one step at most doubles",
			state: windows{up: window(at(-40), 10), last: last(-10)},
			r:     reading{current: 2, total: 40, read: 2},
			now:   at(0),
			want:  decision{replicas: 4, recommended: 4, limited: servingv1alpha1.ReasonScaleUpRate},
		},
		{
			name:  "within the tolerance nothing changes and windows close",
			state: windows{up: window(at(-20), 3), last: last(-10)},
			r:     reading{current: 2, total: 8.7, read: 2},
			now:   at(0),
			want:  decision{replicas: 2, recommended: 2},
		},
		{
			name: "just past the tolerance asks for more",
			r:    reading{current: 2, total: 8.9, read: 2},
			now:  at(0),
			want: decision{replicas: 2, recommended: 3, next: windows{up: window(at(0), 3)}},
		},
		{
			name:  "low load opens a scale-down window",
			state: windows{last: last(-10)},
			r:     reading{current: 4, total: 4, read: 4},
			now:   at(0),
			want:  decision{replicas: 4, recommended: 1, next: windows{down: window(at(-10), 1)}},
		},
		{
			name:  "the scale-down window goes to the most replicas asked for",
			state: windows{down: window(at(-300), 2), last: last(-10)},
			r:     reading{current: 4, total: 4, read: 4},
			now:   at(0),
			want:  decision{replicas: 2, recommended: 1},
		},
		{
			name:  "a scale-down window one second short holds",
			state: windows{down: window(at(-299), 2), last: last(-10)},
			r:     reading{current: 4, total: 4, read: 4},
			now:   at(0),
			want:  decision{replicas: 4, recommended: 1, next: windows{down: window(at(-299), 2)}},
		},
		{
			name:  "a missing replica never lets the load ask for fewer",
			state: windows{down: window(at(-400), 2), last: last(-10)},
			r:     reading{current: 4, total: 1, read: 3, missing: 1},
			now:   at(0),
			want:  decision{replicas: 4, recommended: 4},
		},
		{
			name:  "a missing replica still lets the others' load scale up",
			state: windows{up: window(at(-30), 6), last: last(-10)},
			r:     reading{current: 4, total: 24, read: 3, missing: 1},
			now:   at(0),
			want:  decision{replicas: 6, recommended: 6},
		},
		{
			name:  "no reading holds and closes both windows",
			state: windows{down: window(at(-400), 2), last: last(-10)},
			r:     reading{current: 4},
			now:   at(0),
			want:  decision{replicas: 4, recommended: 4, hold: servingv1alpha1.ReasonScrapeFailed},
		},
		{
			name:  "load beyond maxReplicas is clamped",
			state: windows{up: window(at(-30), 10), last: last(-10)},
			r:     reading{current: 8, total: 400, read: 8},
			now:   at(0),
			want:  decision{replicas: 10, recommended: 10, limited: servingv1alpha1.ReasonMaxReplicas},
		},
		{
			name: "no load asks for minReplicas",
			r:    reading{current: 1, total: 0, read: 1},
			now:  at(0),
			want: decision{replicas: 1, recommended: 1, limited: servingv1alpha1.ReasonMinReplicas},
		},
		{
			name:  "spec.replicas above maxReplicas is lowered at once",
			state: windows{last: last(-10)},
			r:     reading{current: 12, total: 400, read: 12},
			now:   at(0),
			want:  decision{replicas: 10, recommended: 10, hold: servingv1alpha1.ReasonOutOfBounds},
		},
		{
			name:   "spec.replicas below minReplicas is raised at once, without a reading",
			policy: func() scalePolicy { p := policy; p.min = 3; return p }(),
			r:      reading{current: 1},
			now:    at(0),
			want:   decision{replicas: 3, recommended: 3, hold: servingv1alpha1.ReasonOutOfBounds},
		},
		{
			name:  "a window left from another replica count is not reused",
			state: windows{up: window(at(-60), 3), last: last(-10)},
			r:     reading{current: 4, total: 24, read: 4},
			now:   at(0),
			want:  decision{replicas: 4, recommended: 6, next: windows{up: window(at(-10), 6)}},
		},
		{
			name:   "a zero window acts on the first reading",
			policy: func() scalePolicy { p := policy; p.upWindow = 0; return p }(),
			r:      reading{current: 2, total: 12, read: 2},
			now:    at(0),
			want:   decision{replicas: 3, recommended: 3},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.policy
			if p.target == 0 {
				p = policy
			}
			got := decide(p, tt.state, tt.r, tt.now)
			now := tt.now
			tt.want.next.last = &now
			NewWithT(t).Expect(got).To(Equal(tt.want))
		})
	}
}

// TestDecideReactsWithinTheWindow replays readings every sync period against load that
// rises just after one: the default 30 s window scales up at most 30 s after the rise.
func TestDecideReactsWithinTheWindow(t *testing.T) {
	g := NewWithT(t)
	policy := scalePolicy{min: 1, max: 10, target: 1, tolerance: 0.1, upWindow: 30 * time.Second,
		downWindow: 300 * time.Second, samplePeriod: 10 * time.Second}
	var w windows
	rise := at(1) // just after the reading at 0
	for now := at(0); now.Before(at(120)); now = now.Add(10 * time.Second) {
		total := 0.0
		if !now.Before(rise) {
			total = 5
		}
		d := decide(policy, w, reading{current: 1, total: total, read: 1}, now)
		if d.replicas > 1 {
			g.Expect(now.Sub(rise)).To(BeNumerically("<=", 30*time.Second))
			g.Expect(d.replicas).To(Equal(int32(2)))
			return
		}
		w = d.next
	}
	t.Fatal("never scaled up")
}
