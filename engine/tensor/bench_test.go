package tensor

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Matrices are packed where the type has a packed layout, as models are.

// BenchmarkMatVec measures y = W x for each weight type at a cache-resident
// size (256 rows) and a streaming size (8192 rows, larger than the caches),
// reporting the weight bytes read per second.
func BenchmarkMatVec(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, typ := range weightTypes {
		for _, rows := range []int{256, 8192} {
			cols := 1024
			b.Run(fmt.Sprintf("%s/%dx%d", typ, rows, cols), func(b *testing.B) {
				w := Pack(benchMatrix(b, rng, typ, rows, cols))
				x := randFloats(rng, cols, 1)
				y := make([]float32, rows)
				var a Acts
				for b.Loop() {
					MatVec(nil, y, w, x, &a)
				}
				b.ReportMetric(float64(w.Bytes())*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
			})
		}
	}
}

// BenchmarkMatMul measures a 64-token batch against a 2048x1024 matrix, the
// shape of prefill, in GFLOP/s (2 flops per multiply-add).
func BenchmarkMatMul(b *testing.B) {
	rng := rand.New(rand.NewPCG(2, 2))
	for _, typ := range weightTypes {
		rows, cols, n := 2048, 1024, 64
		b.Run(fmt.Sprintf("%s/%dx%dx%d", typ, rows, cols, n), func(b *testing.B) {
			w := Pack(benchMatrix(b, rng, typ, rows, cols))
			x := randFloats(rng, n*cols, 1)
			y := make([]float32, n*rows)
			var a Acts
			a.Set(typ.VecDotType(), x, n, cols)
			for b.Loop() {
				MatMul(nil, y, w, &a)
			}
			b.ReportMetric(2*float64(rows*cols*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

func benchMatrix(b *testing.B, rng *rand.Rand, typ DType, rows, cols int) *Matrix {
	vals := randFloats(rng, rows*cols, 0.5)
	rb, _ := typ.RowBytes(cols)
	data := make([]byte, rows*rb)
	for r := 0; r < rows; r++ {
		Quantize(data[r*rb:(r+1)*rb], vals[r*cols:(r+1)*cols], typ, cols)
	}
	m, err := NewMatrix(typ, rows, cols, data)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkQuantize measures converting float32 rows to each stored type,
// in input bytes (as F32) per second.
func BenchmarkQuantize(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 3))
	x := randFloats(rng, 1<<16, 1)
	for _, typ := range []DType{F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K} {
		b.Run(typ.String(), func(b *testing.B) {
			rb, _ := typ.RowBytes(len(x))
			out := make([]byte, rb)
			for b.Loop() {
				Quantize(out, x, typ, len(x))
			}
			b.ReportMetric(float64(4*len(x))*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
		})
	}
}

// BenchmarkQ8_0Rows compares the packed Q8_0 kernels on a batch of activation rows, with
// and without the 8-row kernel (where the CPU has one), at the sizes of mini's attention
// projection (1024x1024) and of a 32,000-token output head (32000x1024): a decode step at
// batch n.
func BenchmarkQ8_0Rows(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 3))
	saved := packedKernels[Q8_0]
	defer func() { packedKernels[Q8_0] = saved }()
	for _, rows := range []int{1024, 32000} {
		cols := 1024
		w := Pack(benchMatrix(b, rng, Q8_0, rows, cols))
		for _, n := range []int{8, 16} {
			x := randFloats(rng, n*cols, 1)
			y := make([]float32, n*rows)
			var a Acts
			a.Set(Q8_0.VecDotType(), x, n, cols)
			for _, kernel := range []string{"gemm4", "gemm8"} {
				k := saved
				if kernel == "gemm4" {
					k.gemm8 = nil
				} else if k.gemm8 == nil {
					continue
				}
				b.Run(fmt.Sprintf("%dx%d/n=%d/kernel=%s", rows, cols, n, kernel), func(b *testing.B) {
					packedKernels[Q8_0] = k
					for b.Loop() {
						MatMul(nil, y, w, &a)
					}
					b.ReportMetric(2*float64(rows*cols*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}
