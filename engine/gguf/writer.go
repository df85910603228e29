package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/moe-operator/moe-operator/engine/tensor"
)

// Writer builds a GGUF v3 file. Metadata and tensor infos are collected
// first; tensor data is produced one tensor at a time while writing, so a
// file larger than memory can be written.
type Writer struct {
	kvs       []KV
	kvIndex   map[string]int
	tensors   []writerTensor
	alignment int
}

type writerTensor struct {
	info TensorInfo
	data func() ([]byte, error)
}

// NewWriter returns an empty writer with the default alignment.
func NewWriter() *Writer {
	return &Writer{kvIndex: map[string]int{}, alignment: DefaultAlignment}
}

// Set sets metadata key to v, replacing an earlier value and keeping the
// key's first position. Setting general.alignment changes the alignment.
func (w *Writer) Set(key string, v Value) {
	if key == "general.alignment" {
		if a, ok := v.V.(uint32); ok && a > 0 && a&(a-1) == 0 {
			w.alignment = int(a)
		}
	}
	if i, ok := w.kvIndex[key]; ok {
		w.kvs[i].Value = v
		return
	}
	w.kvIndex[key] = len(w.kvs)
	w.kvs = append(w.kvs, KV{key, v})
}

// AddTensor adds a tensor with ggml dims (innermost first) whose bytes data
// returns when the file is written. data must return exactly the tensor's
// size in bytes.
func (w *Writer) AddTensor(name string, typ tensor.DType, dims []uint64, data func() ([]byte, error)) error {
	if !typ.Known() {
		return fmt.Errorf("gguf: tensor %q: %w %d", name, ErrUnknownType, uint32(typ))
	}
	if len(dims) == 0 || len(dims) > MaxDims {
		return fmt.Errorf("gguf: tensor %q has %d dimensions, want 1 to %d", name, len(dims), MaxDims)
	}
	elems := uint64(1)
	for _, d := range dims {
		elems *= d
	}
	if dims[0]%uint64(typ.BlockSize()) != 0 {
		return fmt.Errorf("gguf: tensor %q: first dimension %d is not a multiple of the %s block size %d", name, dims[0], typ, typ.BlockSize())
	}
	for _, t := range w.tensors {
		if t.info.Name == name {
			return fmt.Errorf("gguf: duplicate tensor %q", name)
		}
	}
	size := elems / uint64(typ.BlockSize()) * uint64(typ.BlockBytes())
	w.tensors = append(w.tensors, writerTensor{
		info: TensorInfo{Name: name, Dims: append([]uint64(nil), dims...), Type: typ, Size: size},
		data: data,
	})
	return nil
}

// AddTensorBytes adds a tensor whose data is already in memory.
func (w *Writer) AddTensorBytes(name string, typ tensor.DType, dims []uint64, data []byte) error {
	return w.AddTensor(name, typ, dims, func() ([]byte, error) { return data, nil })
}

// WriteTo writes the file.
func (w *Writer) WriteTo(out io.Writer) (int64, error) {
	cw := &countingWriter{w: bufio.NewWriterSize(out, 1<<20)}
	e := encoder{w: cw}
	e.bytes([]byte(Magic))
	e.u32(3)
	e.u64(uint64(len(w.tensors)))
	e.u64(uint64(len(w.kvs)))
	for _, kv := range w.kvs {
		e.str(kv.Key)
		e.u32(uint32(kv.Value.Type))
		e.value(kv.Value)
	}
	var off uint64
	for i := range w.tensors {
		t := &w.tensors[i].info
		t.Offset = off
		e.str(t.Name)
		e.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			e.u64(d)
		}
		e.u32(uint32(t.Type))
		e.u64(off)
		off = uint64(alignUp(int64(off+t.Size), int64(w.alignment)))
	}
	if e.err != nil {
		return cw.n, e.err
	}
	e.pad(w.alignment)
	for _, t := range w.tensors {
		data, err := t.data()
		if err != nil {
			return cw.n, fmt.Errorf("gguf: producing tensor %q: %w", t.info.Name, err)
		}
		if uint64(len(data)) != t.info.Size {
			return cw.n, fmt.Errorf("gguf: tensor %q: got %d bytes, want %d", t.info.Name, len(data), t.info.Size)
		}
		e.bytes(data)
		e.pad(w.alignment)
		if e.err != nil {
			return cw.n, e.err
		}
	}
	if err := cw.w.(*bufio.Writer).Flush(); err != nil {
		return cw.n, err
	}
	return cw.n, e.err
}

