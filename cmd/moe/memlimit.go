package main

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// cgroupMemoryFiles hold a container's memory limit: cgroup v2, then v1.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// softMemoryLimit is the Go runtime's soft limit for a container limit: the
// limit less a margin (a tenth of it, at most 256 MiB) for what the runtime
// does not count, mostly the mapped model file's page cache, which the kernel
// can reclaim. The margin stays small because the planner sizes the pod for
// weights, KV cache and a runtime allowance, and those live on the heap: a
// soft limit below the live heap would make the collector run continuously.
func softMemoryLimit(limit int64) int64 {
	return limit - min(limit/10, 256<<20)
}

// applyMemoryLimit gives the Go runtime a soft memory limit from the container's,
// unless GOMEMLIMIT sets one. The engine's heap is mostly long-lived (packed
// weights, the KV cache), so the default GOGC target (twice the live heap)
// would let garbage grow the process by the size of the model before a
// collection, past the memory the pod requests; with a limit the collector runs
// before that. It returns what it did, for the log ("" when nothing).
func applyMemoryLimit() string {
	if os.Getenv("GOMEMLIMIT") != "" {
		return ""
	}
	for _, f := range cgroupMemoryFiles {
		limit, ok := readMemoryLimit(f)
		if !ok {
			continue
		}
		soft := softMemoryLimit(limit)
		debug.SetMemoryLimit(soft)
		return fmt.Sprintf("Go memory limit %d MiB (the container's %d MiB in %s, less a margin)", soft>>20, limit>>20, f)
	}
	return ""
}

// readMemoryLimit reads a cgroup memory limit file; "max" (v2) and the huge
// value v1 uses for no limit report none.
func readMemoryLimit(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 || n >= 1<<60 {
		return 0, false
	}
	return n, true
}

// cgroupUsageFiles hold a container's memory in use, in the order of
// cgroupMemoryFiles.
var cgroupUsageFiles = []string{"/sys/fs/cgroup/memory.current", "/sys/fs/cgroup/memory/memory.usage_in_bytes"}

// meminfoFile is the kernel's memory report, for a process outside a
// limited cgroup.
var meminfoFile = "/proc/meminfo"

// availableMemory is the memory this process may still take: the
// container's limit less what it uses, else the machine's MemAvailable.
// 0 when neither can be read.
func availableMemory() (int64, string) {
	for i, f := range cgroupMemoryFiles {
		limit, ok := readMemoryLimit(f)
		if !ok {
			continue
		}
		used, _ := readMemoryLimit(cgroupUsageFiles[i])
		return max(limit-used, 0), fmt.Sprintf("the container's limit in %s less its use", f)
	}
	b, err := os.ReadFile(meminfoFile)
	if err != nil {
		return 0, ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kib, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil && kib > 0 {
				return kib << 10, "MemAvailable in " + meminfoFile
			}
		}
	}
	return 0, ""
}
