package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		content string
		want    int64
		ok      bool
	}{
		{"4294967296\n", 4 << 30, true},     // cgroup v2 or v1 with a limit
		{"max\n", 0, false},                 // cgroup v2 without one
		{"9223372036854771712\n", 0, false}, // cgroup v1 without one
		{"", 0, false},
		{"garbage", 0, false},
	} {
		p := filepath.Join(dir, "memory.max")
		if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, ok := readMemoryLimit(p); got != tc.want || ok != tc.ok {
			t.Errorf("%q: got %d, %v; want %d, %v", tc.content, got, ok, tc.want, tc.ok)
		}
	}
	if _, ok := readMemoryLimit(filepath.Join(dir, "missing")); ok {
		t.Error("a missing file reported a limit")
	}
}