// WriteFile writes the file to path through a temporary file in the same
// directory and renames it into place, so readers never see a partial file.
func (w *Writer) WriteFile(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := w.WriteTo(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type encoder struct {
	w   *countingWriter
	err error
	buf [8]byte
}

func (e *encoder) bytes(p []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(p)
	}
}

func (e *encoder) u8(v uint8) { e.buf[0] = v; e.bytes(e.buf[:1]) }
func (e *encoder) u16(v uint16) {
	binary.LittleEndian.PutUint16(e.buf[:], v)
	e.bytes(e.buf[:2])
}
func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.buf[:], v)
	e.bytes(e.buf[:4])
}
func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.buf[:], v)
	e.bytes(e.buf[:8])
}
func (e *encoder) str(s string) { e.u64(uint64(len(s))); e.bytes([]byte(s)) }

func (e *encoder) pad(alignment int) {
	if rem := e.w.n % int64(alignment); rem != 0 {
		e.bytes(make([]byte, int64(alignment)-rem))
	}
}

func (e *encoder) value(v Value) {
	switch x := v.V.(type) {
	case uint8:
		e.u8(x)
	case int8:
		e.u8(uint8(x))
	case bool:
		if x {
			e.u8(1)
		} else {
			e.u8(0)
		}
	case uint16:
		e.u16(x)
	case int16:
		e.u16(uint16(x))
	case uint32:
		e.u32(x)
	case int32:
		e.u32(uint32(x))
	case float32:
		e.u32(math.Float32bits(x))
	case uint64:
		e.u64(x)
	case int64:
		e.u64(uint64(x))
	case float64:
		e.u64(math.Float64bits(x))
	case string:
		e.str(x)
	case Array:
		e.u32(uint32(x.Elem))
		e.u64(uint64(x.Len()))
		e.array(x)
	default:
		if e.err == nil {
			e.err = fmt.Errorf("gguf: cannot encode value of Go type %T", v.V)
		}
	}
}

func (e *encoder) array(a Array) {
	switch xs := a.Values.(type) {
	case []string:
		for _, s := range xs {
			e.str(s)
		}
	case []Array:
		for _, sub := range xs {
			e.value(Value{TypeArray, sub})
		}
	case []uint8:
		e.bytes(xs)
	case []int8:
		for _, v := range xs {
			e.u8(uint8(v))
		}
	case []bool:
		for _, v := range xs {
			e.value(Bool(v))
		}
	case []uint16:
		for _, v := range xs {
			e.u16(v)
		}
	case []int16:
		for _, v := range xs {
			e.u16(uint16(v))
		}
	case []uint32:
		for _, v := range xs {
			e.u32(v)
		}
	case []int32:
		for _, v := range xs {
			e.u32(uint32(v))
		}
	case []float32:
		for _, v := range xs {
			e.u32(math.Float32bits(v))
		}
	case []uint64:
		for _, v := range xs {
			e.u64(v)
		}
	case []int64:
		for _, v := range xs {
			e.u64(uint64(v))
		}
	case []float64:
		for _, v := range xs {
			e.u64(math.Float64bits(v))
		}
	default:
		if e.err == nil {
			e.err = fmt.Errorf("gguf: cannot encode array of Go type %T", a.Values)
		}
	}
}
