package tensor

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

var weightTypes = []DType{F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K}

func randFloats(rng *rand.Rand, n int, scale float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64()) * scale
	}
	return x
}

func randMatrix(t *testing.T, rng *rand.Rand, typ DType, rows, cols int) (*Matrix, []float32) {
	t.Helper()
	vals := randFloats(rng, rows*cols, 0.5)
	rb, err := typ.RowBytes(cols)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, rows*rb)
	for r := 0; r < rows; r++ {
		Quantize(data[r*rb:(r+1)*rb], vals[r*cols:(r+1)*cols], typ, cols)
	}
	m, err := NewMatrix(typ, rows, cols, data)
	if err != nil {
		t.Fatal(err)
	}
	return m, vals
}

func colsFor(typ DType) []int {
	if typ.BlockSize() == QK {
		return []int{256, 512, 1024}
	}
	if typ.BlockSize() == 32 {
		return []int{32, 64, 96, 1024}
	}
	return []int{1, 7, 8, 33, 64, 100, 1024}
}

func TestMatMulEqualsReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pool := NewPool(3)
	defer pool.Close()
	for _, typ := range weightTypes {
		for _, cols := range colsFor(typ) {
			for _, n := range []int{1, 3, 4, 9} {
				t.Run(fmt.Sprintf("%s/cols=%d/rows=%d", typ, cols, n), func(t *testing.T) {
					w, _ := randMatrix(t, rng, typ, 37, cols)
					x := randFloats(rng, n*cols, 1)
					var a Acts
					a.Set(typ.VecDotType(), x, n, cols)
					got := make([]float32, n*w.Rows)
					want := make([]float32, n*w.Rows)
					MatMul(pool, got, w, &a)
					MatMulRef(want, w, &a)
					for i := range got {
						// The fast kernels accumulate in float32 in another order.
						if e := relErr(got[i], want[i]); e > 2e-5 {
							t.Fatalf("element %d: fast %g, reference %g (rel err %.3g)", i, got[i], want[i], e)
						}
					}
				})
			}
		}
	}
}

func TestDequantizeMatchesQuantizedDot(t *testing.T) {
	// The reference dot on quantized activations must equal the float dot
	// of the dequantized weights with the dequantized activations: this ties
	// the block layouts of Dequantize and DotRef together.
	rng := rand.New(rand.NewPCG(3, 4))
	for _, typ := range weightTypes {
		cols := colsFor(typ)[1]
		w, _ := randMatrix(t, rng, typ, 1, cols)
		x := randFloats(rng, cols, 1)
		var a Acts
		a.Set(typ.VecDotType(), x, 1, cols)
		wf := make([]float32, cols)
		Dequantize(wf, w.Data, typ, cols)
		xf := actsDequant(&a)
		var want float64
		for i := range wf {
			want += float64(wf[i]) * float64(xf[i])
		}
		got := DotRef(typ, w.Data, &a, 0)
		if e := relErr(got, float32(want)); e > 1e-5 {
			t.Errorf("%s: DotRef %g, dequantized dot %g", typ, got, want)
		}
	}
}

func actsDequant(a *Acts) []float32 {
	switch a.Type {
	case Q8_0:
		out := make([]float32, a.Cols)
		for i := range out {
			out[i] = float32(a.Q[i]) * a.D[i/32]
		}
		return out
	case Q8_K:
		out := make([]float32, a.Cols)
		for i := range out {
			out[i] = float32(a.Q[i]) * a.D[i/QK]
		}
		return out
	}
	return a.F[:a.Cols]
}

func TestQuantizationError(t *testing.T) {
	// Round-trip error relative to the RMS of the data, per type. The bounds
	// are loose versions of what these formats achieve on Gaussian data.
	bounds := map[DType]float64{F32: 0, F16: 1e-3, BF16: 8e-3, Q8_0: 0.01, Q6_K: 0.03, Q4_K: 0.12, Q4_0: 0.15}
	rng := rand.New(rand.NewPCG(5, 6))
	n := 4096
	x := randFloats(rng, n, 1)
	for typ, bound := range bounds {
		rb, _ := typ.RowBytes(n)
		buf := make([]byte, rb)
		Quantize(buf, x, typ, n)
		y := make([]float32, n)
		Dequantize(y, buf, typ, n)
		var se, ss float64
		for i := range x {
			d := float64(x[i] - y[i])
			se += d * d
			ss += float64(x[i]) * float64(x[i])
		}
		rel := math.Sqrt(se / ss)
		if rel > bound {
			t.Errorf("%s: relative RMS round-trip error %.4f exceeds %.4f", typ, rel, bound)
		}
		t.Logf("%s: relative RMS error %.5f", typ, rel)
	}
}

