// Package gguf reads and writes GGUF model files (versions 2 and 3), the
// format llama.cpp uses.
//
// A File is parsed from a byte slice, normally the read-only memory map of
// the file made by Open, so tensor data is never copied: TensorData returns
// a sub-slice of the mapping. Parsing validates everything the header
// claims (counts, string lengths, value types, tensor types, shapes,
// alignment, data ranges and overlaps) and refuses a file with an error
// naming the problem, the tensor or key involved, and the byte offset.
package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"unicode/utf8"

	"github.com/moe-operator/moe-operator/engine/tensor"
)

// Magic is the first four bytes of every GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// MaxDims is the largest number of dimensions a tensor may have (ggml's limit).
const MaxDims = 4

// Sentinel errors; the errors returned wrap one of them, so callers can test
// the class with errors.Is and still show the detailed message.
var (
	ErrBadMagic    = errors.New("gguf: not a GGUF file (bad magic)")
	ErrVersion     = errors.New("gguf: unsupported version")
	ErrTruncated   = errors.New("gguf: file is truncated")
	ErrMalformed   = errors.New("gguf: malformed file")
	ErrUnknownType = errors.New("gguf: unknown tensor type")
	ErrNotFound    = errors.New("gguf: not found")
)

// KV is one metadata entry, in file order.
type KV struct {
	Key   string
	Value Value
}

// TensorInfo describes one tensor. Dims lists ggml's ne: Dims[0] is the
// innermost (contiguous) dimension, so a PyTorch [out, in] weight has
// Dims = [in, out].
type TensorInfo struct {
	Name   string
	Dims   []uint64
	Type   tensor.DType
	Offset uint64 // relative to the start of the data section
	Size   uint64 // bytes
}

// Elements is the number of elements.
func (t *TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is a parsed GGUF file.
type File struct {
	Version    uint32
	KVs        []KV
	Tensors    []TensorInfo
	Alignment  int
	DataOffset int64 // absolute offset of the data section

	kvIndex     map[string]int
	tensorIndex map[string]int
	data        []byte // the whole file
	unmap       func() error
}

// Parse parses a GGUF file held in b. The File refers to b; b must not be
// modified while the File is in use.
func Parse(b []byte) (*File, error) {
	d := &decoder{b: b}
	f := &File{kvIndex: map[string]int{}, tensorIndex: map[string]int{}, data: b}

	if len(b) < 4 {
		return nil, fmt.Errorf("%w: %d bytes, need at least 4 for the magic", ErrTruncated, len(b))
	}
	if string(b[:4]) != Magic {
		return nil, fmt.Errorf("%w: first bytes are %q, want %q", ErrBadMagic, b[:4], Magic)
	}
	d.off = 4
	version, err := d.u32("version")
	if err != nil {
		return nil, err
	}
	if version != 2 && version != 3 {
		return nil, fmt.Errorf("%w %d (this reader handles GGUF v2 and v3)", ErrVersion, version)
	}
	f.Version = version
	nTensors, err := d.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := d.u64("metadata count")
	if err != nil {
		return nil, err
	}
	// Every KV needs at least 12 bytes and every tensor info at least 24, so
	// counts beyond what the file could hold are refused before allocating.
	if nKV > uint64(len(b))/12 {
		return nil, fmt.Errorf("%w: metadata count %d cannot fit in a %d-byte file", ErrMalformed, nKV, len(b))
	}
	if nTensors > uint64(len(b))/24 {
		return nil, fmt.Errorf("%w: tensor count %d cannot fit in a %d-byte file", ErrMalformed, nTensors, len(b))
	}

	f.KVs = make([]KV, 0, nKV)
	for i := uint64(0); i < nKV; i++ {
		at := d.off
		key, err := d.str("metadata key")
		if err != nil {
			return nil, err
		}
		if _, dup := f.kvIndex[key]; dup {
			return nil, fmt.Errorf("%w: duplicate metadata key %q at offset %d", ErrMalformed, key, at)
		}
		vt, err := d.u32("value type of " + key)
		if err != nil {
			return nil, err
		}
		v, err := d.value(ValueType(vt), key, 0)
		if err != nil {
			return nil, err
		}
		f.kvIndex[key] = len(f.KVs)
		f.KVs = append(f.KVs, KV{key, v})
	}

	f.Alignment = DefaultAlignment
	if v, ok := f.Lookup("general.alignment"); ok {
		a, isInt := v.Int()
		if !isInt || v.Type != TypeUint32 || a <= 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("%w: general.alignment must be a power-of-two uint32, have %s %v", ErrMalformed, v.Type, v.V)
		}
		f.Alignment = int(a)
	}

	f.Tensors = make([]TensorInfo, 0, nTensors)
	for i := uint64(0); i < nTensors; i++ {
		ti, err := d.tensorInfo()
		if err != nil {
			return nil, err
		}
		if _, dup := f.tensorIndex[ti.Name]; dup {
			return nil, fmt.Errorf("%w: duplicate tensor name %q", ErrMalformed, ti.Name)
		}
		f.tensorIndex[ti.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, ti)
	}

	f.DataOffset = alignUp(int64(d.off), int64(f.Alignment))
	if len(f.Tensors) > 0 && f.DataOffset > int64(len(b)) {
		return nil, fmt.Errorf("%w: data section would start at offset %d, past the end of the %d-byte file", ErrTruncated, f.DataOffset, len(b))
	}
	if err := f.checkTensorRanges(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *File) checkTensorRanges() error {
	dataLen := uint64(0)
	if int64(len(f.data)) > f.DataOffset {
		dataLen = uint64(int64(len(f.data)) - f.DataOffset)
	}
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if t.Offset%uint64(f.Alignment) != 0 {
			return fmt.Errorf("%w: tensor %q: offset %d is not a multiple of the alignment %d", ErrMalformed, t.Name, t.Offset, f.Alignment)
		}
		if t.Offset > dataLen || t.Size > dataLen-t.Offset {
			return fmt.Errorf("%w: tensor %q: data [%d, %d) of the data section at file offset %d runs past the end of the file (%d bytes of data)",
				ErrTruncated, t.Name, t.Offset, t.Offset+t.Size, f.DataOffset, dataLen)
		}
	}
	order := make([]int, len(f.Tensors))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return f.Tensors[order[a]].Offset < f.Tensors[order[b]].Offset })
	for k := 1; k < len(order); k++ {
		prev, cur := &f.Tensors[order[k-1]], &f.Tensors[order[k]]
		if prev.Size > 0 && cur.Size > 0 && prev.Offset+prev.Size > cur.Offset {
			return fmt.Errorf("%w: tensors %q [%d, %d) and %q [%d, %d) overlap", ErrMalformed,
				prev.Name, prev.Offset, prev.Offset+prev.Size, cur.Name, cur.Offset, cur.Offset+cur.Size)
		}
	}
	return nil
}

