package model

import (
	"math"

	"github.com/moe-operator/moe-operator/engine/tensor"
)

// rmsNorm sets dst = x / sqrt(mean(x²) + eps) * weight, accumulating the
// mean in float64 as llama.cpp does.
func rmsNorm(dst, x, weight []float32, eps float32) {
	var ss float64
	for _, v := range x {
		ss += float64(v * v)
	}
	mean := float32(ss / float64(len(x)))
	scale := 1 / float32(math.Sqrt(float64(mean+eps)))
	for i, v := range x {
		dst[i] = v * scale * weight[i]
	}
}

// ropeTable fills cos and sin (each headDim/2 long) for position pos:
// angle_i = pos * theta^(-2i/headDim), computed as llama.cpp does, by
// repeated float32 multiplication.
func ropeTable(cos, sin []float32, pos int, theta float64, headDim int) {
	scale := float32(math.Pow(theta, -2/float64(headDim)))
	a := float32(pos)
	for i := range cos {
		s, c := math.Sincos(float64(a))
		cos[i], sin[i] = float32(c), float32(s)
		a *= scale
	}
}

// applyRope rotates each head of x (heads × headDim) by the angles in cos
// and sin, pairing elements as style says.
func applyRope(x []float32, heads, headDim int, cos, sin []float32, style RopeStyle) {
	half := headDim / 2
	for h := 0; h < heads; h++ {
		v := x[h*headDim : (h+1)*headDim]
		if style == RopeAdjacent {
			for i := 0; i < half; i++ {
				x0, x1 := v[2*i], v[2*i+1]
				v[2*i] = x0*cos[i] - x1*sin[i]
				v[2*i+1] = x0*sin[i] + x1*cos[i]
			}
		} else {
			for i := 0; i < half; i++ {
				x0, x1 := v[i], v[i+half]
				v[i] = x0*cos[i] - x1*sin[i]
				v[i+half] = x0*sin[i] + x1*cos[i]
			}
		}
	}
}

// softmax replaces x by its softmax, summing in float64.
func softmax(x []float32) {
	mx := x[0]
	for _, v := range x[1:] {
		mx = max(mx, v)
	}
	var sum float64
	for i, v := range x {
		e := float32(math.Exp(float64(v - mx)))
		x[i] = e
		sum += float64(e)
	}
	inv := float32(1 / sum)
	for i := range x {
		x[i] *= inv
	}
}

// dotF32 is the float32 dot product used by attention.
func dotF32(a, b []float32) float32 { return tensor.DotF32(a, b) }

// axpy sets y += alpha*x.
func axpy(y []float32, alpha float32, x []float32) { tensor.Axpy(y, alpha, x) }
