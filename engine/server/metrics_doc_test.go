package server

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/scheduler"
)

// The metric names are an API that docs/metrics.md documents; the two
// must list the same names.
func TestDocsMetricsListsExactlyTheMetricsServed(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `((?:vllm:|moe_engine_)[a-z0-9_]+)` \\|").FindAllSubmatch(doc, -1) {
		documented[string(m[1])] = true
	}
	m := newMetrics("x", func() (scheduler.Stats, bool) { return scheduler.Stats{}, false },
		func() (string, model.DeviceMemory, bool) {
			return "vulkan:0 a GPU", model.DeviceMemory{Used: 1, Budget: 2}, true
		})
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var served []string
	for _, f := range families {
		if name := f.GetName(); strings.HasPrefix(name, "vllm:") || strings.HasPrefix(name, "moe_engine_") {
			served = append(served, name)
			if !documented[name] {
				t.Errorf("%s is served but not in docs/metrics.md", name)
			}
		}
	}
	for name := range documented {
		if !slices.Contains(served, name) {
			t.Errorf("docs/metrics.md documents %s, which is not served", name)
		}
	}
	if len(served) != 16 {
		t.Errorf("%d vllm: and moe_engine_ metrics served: %v", len(served), served)
	}
}