func alignUp(x, a int64) int64 { return (x + a - 1) / a * a }

// Lookup returns the metadata value for key.
func (f *File) Lookup(key string) (Value, bool) {
	i, ok := f.kvIndex[key]
	if !ok {
		return Value{}, false
	}
	return f.KVs[i].Value, true
}

// String returns the string value of key.
func (f *File) String(key string) (string, error) {
	v, ok := f.Lookup(key)
	if !ok {
		return "", fmt.Errorf("%w: metadata key %q", ErrNotFound, key)
	}
	s, ok := v.V.(string)
	if !ok {
		return "", fmt.Errorf("gguf: metadata %q is %s, want string", key, v.Type)
	}
	return s, nil
}

// Int returns the value of an integer-typed key.
func (f *File) Int(key string) (int64, error) {
	v, ok := f.Lookup(key)
	if !ok {
		return 0, fmt.Errorf("%w: metadata key %q", ErrNotFound, key)
	}
	i, ok := v.Int()
	if !ok {
		return 0, fmt.Errorf("gguf: metadata %q is %s, want an integer", key, v.Type)
	}
	return i, nil
}

// Float returns the value of a float- or integer-typed key.
func (f *File) Float(key string) (float64, error) {
	v, ok := f.Lookup(key)
	if !ok {
		return 0, fmt.Errorf("%w: metadata key %q", ErrNotFound, key)
	}
	x, ok := v.Float()
	if !ok {
		return 0, fmt.Errorf("gguf: metadata %q is %s, want a number", key, v.Type)
	}
	return x, nil
}

// Bool returns the value of a bool key.
func (f *File) Bool(key string) (bool, error) {
	v, ok := f.Lookup(key)
	if !ok {
		return false, fmt.Errorf("%w: metadata key %q", ErrNotFound, key)
	}
	b, ok := v.V.(bool)
	if !ok {
		return false, fmt.Errorf("gguf: metadata %q is %s, want bool", key, v.Type)
	}
	return b, nil
}

// Array returns the value of an array key.
func (f *File) Array(key string) (Array, error) {
	v, ok := f.Lookup(key)
	if !ok {
		return Array{}, fmt.Errorf("%w: metadata key %q", ErrNotFound, key)
	}
	a, ok := v.V.(Array)
	if !ok {
		return Array{}, fmt.Errorf("gguf: metadata %q is %s, want array", key, v.Type)
	}
	return a, nil
}

