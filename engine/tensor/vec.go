package tensor

import (
	"math"
	"unsafe"
)

// DotF32 returns sum(a[i]*b[i]) over len(a) elements; b must be at least as
// long as a.
func DotF32(a, b []float32) float32 {
	b = b[:len(a)]
	if len(a) == 0 {
		return 0
	}
	w := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(a))), 4*len(a))
	return dotF32Floats(w, b)
}

// Axpy sets y[i] += alpha*x[i] over len(y) elements.
func Axpy(y []float32, alpha float32, x []float32) {
	x = x[:len(y)]
	n8 := axpyFast(y, alpha, x)
	axpyGeneric(y[n8:], alpha, x[n8:])
}

func axpyGeneric(y []float32, alpha float32, x []float32) {
	i := 0
	for ; i+4 <= len(y); i += 4 {
		y[i] += alpha * x[i]
		y[i+1] += alpha * x[i+1]
		y[i+2] += alpha * x[i+2]
		y[i+3] += alpha * x[i+3]
	}
	for ; i < len(y); i++ {
		y[i] += alpha * x[i]
	}
}

// SwiGLU sets g[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i], the
// experts' gated activation, over len(g) elements.
func SwiGLU(g, u []float32) {
	u = u[:len(g)]
	n8 := swigluFast(g, u)
	for i := n8; i < len(g); i++ {
		g[i] = g[i] / (1 + float32(math.Exp(float64(-g[i])))) * u[i]
	}
}
