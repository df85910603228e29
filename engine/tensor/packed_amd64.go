//go:build amd64 && !purego

package tensor

import (
	"unsafe"

	"golang.org/x/sys/cpu"
)

// useVNNI selects the AVX512-VNNI packed kernels (EVEX vpdpbusd on 256-bit
// registers, which needs AVX512VL too).
var useVNNI = useAVX2 && cpu.X86.HasAVX512VNNI && cpu.X86.HasAVX512VL

//go:noescape
func gemvQ4_0x8VNNI(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)

//go:noescape
func gemmQ4_0x8VNNI(w *byte, x *int8, d *float32, s *int32, nb int, xstride int, y *float32, ystride int)

//go:noescape
func gemvQ4_0x8AVX2(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)

//go:noescape
func gemmQ4_0x8AVX2(w *byte, x *int8, d *float32, s *int32, nb int, xstride int, y *float32, ystride int)

//go:noescape
func gemvQ8_0x8VNNI(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)

//go:noescape
func gemmQ8_0x8VNNI(w *byte, x *int8, d *float32, s *int32, nb int, xstride int, y *float32, ystride int)

//go:noescape
func gemmQ8_0x8VNNI8(w *byte, x *int8, d *float32, s *int32, nb int, xstride int, y *float32, ystride int)

//go:noescape
func gemvQ8_0x8AVX2(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)

//go:noescape
func gemmQ8_0x8AVX2(w *byte, x *int8, d *float32, s *int32, nb int, xstride int, y *float32, ystride int)

//go:noescape
func gemvQ4Kx8VNNI(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)

//go:noescape
func gemvQ4Kx8AVX2(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)

//go:noescape
func gemvQ6Kx8VNNI(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)

//go:noescape
func gemvQ6Kx8AVX2(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)

type gemvFunc func(w *byte, x *int8, d *float32, s *int32, nb int, y *float32)
type gemmFunc func(w *byte, x *int8, d *float32, s *int32, nb int, xstride int, y *float32, ystride int)

func init() {
	if useAVX2 {
		usePackedISA(useVNNI)
	}
}

// packedISAs lists the packed kernel sets this CPU can run (for tests).
func packedISAs() []bool {
	switch {
	case useVNNI:
		return []bool{false, true}
	case useAVX2:
		return []bool{false}
	}
	return nil
}

// usePackedISA installs the AVX2 or, with vnni, the AVX512-VNNI kernels.
func usePackedISA(vnni bool) {
	asm := map[DType][2]any{
		Q4_0: {gemvFunc(gemvQ4_0x8AVX2), gemmFunc(gemmQ4_0x8AVX2)},
		Q8_0: {gemvFunc(gemvQ8_0x8AVX2), gemmFunc(gemmQ8_0x8AVX2)},
	}
	if vnni {
		asm[Q4_0] = [2]any{gemvFunc(gemvQ4_0x8VNNI), gemmFunc(gemmQ4_0x8VNNI)}
		asm[Q8_0] = [2]any{gemvFunc(gemvQ8_0x8VNNI), gemmFunc(gemmQ8_0x8VNNI)}
	}
	kquants := map[DType]gemvFunc{Q4_K: gemvQ4Kx8AVX2, Q6_K: gemvQ6Kx8AVX2}
	if vnni {
		kquants = map[DType]gemvFunc{Q4_K: gemvQ4Kx8VNNI, Q6_K: gemvQ6Kx8VNNI}
	}
	for t, gemv := range kquants {
		kernel := func(w []byte, a *Acts, r int, y []float32) {
			nb := a.Cols / QK
			gemv(unsafe.SliceData(w), &a.Q[r*a.Cols], &a.D[r*nb], &a.Sum[r*a.Cols/16], nb, unsafe.SliceData(y[:packRows]))
		}
		packedKernels[t] = packedKernel{
			gemv: kernel,
			gemm4: func(w []byte, a *Acts, r int, y []float32, ystride int) {
				for i := 0; i < 4; i++ {
					kernel(w, a, r+i, y[i*ystride:])
				}
			},
		}
	}
	for t, fs := range asm {
		gemv, gemm := fs[0].(gemvFunc), fs[1].(gemmFunc)
		packedKernels[t] = packedKernel{
			gemv: func(w []byte, a *Acts, r int, y []float32) {
				nb := a.Cols / 32
				gemv(unsafe.SliceData(w), &a.Q[r*a.Cols], &a.D[r*nb], &a.Sum[r*nb], nb, unsafe.SliceData(y[:packRows]))
			},
			gemm4: func(w []byte, a *Acts, r int, y []float32, ystride int) {
				nb := a.Cols / 32
				_ = y[3*ystride+packRows-1]
				_ = a.Q[(r+4)*a.Cols-1]
				gemm(unsafe.SliceData(w), &a.Q[r*a.Cols], &a.D[r*nb], &a.Sum[r*nb], nb, a.Cols, unsafe.SliceData(y), 4*ystride)
			},
			fused: true,
		}
	}
	if vnni {
		k := packedKernels[Q8_0]
		k.gemm8 = func(w []byte, a *Acts, r int, y []float32, ystride int) {
			nb := a.Cols / 32
			_ = y[7*ystride+packRows-1]
			_ = a.Q[(r+8)*a.Cols-1]
			gemmQ8_0x8VNNI8(unsafe.SliceData(w), &a.Q[r*a.Cols], &a.D[r*nb], &a.Sum[r*nb], nb, a.Cols, unsafe.SliceData(y), 4*ystride)
		}
		packedKernels[Q8_0] = k
	}
}
