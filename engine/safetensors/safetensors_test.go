package safetensors

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func f32bytes(vals ...float32) []byte {
	b := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func constant(b []byte) func() ([]byte, error) { return func() ([]byte, error) { return b, nil } }

func sampleTensors() []Tensor {
	return []Tensor{
		{Name: "a.weight", DType: F32, Shape: []int64{2, 3}, Data: constant(f32bytes(1, 2, 3, 4, 5, 6))},
		{Name: "b.bias", DType: BF16, Shape: []int64{3}, Data: constant([]byte{0x80, 0x3f, 0, 0x40, 0x40, 0x40})},
		{Name: "scalar", DType: F16, Shape: []int64{}, Data: constant([]byte{0, 0x3c})},
		{Name: "empty", DType: F32, Shape: []int64{0, 4}, Data: constant(nil)},
	}
}

// sampleFile returns the bytes of a small valid file.
func sampleFile(tb testing.TB) []byte {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "s.safetensors")
	if err := WriteFile(p, sampleTensors(), map[string]string{"format": "pt"}); err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestWrittenFilesReadBack(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.safetensors")
	if err := WriteFile(p, sampleTensors(), map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.DataOffset%8 != 0 {
		t.Errorf("data section starts at %d, want a multiple of 8", f.DataOffset)
	}
	if f.Metadata["format"] != "pt" {
		t.Errorf("metadata %v", f.Metadata)
	}
	for _, want := range sampleTensors() {
		info, ok := f.Tensor(want.Name)
		if !ok {
			t.Fatalf("tensor %q missing", want.Name)
		}
		if info.DType != want.DType || len(info.Shape) != len(want.Shape) {
			t.Errorf("%s: %s %v, want %s %v", want.Name, info.DType, info.Shape, want.DType, want.Shape)
		}
		got, _ := f.TensorData(want.Name)
		exp, _ := want.Data()
		if string(got) != string(exp) {
			t.Errorf("%s: data %x, want %x", want.Name, got, exp)
		}
	}
	if _, err := f.TensorData("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing tensor: %v", err)
	}
}

func TestShardedCheckpointsMapEveryTensorToItsShard(t *testing.T) {
	dir := t.TempDir()
	files, err := WriteCheckpoint(dir, sampleTensors(), 16)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 || filepath.Base(files[len(files)-1]) != IndexName {
		t.Fatalf("files %v: want several shards and an index", files)
	}
	for _, path := range []string{dir, files[len(files)-1]} {
		c, err := OpenCheckpoint(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Names()) != 4 || len(c.Mapped()) != len(files)-1 {
			t.Errorf("%s: %d tensors in %d files", path, len(c.Names()), len(c.Mapped()))
		}
		_, data, ok := c.Tensor("a.weight")
		if !ok || string(data) != string(f32bytes(1, 2, 3, 4, 5, 6)) {
			t.Errorf("a.weight: %x", data)
		}
		c.Close()
	}

	// An index that names the wrong shard, or a missing shard, is refused.
	idx := filepath.Join(dir, IndexName)
	b, _ := os.ReadFile(idx)
	os.WriteFile(idx, []byte(strings.Replace(string(b), `"a.weight": "model-00001-of`, `"a.weight": "model-00002-of`, 1)), 0o644)
	if _, err := OpenCheckpoint(dir); err == nil || !strings.Contains(err.Error(), "does not hold it") {
		t.Errorf("wrong shard: %v", err)
	}
	os.WriteFile(idx, b, 0o644)
	os.Remove(files[0])
	if _, err := OpenCheckpoint(dir); err == nil || !strings.Contains(err.Error(), "is missing") {
		t.Errorf("missing shard: %v", err)
	}
}

func TestIndexCannotPointOutsideItsDirectory(t *testing.T) {
	for _, shard := range []string{"../x.safetensors", "/etc/passwd", "sub/a.safetensors", "model.bin", ""} {
		_, err := ParseIndex([]byte(`{"weight_map": {"t": "` + shard + `"}}`))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("shard %q: err %v", shard, err)
		}
	}
}

// header builds a file from a JSON header and n data bytes.
func header(js string, n int) []byte {
	b := make([]byte, 8, 8+len(js)+n)
	binary.LittleEndian.PutUint64(b, uint64(len(js)))
	b = append(b, js...)
	return append(b, make([]byte, n)...)
}

func TestBadHeadersAreRefusedWithAReason(t *testing.T) {
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"too short", []byte{1, 2, 3}, "need 8"},
		{"header length past the end", header(`{}`, 0)[:9], "only 1 bytes follow"},
		{"huge header length", append([]byte{0, 0, 0, 0, 0, 0, 0, 1}, "{}"...), "exceeds"},
		{"not an object", header(`[1,2]`, 0), "start with '{'"},
		{"bad json", header(`{"a": {"dtype": "F32",`, 0), "ends inside"},
		{"duplicate tensor", header(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 4), "appears twice"},
		{"unknown dtype", header(`{"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}}`, 4), `unknown dtype "F12"`},
		{"unknown field", header(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}`, 4), `unknown field "x"`},
		{"missing field", header(`{"a":{"dtype":"F32","shape":[1]}}`, 4), "needs dtype, shape and data_offsets"},
		{"negative dimension", header(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4), "not an integer"},
		{"fractional dimension", header(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, 4), "not an integer"},
		{"size does not match shape", header(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4), "needs 8 bytes"},
		{"past the end", header(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 4), "past the 4-byte data section"},
		{"reversed offsets", header(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, 4), "reversed"},
		{"overlap", header(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), "overlaps"},
		{"hole", header(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), "hole"},
		{"trailing bytes", header(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 8), "cover 4 bytes of the 8-byte"},
		{"overflowing shape", header(`{"a":{"dtype":"F32","shape":[9007199254740992,9007199254740992],"data_offsets":[0,4]}}`, 4), "too many elements"},
		{"three offsets", header(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, 4), "more than 2"},
		{"metadata not strings", header(`{"__metadata__":{"a":1}}`, 0), "want a string"},
		{"garbage after the object", header(`{} x`, 0), "after the header"},
		{"partial bytes", header(`{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}`, 1), "whole bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.file)
			if err == nil {
				t.Fatal("parsed without error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
	// Padding spaces after the object and an empty file are fine.
	if _, err := Parse(header(`{}    `, 0)); err != nil {
		t.Errorf("padded empty header: %v", err)
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add(sampleFile(f))
	f.Add(header(`{"a":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}`, 8))
	f.Add(header(`{"__metadata__":{"format":"pt"}}`, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			return
		}
		// A file that parses hands out every tensor's data in bounds, with
		// the size its dtype and shape need.
		for _, ti := range file.Tensors {
			b, err := file.TensorData(ti.Name)
			if err != nil || int64(len(b)) != ti.Size() || ti.Elements()*int64(ti.DType.Bits()) != 8*ti.Size() {
				t.Fatalf("tensor %q: %d bytes, err %v", ti.Name, len(b), err)
			}
		}
	})
}
