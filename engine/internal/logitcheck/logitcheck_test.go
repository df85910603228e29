package logitcheck

import (
	"slices"
	"testing"
)

func TestDiff(t *testing.T) {
	a := []float32{0, 0, 0, 0, 0, 0}
	b := []float32{0.5, 0, 0, -0.25, 0, 2} // per position (V=2): 0.5, 0.25, 2
	worst, median := Diff(a, b, 2)
	if worst != 2 || median != 0.5 {
		t.Errorf("Diff = %g, %g, want 2, 0.5", worst, median)
	}
}

func TestRankedBreaksTiesToTheLowerID(t *testing.T) {
	got := Ranked([]float32{1, 3, 3, -1, 2})
	if want := []int32{1, 2, 4, 0, 3}; !slices.Equal(got, want) {
		t.Errorf("Ranked = %v, want %v", got, want)
	}
}
