package scheduler_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/moe-operator/moe-operator/engine/scheduler"
)

// BenchmarkStreams measures aggregate decode throughput with n concurrent
// greedy requests on the tiny model (engine and scheduler overhead; run
// `moe loadgen` against `moe serve` for real model sizes).
func BenchmarkStreams(b *testing.B) {
	for _, n := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			s := newScheduler(b, scheduler.Config{})
			const tokens = 64
			b.ReportAllocs()
			total := 0
			for b.Loop() {
				var wg sync.WaitGroup
				for i := range n {
					st, err := s.Submit(context.Background(), scheduler.Request{Prompt: prompt(uint64(i), 16), MaxTokens: tokens, IgnoreEOS: true})
					if err != nil {
						b.Fatal(err)
					}
					wg.Go(func() {
						if _, err := st.Collect(context.Background()); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
				total += n * tokens
			}
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "tok/s")
			b.ReportMetric(float64(total)/float64(b.N), "tok/op")
		})
	}
}
