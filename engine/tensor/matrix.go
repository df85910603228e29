package tensor

import "fmt"

// Matrix is a read-only view of a weight matrix stored row by row in its
// file type: Rows rows of Cols elements (ggml ne0 = Cols). Data usually
// points into a memory-mapped model file.
type Matrix struct {
	Type       DType
	Rows, Cols int
	Data       []byte
	rowBytes   int

	packed     []byte // rows [0, packedRows) interleaved by Pack, or nil
	packedRows int
}

// NewMatrix wraps data as a rows x cols matrix of type t. data must hold
// exactly rows whole rows.
func NewMatrix(t DType, rows, cols int, data []byte) (*Matrix, error) {
	rb, err := t.RowBytes(cols)
	if err != nil {
		return nil, err
	}
	if len(data) != rows*rb {
		return nil, fmt.Errorf("tensor: %dx%d %s matrix needs %d bytes, have %d", rows, cols, t, rows*rb, len(data))
	}
	return &Matrix{Type: t, Rows: rows, Cols: cols, Data: data, rowBytes: rb}, nil
}

// RowBytes is the size of one row in bytes.
func (m *Matrix) RowBytes() int { return m.rowBytes }

// Row returns row r's bytes. For a packed matrix only the rows past the
// packed groups are stored row by row.
func (m *Matrix) Row(r int) []byte {
	if m.packed != nil {
		if r < m.packedRows {
			panic(fmt.Sprintf("tensor: row %d of a packed matrix is interleaved", r))
		}
		r -= m.packedRows
	}
	return m.Data[r*m.rowBytes : (r+1)*m.rowBytes]
}

// RowRange returns the sub-matrix of rows [lo, hi) sharing m's storage.
// m must not be packed.
func (m *Matrix) RowRange(lo, hi int) *Matrix {
	if m.packed != nil {
		panic("tensor: RowRange of a packed matrix")
	}
	if lo < 0 || hi > m.Rows || lo > hi {
		panic(fmt.Sprintf("tensor: row range [%d,%d) of %d rows", lo, hi, m.Rows))
	}
	// The view uses the original layout; Pack it again if needed.
	return &Matrix{Type: m.Type, Rows: hi - lo, Cols: m.Cols, Data: m.Data[lo*m.rowBytes : hi*m.rowBytes], rowBytes: m.rowBytes}
}

// Bytes is the storage size of the matrix.
func (m *Matrix) Bytes() int { return len(m.Data) + len(m.packed) }

func checkMatMul(dst []float32, w *Matrix, a *Acts) {
	if a.Type != w.Type.VecDotType() {
		panic(fmt.Sprintf("tensor: %s matrix needs %s activations, have %s", w.Type, w.Type.VecDotType(), a.Type))
	}
	if a.Cols != w.Cols {
		panic(fmt.Sprintf("tensor: matrix has %d columns, activations %d", w.Cols, a.Cols))
	}
	if len(dst) < a.Rows*w.Rows {
		panic(fmt.Sprintf("tensor: dst holds %d values, need %d", len(dst), a.Rows*w.Rows))
	}
}

// ColRange returns a copy of columns [lo, hi) of m as a new matrix. lo and
// hi must fall on block boundaries of m's type. Tensor-parallel shards use
// it for the projections they split by input.
func (m *Matrix) ColRange(lo, hi int) (*Matrix, error) {
	if m.packed != nil {
		panic("tensor: ColRange of a packed matrix")
	}
	bs := m.Type.BlockSize()
	if lo < 0 || hi > m.Cols || lo > hi || lo%bs != 0 || hi%bs != 0 {
		return nil, fmt.Errorf("tensor: columns [%d,%d) of a %d-column %s matrix do not fall on %d-element block boundaries", lo, hi, m.Cols, m.Type, bs)
	}
	b0 := lo / bs * m.Type.BlockBytes()
	b1 := hi / bs * m.Type.BlockBytes()
	out := make([]byte, 0, m.Rows*(b1-b0))
	for r := 0; r < m.Rows; r++ {
		out = append(out, m.Row(r)[b0:b1]...)
	}
	return NewMatrix(m.Type, m.Rows, hi-lo, out)
}
