// Package logitcheck holds the reference computations that the engine's
// tests compare backends and samplers with: how far apart two sets of
// logits are, and which tokens a row ranks first.
package logitcheck

import (
	"math"
	"slices"
	"sort"
)

// Diff returns the largest and the median per-position largest absolute
// difference of two logit sets of vocabulary V (len(a)/V positions).
func Diff(a, b []float32, V int) (worst, median float64) {
	var per []float64
	for p := 0; p < len(a)/V; p++ {
		m := 0.0
		for i := p * V; i < (p+1)*V; i++ {
			m = math.Max(m, math.Abs(float64(a[i]-b[i])))
		}
		per = append(per, m)
		worst = math.Max(worst, m)
	}
	sort.Float64s(per)
	return worst, per[len(per)/2]
}

// Ranked returns every token id of row, best first, ties to the lower id:
// the order that model.ForwardTop and the samplers use.
func Ranked(row []float32) []int32 {
	ids := make([]int32, len(row))
	for i := range ids {
		ids[i] = int32(i)
	}
	slices.SortStableFunc(ids, func(a, b int32) int {
		switch {
		case row[a] > row[b]:
			return -1
		case row[a] < row[b]:
			return 1
		}
		return 0
	})
	return ids
}