// Tensor returns the info of the named tensor.
func (f *File) Tensor(name string) (*TensorInfo, bool) {
	i, ok := f.tensorIndex[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// TensorData returns the named tensor's bytes, a view into the file.
func (f *File) TensorData(name string) ([]byte, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%w: tensor %q", ErrNotFound, name)
	}
	start := uint64(f.DataOffset) + t.Offset
	return f.data[start : start+t.Size : start+t.Size], nil
}

// Bytes is the whole file: the memory map Open made, or the slice Parse
// was given. Tensor data slices point into it.
func (f *File) Bytes() []byte { return f.data }

// Size is the size of the file in bytes.
func (f *File) Size() int64 { return int64(len(f.data)) }

// Close releases the file's memory map, if Open made one. Tensor data
// slices must not be used afterwards.
func (f *File) Close() error {
	if f.unmap == nil {
		return nil
	}
	err := f.unmap()
	f.unmap = nil
	f.data = nil
	return err
}

// decoder reads little-endian fields and reports errors with their offset.
type decoder struct {
	b   []byte
	off int
}

func (d *decoder) need(n uint64, what string) error {
	if n > uint64(len(d.b)-d.off) {
		return fmt.Errorf("%w: reading %s at offset %d: need %d bytes, %d remain", ErrTruncated, what, d.off, n, len(d.b)-d.off)
	}
	return nil
}

func (d *decoder) u32(what string) (uint32, error) {
	if err := d.need(4, what); err != nil {
		return 0, err
	}
	v := binary.LittleEndian.Uint32(d.b[d.off:])
	d.off += 4
	return v, nil
}

func (d *decoder) u64(what string) (uint64, error) {
	if err := d.need(8, what); err != nil {
		return 0, err
	}
	v := binary.LittleEndian.Uint64(d.b[d.off:])
	d.off += 8
	return v, nil
}

func (d *decoder) str(what string) (string, error) {
	at := d.off
	n, err := d.u64(what + " length")
	if err != nil {
		return "", err
	}
	if err := d.need(n, what); err != nil {
		return "", err
	}
	s := string(d.b[d.off : d.off+int(n)])
	d.off += int(n)
	if !utf8.ValidString(s) && what == "metadata key" {
		return "", fmt.Errorf("%w: %s at offset %d is not valid UTF-8", ErrMalformed, what, at)
	}
	return s, nil
}

const maxArrayDepth = 8

func (d *decoder) value(t ValueType, key string, depth int) (Value, error) {
	at := d.off
	if size := t.scalarSize(); size > 0 {
		if err := d.need(uint64(size), "value of "+key); err != nil {
			return Value{}, err
		}
		p := d.b[d.off:]
		d.off += size
		switch t {
		case TypeUint8:
			return Value{t, p[0]}, nil
		case TypeInt8:
			return Value{t, int8(p[0])}, nil
		case TypeBool:
			if p[0] > 1 {
				return Value{}, fmt.Errorf("%w: bool value of %q at offset %d is %d, want 0 or 1", ErrMalformed, key, at, p[0])
			}
			return Value{t, p[0] == 1}, nil
		case TypeUint16:
			return Value{t, binary.LittleEndian.Uint16(p)}, nil
		case TypeInt16:
			return Value{t, int16(binary.LittleEndian.Uint16(p))}, nil
		case TypeUint32:
			return Value{t, binary.LittleEndian.Uint32(p)}, nil
		case TypeInt32:
			return Value{t, int32(binary.LittleEndian.Uint32(p))}, nil
		case TypeFloat32:
			return Value{t, math.Float32frombits(binary.LittleEndian.Uint32(p))}, nil
		case TypeUint64:
			return Value{t, binary.LittleEndian.Uint64(p)}, nil
		case TypeInt64:
			return Value{t, int64(binary.LittleEndian.Uint64(p))}, nil
		case TypeFloat64:
			return Value{t, math.Float64frombits(binary.LittleEndian.Uint64(p))}, nil
		}
	}
	switch t {
	case TypeString:
		s, err := d.str("string value of " + key)
		return Value{t, s}, err
	case TypeArray:
		if depth >= maxArrayDepth {
			return Value{}, fmt.Errorf("%w: arrays of %q nest deeper than %d at offset %d", ErrMalformed, key, maxArrayDepth, at)
		}
		et, err := d.u32("array element type of " + key)
		if err != nil {
			return Value{}, err
		}
		n, err := d.u64("array length of " + key)
		if err != nil {
			return Value{}, err
		}
		arr, err := d.array(ValueType(et), n, key, depth)
		return Value{t, arr}, err
	}
	return Value{}, fmt.Errorf("%w: metadata %q at offset %d has unknown value type %d", ErrMalformed, key, at, uint32(t))
}

func (d *decoder) array(et ValueType, n uint64, key string, depth int) (Array, error) {
	// Every element takes at least one byte (strings at least 8), so a
	// count beyond the remaining bytes is a lie: refuse it before allocating.
	minSize := uint64(et.scalarSize())
	if et == TypeString || et == TypeArray {
		minSize = 8
	}
	if minSize == 0 {
		return Array{}, fmt.Errorf("%w: array %q at offset %d has unknown element type %d", ErrMalformed, key, d.off, uint32(et))
	}
	if n > uint64(len(d.b)-d.off)/minSize {
		return Array{}, fmt.Errorf("%w: array %q claims %d elements of %s at offset %d, more than the %d remaining bytes can hold",
			ErrTruncated, key, n, et, d.off, len(d.b)-d.off)
	}
	switch et {
	case TypeString:
		out := make([]string, n)
		for i := range out {
			s, err := d.str(fmt.Sprintf("element %d of %s", i, key))
			if err != nil {
				return Array{}, err
			}
			out[i] = s
		}
		return Array{et, out}, nil
	case TypeArray:
		out := make([]Array, n)
		for i := range out {
			v, err := d.value(TypeArray, key, depth+1)
			if err != nil {
				return Array{}, err
			}
			out[i] = v.V.(Array)
		}
		return Array{et, out}, nil
	}
	p := d.b[d.off : d.off+int(n*minSize)]
	d.off += int(n * minSize)
	return Array{et, decodeScalars(et, p, int(n))}, nil
}

func decodeScalars(et ValueType, p []byte, n int) any {
	le := binary.LittleEndian
	switch et {
	case TypeUint8:
		return append([]uint8(nil), p...)
	case TypeInt8:
		out := make([]int8, n)
		for i := range out {
			out[i] = int8(p[i])
		}
		return out
	case TypeBool:
		out := make([]bool, n)
		for i := range out {
			out[i] = p[i] != 0
		}
		return out
	case TypeUint16:
		out := make([]uint16, n)
		for i := range out {
			out[i] = le.Uint16(p[2*i:])
		}
		return out
	case TypeInt16:
		out := make([]int16, n)
		for i := range out {
			out[i] = int16(le.Uint16(p[2*i:]))
		}
		return out
	case TypeUint32:
		out := make([]uint32, n)
		for i := range out {
			out[i] = le.Uint32(p[4*i:])
		}
		return out
	case TypeInt32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(le.Uint32(p[4*i:]))
		}
		return out
	case TypeFloat32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(p[4*i:]))
		}
		return out
	case TypeUint64:
		out := make([]uint64, n)
		for i := range out {
			out[i] = le.Uint64(p[8*i:])
		}
		return out
	case TypeInt64:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(le.Uint64(p[8*i:]))
		}
		return out
	case TypeFloat64:
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(p[8*i:]))
		}
		return out
	}
	panic("unreachable")
}

