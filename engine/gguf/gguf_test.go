package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/tensor"
)

// sampleFile writes a small file with every metadata type and two tensors.
func sampleFile(t testing.TB) []byte {
	t.Helper()
	w := NewWriter()
	w.Set("general.architecture", String("llama"))
	w.Set("u8", Value{TypeUint8, uint8(7)})
	w.Set("i8", Value{TypeInt8, int8(-7)})
	w.Set("u16", Value{TypeUint16, uint16(700)})
	w.Set("i16", Value{TypeInt16, int16(-700)})
	w.Set("u32", Uint32(70000))
	w.Set("i32", Int32(-70000))
	w.Set("f32", Float32(1.5))
	w.Set("bool", Bool(true))
	w.Set("u64", Uint64(1<<40))
	w.Set("i64", Value{TypeInt64, int64(-1 << 40)})
	w.Set("f64", Value{TypeFloat64, 2.25})
	w.Set("strs", Strings([]string{"a", "", "▁b"}))
	w.Set("f32s", Float32s([]float32{1, 2, 3}))
	w.Set("nested", Value{TypeArray, Array{TypeArray, []Array{{TypeInt32, []int32{1, 2}}, {TypeString, []string{"x"}}}}})
	f32 := make([]byte, 4*8)
	for i := 0; i < 8; i++ {
		binary.LittleEndian.PutUint32(f32[4*i:], uint32(i))
	}
	if err := w.AddTensorBytes("a.weight", tensor.F32, []uint64{4, 2}, f32); err != nil {
		t.Fatal(err)
	}
	q := make([]byte, 34*2)
	if err := w.AddTensorBytes("b.weight", tensor.Q8_0, []uint64{64}, q); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTripKeepsEveryValueType(t *testing.T) {
	f, err := Parse(sampleFile(t))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"u8": uint8(7), "i8": int8(-7), "u16": uint16(700), "i16": int16(-700), "u32": uint32(70000),
		"i32": int32(-70000), "f32": float32(1.5), "bool": true, "u64": uint64(1 << 40), "i64": int64(-1 << 40),
		"f64": 2.25, "general.architecture": "llama",
	}
	for k, v := range want {
		got, ok := f.Lookup(k)
		if !ok || got.V != v {
			t.Errorf("%s = %#v, want %#v", k, got.V, v)
		}
	}
	strs, _ := f.Array("strs")
	if !reflect.DeepEqual(strs.Values, []string{"a", "", "▁b"}) {
		t.Errorf("strs = %#v", strs.Values)
	}
	nested, _ := f.Array("nested")
	if nested.Len() != 2 || !reflect.DeepEqual(nested.Values.([]Array)[0].Values, []int32{1, 2}) {
		t.Errorf("nested = %#v", nested)
	}
	if f.Version != 3 || len(f.Tensors) != 2 || f.DataOffset%32 != 0 {
		t.Fatalf("version %d, %d tensors, data offset %d", f.Version, len(f.Tensors), f.DataOffset)
	}
	a, _ := f.TensorData("a.weight")
	if len(a) != 32 || binary.LittleEndian.Uint32(a[28:]) != 7 {
		t.Errorf("tensor a data wrong: %v", a)
	}
	b, _ := f.Tensor("b.weight")
	if b.Offset != 32 || b.Size != 68 {
		t.Errorf("tensor b at %d size %d, want 32 and 68", b.Offset, b.Size)
	}
}

func TestOpenMapsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(path, sampleFile(t), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if s, _ := f.String("general.architecture"); s != "llama" {
		t.Fatalf("architecture %q", s)
	}
}

func TestRefusesBadFilesWithAReason(t *testing.T) {
	good := sampleFile(t)
	// locate the tensor infos by the name of the first tensor
	nameAt := bytes.Index(good, []byte("a.weight"))
	typeAt := nameAt + len("a.weight") + 4 + 2*8 // name, n_dims, 2 dims
	offsetAt := typeAt + 4
	mutate := func(fn func(b []byte) []byte) []byte { return fn(append([]byte(nil), good...)) }
	tests := []struct {
		name    string
		data    []byte
		wantErr error
		wantMsg string
	}{
		{"bad magic", mutate(func(b []byte) []byte { copy(b, "GGML"); return b }), ErrBadMagic, "GGML"},
		{"version 1", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[4:], 1); return b }), ErrVersion, "version 1"},
		{"empty", nil, ErrTruncated, "0 bytes"},
		{"truncated header", good[:20], ErrTruncated, "offset"},
		{"truncated tensor data", good[:len(good)-40], ErrTruncated, `tensor "b.weight"`},
		{"unknown tensor type", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[typeAt:], 99); return b }), ErrUnknownType, `tensor "a.weight"`},
		{"block size mismatch", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[typeAt:], uint32(tensor.Q8_0)); return b }), ErrMalformed, "not a multiple of the Q8_0 block size"},
		{"offset out of range", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[offsetAt:], 1<<20); return b }), ErrTruncated, "past the end"},
		{"misaligned offset", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[offsetAt:], 4); return b }), ErrMalformed, "alignment"},
		{"overlapping tensors", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[offsetAt:], 32); return b }), ErrMalformed, "overlap"},
		{"huge tensor count", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[8:], 1<<60); return b }), ErrMalformed, "tensor count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.data)
			if err == nil {
				t.Fatal("parsed a bad file without error")
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("error %q is not %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestEveryTruncationIsAnErrorNotAPanic(t *testing.T) {
	good := sampleFile(t)
	for n := 0; n < len(good)-1; n++ {
		if _, err := Parse(good[:n]); err == nil {
			// Cutting only the padding after the last tensor is still valid
			// when no tensor data is lost.
			f, _ := Parse(good[:n])
			last := f.Tensors[len(f.Tensors)-1]
			if uint64(f.DataOffset)+last.Offset+last.Size > uint64(n) {
				t.Fatalf("truncated to %d bytes: parsed without error", n)
			}
		}
	}
}

func FuzzReadGGUF(f *testing.F) {
	f.Add(sampleFile(f))
	f.Add([]byte("GGUF"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			return
		}
		// A file that parses must hand out every tensor's data in bounds.
		for _, ti := range file.Tensors {
			b, err := file.TensorData(ti.Name)
			if err != nil || uint64(len(b)) != ti.Size {
				t.Fatalf("tensor %q: %d bytes, err %v", ti.Name, len(b), err)
			}
		}
	})
}
