package source

import (
	"path/filepath"
	"testing"

	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/source/sourcetest"
)

// newHub starts a loopback Hub for the test.
func newHub(t *testing.T) *sourcetest.Hub {
	h := sourcetest.NewHub()
	t.Cleanup(h.Close)
	return h
}

// generatedRepo writes a small generated Mixtral model as a Hugging Face
// checkpoint with several shards, and returns its directory.
func generatedRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	c, _ := modelgen.Preset("tiny")
	c.Seed = 11
	g := filepath.Join(dir, "m.gguf")
	if err := modelgen.Write(g, c); err != nil {
		t.Fatal(err)
	}
	hf := filepath.Join(dir, "hf")
	if err := modelgen.ExportHF(g, hf, modelgen.HFOptions{MaxShardBytes: 400 << 10}); err != nil {
		t.Fatal(err)
	}
	return hf
}