func (d *decoder) tensorInfo() (TensorInfo, error) {
	at := d.off
	name, err := d.str("tensor name")
	if err != nil {
		return TensorInfo{}, err
	}
	nd, err := d.u32("dimension count of tensor " + name)
	if err != nil {
		return TensorInfo{}, err
	}
	if nd == 0 || nd > MaxDims {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q at offset %d has %d dimensions, want 1 to %d", ErrMalformed, name, at, nd, MaxDims)
	}
	ti := TensorInfo{Name: name, Dims: make([]uint64, nd)}
	elems := uint64(1)
	for i := range ti.Dims {
		v, err := d.u64(fmt.Sprintf("dimension %d of tensor %s", i, name))
		if err != nil {
			return TensorInfo{}, err
		}
		if v > math.MaxInt64 || (v != 0 && elems > math.MaxInt64/v) {
			return TensorInfo{}, fmt.Errorf("%w: tensor %q at offset %d has shape %v, which overflows", ErrMalformed, name, at, ti.Dims[:i+1])
		}
		ti.Dims[i] = v
		elems *= v
	}
	typ, err := d.u32("type of tensor " + name)
	if err != nil {
		return TensorInfo{}, err
	}
	ti.Type = tensor.DType(typ)
	if !ti.Type.Known() {
		return TensorInfo{}, fmt.Errorf("%w %d for tensor %q at offset %d", ErrUnknownType, typ, name, at)
	}
	bs := uint64(ti.Type.BlockSize())
	if ti.Dims[0]%bs != 0 {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q at offset %d: its first dimension %d is not a multiple of the %s block size %d",
			ErrMalformed, name, at, ti.Dims[0], ti.Type, bs)
	}
	ti.Size = elems / bs * uint64(ti.Type.BlockBytes())
	if ti.Offset, err = d.u64("data offset of tensor " + name); err != nil {
		return TensorInfo{}, err
	}
	return ti, nil
}