func TestQ8_0ActivationQuantizationRoundsLikeLlamaCpp(t *testing.T) {
	// amax 127 makes the multiplier exactly 1, so x.5 values show the
	// rounding rule: llama.cpp's AVX2 path rounds half to even.
	x := make([]float32, 32)
	x[0] = 127
	x[1] = 2.5
	x[2] = -3.5
	x[3] = 0.5
	var a Acts
	a.Set(Q8_0, x, 1, 32)
	if a.Q[0] != 127 || a.Q[1] != 2 || a.Q[2] != -4 || a.Q[3] != 0 {
		t.Fatalf("quants %v, want 127 2 -4 0", a.Q[:4])
	}
	if a.D[0] != 1 {
		t.Fatalf("scale %g, want 1", a.D[0])
	}
}

func TestQ4_0QuantizationMatchesLlamaCppReference(t *testing.T) {
	// quantize_row_q4_0_ref: the element of largest magnitude sets d = max/-8,
	// and q = min(15, int(x/d + 8.5)) truncates.
	x := make([]float32, 32)
	for i := range x {
		x[i] = float32(i%16) - 8
	}
	x[31] = -16 // largest magnitude, negative: d = 2
	buf := make([]byte, 18)
	Quantize(buf, x, Q4_0, 32)
	y := make([]float32, 32)
	Dequantize(y, buf, Q4_0, 32)
	if y[31] != -16 {
		t.Fatalf("extreme element %g, want -16", y[31])
	}
	// x=-8 -> -8/2+8.5 = 4.5 -> 4 -> (4-8)*2 = -8
	if y[0] != -8 {
		t.Fatalf("y[0] = %g, want -8", y[0])
	}
	// x=-7 -> -3.5+8.5 = 5 -> (5-8)*2 = -6 (truncation after +8.5 rounds half up)
	if y[1] != -6 {
		t.Fatalf("y[1] = %g, want -6", y[1])
	}
}

func TestPoolCoversEveryIndexOnce(t *testing.T) {
	for _, threads := range []int{1, 2, 5} {
		p := NewPool(threads)
		for _, n := range []int{0, 1, 10, 1000} {
			for _, grain := range []int{1, 3, 64, 5000} {
				seen := make([]int32, n)
				p.For(n, grain, func(lo, hi int) {
					for i := lo; i < hi; i++ {
						seen[i]++
					}
				})
				for i, c := range seen {
					if c != 1 {
						t.Fatalf("threads=%d n=%d grain=%d: index %d visited %d times", threads, n, grain, i, c)
					}
				}
			}
		}
		p.Close()
	}
}

func FuzzDotEqualsReference(f *testing.F) {
	f.Add(uint8(3), uint64(1), uint8(2))
	f.Add(uint8(6), uint64(7), uint8(1))
	f.Fuzz(func(t *testing.T, typeIdx uint8, seed uint64, blocks uint8) {
		typ := weightTypes[int(typeIdx)%len(weightTypes)]
		bs := typ.BlockSize()
		if bs == 1 {
			bs = 8
		}
		cols := bs * (1 + int(blocks)%8)
		rng := rand.New(rand.NewPCG(seed, 99))
		w, _ := randMatrix(t, rng, typ, 1, cols)
		x := randFloats(rng, 4*cols, float32(1+seed%100))
		var a Acts
		a.Set(typ.VecDotType(), x, 4, cols)
		for r := 0; r < 4; r++ {
			got, want := Dot(typ, w.Data, &a, r), DotRef(typ, w.Data, &a, r)
			scale := math.Max(1, float64(a.Cols)*float64(1+seed%100))
			if math.Abs(float64(got-want)) > 1e-5*scale {
				t.Fatalf("%s cols=%d row %d: Dot %g, DotRef %g", typ, cols, r, got, want)
			}
		}
	})
}

func TestMultiRowKernelsEqualSingleRowBitForBit(t *testing.T) {
	// A token's result must not depend on which other tokens share its
	// batch, so the four-row kernels must sum exactly like the one-row ones.
	rng := rand.New(rand.NewPCG(7, 8))
	for _, typ := range weightTypes {
		k := kernelFor(typ)
		if k.dot4 == nil {
			continue
		}
		cols := 1024
		w, _ := randMatrix(t, rng, typ, 1, cols)
		x := randFloats(rng, 4*cols, 1)
		var a Acts
		a.Set(typ.VecDotType(), x, 4, cols)
		var out [4]float32
		k.dot4(w.Data, &a, 0, &out)
		for r := 0; r < 4; r++ {
			if one := k.dot(w.Data, &a, r); one != out[r] {
				t.Errorf("%s row %d: dot4 %v, dot %v", typ, r, out[r], one)
			}
		}
	}
}

