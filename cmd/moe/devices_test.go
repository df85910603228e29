package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/gpu"
	"github.com/moe-operator/moe-operator/engine/modelgen"
)

// tinyModel writes the tiny preset to a temporary GGUF file.
func tinyModel(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	c, _ := modelgen.Preset("tiny")
	if err := modelgen.Write(path, c); err != nil {
		t.Fatal(err)
	}
	return path
}

// logitsOf runs `moe logits` over five fixed tokens with the extra args.
func logitsOf(t *testing.T, args ...string) [][]float32 {
	t.Helper()
	out, err := run(t, newLogitsCmd(), append([]string{"--tokens", "1,300,301,302,420", "--threads", "1"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	var v struct{ Logits [][]float32 }
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	return v.Logits
}

// maxDiff is the largest absolute difference of two logit sets of one shape.
func maxDiff(t *testing.T, got, want [][]float32) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	worst := 0.0
	for i := range want {
		for j := range want[i] {
			worst = math.Max(worst, math.Abs(float64(got[i][j]-want[i][j])))
		}
	}
	return worst
}

// TestLogitsOnVulkanMatchCPU runs `moe logits` on the Vulkan device (lavapipe in CI) and on
// the CPU: the command-line path to the GPU backend gives the CPU's logits.
func TestLogitsOnVulkanMatchCPU(t *testing.T) {
	path := tinyModel(t)
	cpu := logitsOf(t, "--model", path, "--device", "cpu")
	dev := logitsOf(t, "--model", path, "--device", "vulkan")
	if worst := maxDiff(t, dev, cpu); worst > 1e-3 {
		t.Errorf("max |device - CPU| logit = %g, want <= 1e-3", worst)
	}
}

// TestTensorParallelOnVulkanMatchesOneDevice runs `moe logits --device vulkan
// --tensor-parallel 2`: without a GPU the software device is opened twice (lavapipe in CI),
// and the device group gives one device's logits.
func TestTensorParallelOnVulkanMatchesOneDevice(t *testing.T) {
	path := tinyModel(t)
	one := logitsOf(t, "--model", path, "--device", "vulkan")
	two := logitsOf(t, "--model", path, "--device", "vulkan", "--tensor-parallel", "2")
	if worst := maxDiff(t, two, one); worst > 1e-4 {
		t.Errorf("max |TP2 - TP1| logit on the device = %g, want <= 1e-4", worst)
	}
}

func TestGroupDevicesPicksGPUsOrRepeatsTheSoftwareDevice(t *testing.T) {
	gpuA, gpuB := gpu.Info{Index: 0, Name: "a"}, gpu.Info{Index: 1, Name: "b"}
	soft := gpu.Info{Index: 2, Name: "llvmpipe", CPU: true}
	old := gpu.Info{Index: 3, Name: "old", Missing: []string{"shaderInt8"}}
	tests := []struct {
		name    string
		devs    []gpu.Info
		n       int
		want    []int
		wantErr string
	}{
		{"two GPUs for TP2, the software device left out", []gpu.Info{soft, gpuA, gpuB}, 2, []int{0, 1}, ""},
		{"one GPU cannot hold TP2", []gpu.Info{gpuA, soft}, 2, nil, "needs 2 GPUs, found 1"},
		{"a software device alone is opened n times", []gpu.Info{old, soft}, 4, []int{2, 2, 2, 2}, ""},
		{"nothing usable", []gpu.Info{old}, 2, nil, "no usable Vulkan device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := groupDevices(tt.devs, tt.n)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

// TestDeviceChoiceWithoutALoader runs moe in a child process whose Vulkan loader cannot be
// opened, as on a node without libvulkan1: --device auto runs on the CPU and says why;
// --device vulkan fails and says what to install.
func TestDeviceChoiceWithoutALoader(t *testing.T) {
	if os.Getenv("MOE_TEST_DEVICE_CHILD") != "" {
		t.Skip("in the child")
	}
	path := tinyModel(t)
	child := func(device string) (string, error) {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestDeviceChild$", "-test.v")
		cmd.Env = append(os.Environ(),
			"MOE_TEST_DEVICE_CHILD="+device,
			"MOE_TEST_MODEL="+path,
			"MOE_VULKAN_LIBRARY=/nonexistent/libvulkan.so.1")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := child("auto")
	if err != nil {
		t.Fatalf("--device auto without a loader failed: %v\n%s", err, out)
	}
	if !strings.Contains(out, "--device auto: running on the CPU") || !strings.Contains(out, "no Vulkan loader") {
		t.Errorf("--device auto does not say why it runs on the CPU:\n%s", out)
	}
	if !strings.Contains(out, "rows: 5") {
		t.Errorf("--device auto printed no logits:\n%s", out)
	}

	out, err = child("vulkan")
	if err == nil {
		t.Fatalf("--device vulkan without a loader succeeded:\n%s", out)
	}
	if !strings.Contains(out, "no Vulkan loader") || !strings.Contains(out, "libvulkan1") {
		t.Errorf("--device vulkan's error does not say what is missing:\n%s", out)
	}
}

// TestDeviceChild is TestDeviceChoiceWithoutALoader's child: it runs `moe logits` with the
// device named in MOE_TEST_DEVICE_CHILD.
func TestDeviceChild(t *testing.T) {
	device := os.Getenv("MOE_TEST_DEVICE_CHILD")
	if device == "" {
		t.Skip("run by TestDeviceChoiceWithoutALoader")
	}
	rows := logitsOf(t, "--model", os.Getenv("MOE_TEST_MODEL"), "--device", device)
	fmt.Printf("rows: %d\n", len(rows))
}
