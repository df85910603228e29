package server_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/gpu"
	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/scheduler"
	"github.com/moe-operator/moe-operator/engine/server"
)

// TestOnTheVulkanDevice serves the tiny model from the Vulkan backend (in CI
// Mesa's lavapipe; without a device the test fails, it does not skip) and
// runs the tests of continuous batching that the CPU runs above: requests
// batched get exactly what they get alone, a client that disconnects frees
// its blocks, a preempted request recomputes to the same tokens, and a
// drain finishes what is in flight. The device's memory is capped so that
// the KV cache is sized from what the weights and the working memory leave.
func TestOnTheVulkanDevice(t *testing.T) {
	load := func() (*model.Model, error) {
		opts := gpu.Options{Validation: true, MemoryLimit: 48 << 20, Log: func(s string) {
			if strings.HasPrefix(s, "vulkan validation") {
				t.Error(s)
			}
		}}
		m, err := model.Open(tinyPath, model.LoadOptions{Threads: 2, Device: gpu.Factory(-1, true, opts)})
		if err == nil {
			if _, ok := m.Accelerated(); !ok {
				m.Close()
				t.Fatal("the model is not on the device")
			}
		}
		return m, err
	}
	for _, tc := range []struct {
		name string
		run  func(*testing.T, func() (*model.Model, error))
	}{
		{"batching", testBatchingInvariance},
		{"disconnect", testDisconnectFreesBlocks},
		{"preemption", testPreemption},
		{"drain", testDrain},
		{"metrics", testDeviceMetrics},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, load) })
	}
}

// TestOnADeviceGroup serves the tiny model with tensor parallelism 2 over a
// device group (two logical lavapipe devices in CI): the scheduler's
// batching and preemption hold across ranks as on one device.
func TestOnADeviceGroup(t *testing.T) {
	load := func() (*model.Model, error) {
		d, err := gpu.Open(-1, true, gpu.Options{})
		if err != nil {
			return nil, err
		}
		index := d.Info.Index
		d.Close()
		opts := gpu.Options{MemoryLimit: 48 << 20}
		m, err := model.Open(tinyPath, model.LoadOptions{Threads: 2, TensorParallel: 2, Device: gpu.GroupFactory([]int{index, index}, true, opts)})
		if err == nil && m.TensorParallel() != 2 {
			m.Close()
			t.Fatalf("the model has %d shards, want 2", m.TensorParallel())
		}
		return m, err
	}
	t.Run("batching", func(t *testing.T) { testBatchingInvariance(t, load) })
	t.Run("preemption", func(t *testing.T) { testPreemption(t, load) })
}

// testDeviceMetrics: /metrics names the device and reports its memory.
func testDeviceMetrics(t *testing.T, load func() (*model.Model, error)) {
	h := startWith(t, load, server.Options{}, scheduler.Config{})
	body := string(do(t, "GET", h.url+"/metrics", nil).body)
	if !regexp.MustCompile(`(?m)^moe_engine_device_info\{device="vulkan:\d+ [^"]+",model_name="tiny-test"\} 1$`).MatchString(body) {
		t.Errorf("no device info in /metrics:\n%s", grepLines(body, "moe_engine"))
	}
	_, mem, _ := h.sched.Device()
	value := func(name string) float64 {
		m := regexp.MustCompile(`(?m)^` + name + `\{model_name="tiny-test"\} (\S+)$`).FindStringSubmatch(body)
		if m == nil {
			return -1
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	if used := value("moe_engine_device_memory_used_bytes"); mem.Used <= 0 || used != float64(mem.Used) {
		t.Errorf("used device memory %v in /metrics, %d on the device", used, mem.Used)
	}
	if budget := value("moe_engine_device_memory_budget_bytes"); budget != 48<<20 {
		t.Errorf("device memory budget %v in /metrics, want the 48 MiB limit", budget)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
