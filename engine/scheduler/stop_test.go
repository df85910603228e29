package scheduler

import (
	"strings"
	"testing"
)

func TestStopMatcherHoldsBackPossibleStopPrefixes(t *testing.T) {
	tests := []struct {
		name     string
		stops    []string
		pieces   []string
		released []string // what each push releases
		stopped  int      // index of the push that matches, -1 for none
	}{
		{"no stop strings pass text through", nil, []string{"a", "b"}, []string{"a", "b"}, -1},
		{"a stop inside one piece", []string{"END"}, []string{"abENDcd"}, []string{"ab"}, 0},
		{"a stop split over pieces", []string{"END"}, []string{"xE", "N", "Dyz"}, []string{"x", "", ""}, 2},
		{"a false start is released once it cannot match", []string{"END"}, []string{"xEN", "o"}, []string{"x", "ENo"}, -1},
		{"the earliest of several stops wins", []string{"cd", "b"}, []string{"abcd"}, []string{"a"}, 0},
		{"overlapping prefixes keep the longest possible tail", []string{"aab"}, []string{"aa", "a", "b"}, []string{"", "a", ""}, 2},
		{"multibyte stop", []string{"é!"}, []string{"café", "!"}, []string{"caf", ""}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := stopMatcher{stops: tt.stops}
			stoppedAt := -1
			for i, p := range tt.pieces {
				out, stopped := m.push(p)
				if out != tt.released[i] {
					t.Errorf("push %d (%q) released %q, want %q", i, p, out, tt.released[i])
				}
				if stopped {
					stoppedAt = i
					break
				}
			}
			if stoppedAt != tt.stopped {
				t.Errorf("stopped at push %d, want %d", stoppedAt, tt.stopped)
			}
		})
	}
}

func TestStopMatcherReleasesEverythingWithoutAMatch(t *testing.T) {
	m := stopMatcher{stops: []string{"</answer>"}}
	var sb strings.Builder
	for _, p := range []string{"the ", "</ans", "wer", " is <", "/"} {
		out, stopped := m.push(p)
		if stopped {
			t.Fatal("matched without a stop string")
		}
		sb.WriteString(out)
	}
	sb.WriteString(m.flush())
	if sb.String() != "the </answer is </" {
		t.Errorf("released %q", sb.String())
	}
}
