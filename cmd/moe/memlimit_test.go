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

func TestSoftMemoryLimit(t *testing.T) {
	for _, tc := range []struct{ limit, want int64 }{
		{1 << 30, 1<<30 - (1<<30)/10},    // small: a tenth
		{40 << 30, 40<<30 - 256<<20},     // large: 256 MiB, so a heap sized near the limit does not thrash
		{2560 << 20, 2560<<20 - 256<<20}, // where the two meet
	} {
		if got := softMemoryLimit(tc.limit); got != tc.want {
			t.Errorf("softMemoryLimit(%d MiB) = %d MiB, want %d MiB", tc.limit>>20, got>>20, tc.want>>20)
		}
	}
}
