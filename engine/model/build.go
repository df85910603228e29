package model

import (
	"fmt"
	"runtime"
	"unsafe"

	"github.com/moe-operator/moe-operator/engine/tensor"
)

// builder turns Weights into shard matrices: convert (quantize at load),
// split for the shard, pack, release the source. One matrix at a time.
type builder struct {
	w          *Weights
	target     *tensor.DType // nil: keep the file's types
	pool       *tensor.Pool
	progress   func(done, total int64)
	uploading  bool // to an accelerator: progress is reported even without conversion
	done       int64
	total      int64
	expertType tensor.DType
}

// matrices lists every weight matrix of w.
func (b *builder) matrices() []*tensor.Matrix {
	w := b.w
	out := []*tensor.Matrix{w.Embed}
	if w.Output != w.Embed {
		out = append(out, w.Output)
	}
	for i := range w.Layers {
		l := &w.Layers[i]
		out = append(out, l.Wq, l.Wk, l.Wv, l.Wo)
		out = append(out, l.Gate...)
		out = append(out, l.Up...)
		out = append(out, l.Down...)
	}
	return out
}

// checkAll refuses an impossible conversion before any work is done.
func (b *builder) checkAll() error {
	for _, m := range b.matrices() {
		b.total += int64(m.Bytes())
		if b.target != nil {
			if err := checkConvertible(m.Type, *b.target); err != nil {
				return err
			}
		}
	}
	return nil
}

// convert returns m in the target type, unpacked (m itself when no
// conversion is due), and reports progress.
func (b *builder) convert(m *tensor.Matrix) (*tensor.Matrix, error) {
	out := m
	if b.target != nil && needsConversion(m.Type, *b.target) {
		var err error
		if out, err = convertMatrix(m, *b.target, b.pool); err != nil {
			return nil, err
		}
	}
	b.progressed(m)
	return out, nil
}

// convertPack returns m in the target type and packed.
func (b *builder) convertPack(m *tensor.Matrix) (*tensor.Matrix, error) {
	if b.target != nil && needsConversion(m.Type, *b.target) {
		out, err := tensor.ConvertPack(m, *b.target, b.pool)
		if err != nil {
			return nil, fmt.Errorf("%w: %d-column rows cannot be stored as %s: %v", ErrQuantization, m.Cols, *b.target, err)
		}
		return out, nil
	}
	return tensor.Pack(m), nil
}

// progressed reports that source matrix m is done.
func (b *builder) progressed(m *tensor.Matrix) {
	b.done += int64(m.Bytes())
	if b.progress != nil && (b.target != nil || b.uploading) {
		b.progress(b.done, b.total)
	}
}

// release drops the file pages under a source matrix once it is converted
// or packed elsewhere.
func (b *builder) release(m *tensor.Matrix) { releaseMapped(m.Data, b.w.Mapped) }

type splitKind int

const (
	splitHeads   splitKind = iota // rows by query head (Wq)
	splitKV                       // rows by kv head (Wk, Wv)
	splitInputs                   // columns by query head (Wo)
	splitFFNRows                  // rows by intermediate slice (gate, up)
	splitFFNCols                  // columns by intermediate slice (down)
)

// piece cuts shard p's part of a converted matrix.
func piece(m *tensor.Matrix, kind splitKind, p shardPlan, hd int, whole bool) (*tensor.Matrix, error) {
	if whole {
		return m, nil
	}
	switch kind {
	case splitHeads:
		return m.RowRange(p.headOffset*hd, (p.headOffset+p.heads)*hd), nil
	case splitKV:
		return m.RowRange(p.kvOffset*hd, (p.kvOffset+p.kvHeads)*hd), nil
	case splitInputs:
		return m.ColRange(p.headOffset*hd, (p.headOffset+p.heads)*hd)
	case splitFFNRows:
		return m.RowRange(p.ffnOffset, p.ffnOffset+p.ffn), nil
	default:
		return m.ColRange(p.ffnOffset, p.ffnOffset+p.ffn)
	}
}

// buildShards fills every shard's layers.
func (b *builder) buildShards(c Config, shards []*shard, plan []shardPlan) error {
	whole := len(shards) == 1
	for l := range b.w.Layers {
		if l > 0 && !whole {
			// Column splits leave a layer's worth of transient copies;
			// collect them now rather than letting the heap grow to twice
			// the model before the collector runs on its own.
			runtime.GC()
		}
		lw := &b.w.Layers[l]
		// place splits src for the shards, then converts and packs each
		// piece in one pass (no unpacked converted copy is ever made).
		place := func(src *tensor.Matrix, kind splitKind, expert int, set func(*shardLayer, *tensor.Matrix)) error {
			stillMapped := false // a piece still reads src's bytes
			for i, s := range shards {
				if expert >= 0 && !plan[i].experts(expert) {
					continue
				}
				pc, err := piece(src, kind, plan[i], c.HeadDim, whole || (expert >= 0 && plan[i].ffn == c.FFN))
				if err != nil {
					return fmt.Errorf("model: layer %d, shard %d: %w", l, i, err)
				}
				if pc, err = b.convertPack(pc); err != nil {
					return fmt.Errorf("model: layer %d: %w", l, err)
				}
				if expert >= 0 {
					b.expertType = pc.Type
				}
				stillMapped = stillMapped || overlaps(pc.Data, src.Data)
				set(&s.layers[l], pc)
			}
			b.progressed(src)
			if !stillMapped {
				b.release(src)
			}
			return nil
		}
		for _, s := range shards {
			s.layers[l].gate = make([]*tensor.Matrix, c.Experts)
			s.layers[l].up = make([]*tensor.Matrix, c.Experts)
			s.layers[l].down = make([]*tensor.Matrix, c.Experts)
		}
		steps := []struct {
			src  *tensor.Matrix
			kind splitKind
			set  func(*shardLayer, *tensor.Matrix)
		}{
			{lw.Wq, splitHeads, func(sl *shardLayer, m *tensor.Matrix) { sl.wq = m }},
			{lw.Wk, splitKV, func(sl *shardLayer, m *tensor.Matrix) { sl.wk = m }},
			{lw.Wv, splitKV, func(sl *shardLayer, m *tensor.Matrix) { sl.wv = m }},
			{lw.Wo, splitInputs, func(sl *shardLayer, m *tensor.Matrix) { sl.wo = m }},
		}
		for _, st := range steps {
			if err := place(st.src, st.kind, -1, st.set); err != nil {
				return err
			}
		}
		for e := 0; e < c.Experts; e++ {
			if err := place(lw.Gate[e], splitFFNRows, e, func(sl *shardLayer, m *tensor.Matrix) { sl.gate[e] = m }); err != nil {
				return err
			}
			if err := place(lw.Up[e], splitFFNRows, e, func(sl *shardLayer, m *tensor.Matrix) { sl.up[e] = m }); err != nil {
				return err
			}
			if err := place(lw.Down[e], splitFFNCols, e, func(sl *shardLayer, m *tensor.Matrix) { sl.down[e] = m }); err != nil {
				return err
			}
		}
	}
	return nil
}

// overlaps reports whether two byte slices share memory.
func overlaps(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	a0, b0 := uintptr(unsafe.Pointer(&a[0])), uintptr(unsafe.Pointer(&b[0]))
	return a0 < b0+uintptr(len(b)) && b0 < a0+uintptr(len(a))
}