func TestPackedMatMulEqualsReference(t *testing.T) {
	for _, isa := range packedISAs() {
		usePackedISA(isa)
		t.Run(fmt.Sprintf("vnni=%v", isa), testPackedMatMul)
	}
	useGenericPacked()
	t.Run("generic", testPackedMatMul)
	if isas := packedISAs(); len(isas) > 0 {
		usePackedISA(isas[len(isas)-1])
	}
}

func testPackedMatMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	pool := NewPool(2)
	defer pool.Close()
	for _, typ := range []DType{Q8_0, Q4_0, Q4_K, Q6_K} {
		for _, rows := range []int{8, 19, 64} {
			for _, n := range []int{1, 4, 7, 8, 13, 16} {
				w, _ := randMatrix(t, rng, typ, rows, 512)
				pw := Pack(w)
				if !pw.Packed() {
					t.Fatalf("%s %d rows: not packed", typ, rows)
				}
				x := randFloats(rng, n*512, 1)
				var a Acts
				a.Set(typ.VecDotType(), x, n, 512)
				got := make([]float32, n*rows)
				want := make([]float32, n*rows)
				MatMul(pool, got, pw, &a)
				MatMulRef(want, w, &a)
				for i := range got {
					if e := relErr(got[i], want[i]); e > 2e-5 {
						t.Fatalf("%s rows=%d n=%d element %d: packed %g, reference %g", typ, rows, n, i, got[i], want[i])
					}
				}
				// A row's result must not depend on the other activation
				// rows in the call: compare with one row at a time.
				for i := 0; i < n; i++ {
					var one Acts
					one.Set(typ.VecDotType(), x[i*512:(i+1)*512], 1, 512)
					y := make([]float32, rows)
					MatMul(nil, y, pw, &one)
					for o := range y {
						if y[o] != got[i*rows+o] {
							t.Fatalf("%s rows=%d: activation %d row %d: alone %v, in a batch of %d %v", typ, rows, i, o, y[o], n, got[i*rows+o])
						}
					}
				}
			}
		}
	}
}

func TestQ8_0ActivationKernelEqualsReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for trial := 0; trial < 200; trial++ {
		nb := 1 + trial%9
		x := randFloats(rng, 32*nb, float32(math.Pow(10, float64(trial%7-3))))
		if trial%13 == 0 {
			clear(x[:32]) // an all-zero block
		}
		if trial%17 == 0 {
			x[5] = 2.5 * x[3] // assorted magnitudes
		}
		q1, q2 := make([]int8, len(x)), make([]int8, len(x))
		d1, d2 := make([]float32, nb), make([]float32, nb)
		s1, s2 := make([]int32, nb), make([]int32, nb)
		quantizeActsQ8_0(q1, d1, s1, x)
		quantizeActsQ8_0Generic(q2, d2, s2, x)
		if !slices.Equal(q1, q2) || !slices.Equal(d1, d2) || !slices.Equal(s1, s2) {
			t.Fatalf("trial %d: fast quantization differs from the reference", trial)
		}
	}
}

func TestAxpy(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, n := range []int{0, 1, 7, 8, 9, 31, 32, 33, 128, 130} {
		x, y := randFloats(rng, n, 1), randFloats(rng, n, 1)
		want := slices.Clone(y)
		for i := range want {
			want[i] = float32(float64(want[i]) + float64(0.37)*float64(x[i]))
		}
		Axpy(y, 0.37, x)
		for i := range y {
			if relErr(y[i], want[i]) > 1e-6 {
				t.Fatalf("n=%d element %d: %g, want %g", n, i, y[i], want[i])
			}
		}
	}
}

func TestSwiGLU(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for _, n := range []int{1, 8, 13, 256} {
		g, u := randFloats(rng, n, 6), randFloats(rng, n, 1)
		g[0], u[0] = -100, 1 // exp overflows in float32: silu is 0
		if n > 1 {
			g[1] = 100
		}
		want := make([]float32, n)
		for i := range g {
			x := float64(g[i])
			want[i] = float32(x / (1 + math.Exp(-x)) * float64(u[i]))
		}
		SwiGLU(g, u)
		for i := range g {
			if math.Abs(float64(g[i]-want[i])) > 4e-7*math.Max(1, math.Abs(float64(want[i]))) {
				t.Fatalf("n=%d element %d: %g, want %g", n, i, g[i], want[i])
			}
		}
	}
}
