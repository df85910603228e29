package main

import (
	"os"
	"path/filepath"
	"strings"
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

func TestAvailableMemory(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	saved := [3]any{cgroupMemoryFiles, cgroupUsageFiles, meminfoFile}
	defer func() {
		cgroupMemoryFiles, cgroupUsageFiles, meminfoFile = saved[0].([]string), saved[1].([]string), saved[2].(string)
	}()

	// In a container with a limit: the limit less what it uses.
	cgroupMemoryFiles = []string{write("memory.max", "8589934592\n")}
	cgroupUsageFiles = []string{write("memory.current", "2147483648\n")}
	meminfoFile = write("meminfo", "MemTotal:       32000000 kB\nMemAvailable:   1000 kB\n")
	if got, src := availableMemory(); got != 6<<30 || !strings.Contains(src, "memory.max") {
		t.Errorf("with a cgroup limit: %d (%s), want 6 GiB from memory.max", got, src)
	}
	// Without one: the machine's MemAvailable.
	cgroupMemoryFiles = []string{write("memory.max", "max\n")}
	if got, src := availableMemory(); got != 1000<<10 || !strings.Contains(src, "MemAvailable") {
		t.Errorf("without a limit: %d (%s), want 1000 kB from MemAvailable", got, src)
	}
	// Nothing readable: no figure, so no check.
	meminfoFile = filepath.Join(dir, "missing")
	if got, _ := availableMemory(); got != 0 {
		t.Errorf("with nothing to read: %d, want 0", got)
	}
}
