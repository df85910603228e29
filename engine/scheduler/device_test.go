package scheduler_test

import (
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/gpu"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/scheduler"
)

// On a device the KV cache takes what the utilization's share of the
// device budget leaves after the weights and the largest batch's working
// memory (the Vulkan backend on lavapipe in CI, its budget capped to 40 MiB).
func TestTheDeviceKVCacheTakesWhatTheUtilizationLeaves(t *testing.T) {
	const limit = 40 << 20
	m, err := model.Open(tinyPath, model.LoadOptions{Threads: 2, Device: gpu.Factory(-1, true, gpu.Options{MemoryLimit: limit})})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.Config
	per := int64(c.Layers * 2 * c.KVDim() * 4)

	cfg := scheduler.Config{MaxNumSeqs: 256, MaxBatchedTokens: 512, DeviceMemoryUtilization: 0.5}
	s, err := scheduler.New(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	mem, _ := m.DeviceMemory()
	cacheBytes := int64(s.KVCacheTokens()) * per
	weightsAndScratch := mem.Used - cacheBytes
	if weightsAndScratch <= 0 || mem.Budget != limit {
		t.Fatalf("device memory %+v with a cache of %d bytes", mem, cacheBytes)
	}
	want := (limit/2 - weightsAndScratch) / per / 16 * 16
	if got := int64(s.KVCacheTokens()); got != want || got < 16 {
		t.Errorf("the KV cache holds %d tokens, want %d: half of %d bytes less %d of weights and scratch, in blocks of 16",
			got, want, limit, weightsAndScratch)
	}
	if mem.Used > limit/2 {
		t.Errorf("the engine holds %d bytes, more than half the %d-byte budget", mem.Used, limit)
	}
	s.Close()

	cfg.KVCacheTokens = int(want) + 16
	_, err = scheduler.New(m, cfg)
	if err == nil || !strings.Contains(err.Error(), "--gpu-memory-utilization") || !strings.Contains(err.Error(), "room for") {
		t.Errorf("an explicit cache one block larger than fits: %v, want an error naming the fix", err)
	}
	cfg.KVCacheTokens = int(want)
	s2, err := scheduler.New(m, cfg)
	if err != nil {
		t.Fatalf("an explicit cache that fits: %v", err)
	}
	s2.Close()
	cfg.DeviceMemoryUtilization = 1.5
	if _, err := scheduler.New(m, cfg); err == nil {
		t.Error("a utilization of 1.5 was accepted")
	}
}
