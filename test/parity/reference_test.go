// Package parity checks the engine against llama.cpp, run through the
// node-llama-cpp package pinned in test/reference. These tests need the
// reference installed (`make reference`); without it they fail, never skip.
package parity

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// referenceDir returns test/reference, failing the test when llama.cpp is
// not installed there.
func referenceDir(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "reference")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "node-llama-cpp")); err != nil {
		t.Fatalf("the llama.cpp reference is not installed in %s (run `make reference`): %v", dir, err)
	}
	return dir
}

// reference runs `node llama.mjs cmd model` with req as JSON on stdin and
// decodes its JSON answer into resp.
func reference(t testing.TB, cmd, model string, req, resp any) {
	t.Helper()
	dir := referenceDir(t)
	in, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command("node", filepath.Join(dir, "llama.mjs"), cmd, model)
	c.Dir = dir
	c.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		t.Fatalf("llama.cpp reference %s failed: %v\n%s", cmd, err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), resp); err != nil {
		t.Fatalf("decoding llama.cpp reference output: %v\n%s", err, firstBytes(stdout.Bytes(), 500))
	}
}

func firstBytes(b []byte, n int) string {
	if len(b) > n {
		return fmt.Sprintf("%s...", b[:n])
	}
	return string(b)
}

// referenceLogits returns llama.cpp's raw logits at every position, from
// one batched evaluation (its prefill kernels) or, with sequential, one
// evaluation per token (its decode kernels).
func referenceLogits(t testing.TB, model string, tokens []int32, sequential bool) [][]float32 {
	var resp struct {
		Logits [][]float32 `json:"logits"`
	}
	reference(t, "logits", model, map[string]any{"tokens": tokens, "threads": 1, "sequential": sequential}, &resp)
	if len(resp.Logits) != len(tokens) {
		t.Fatalf("reference returned %d rows of logits for %d tokens", len(resp.Logits), len(tokens))
	}
	return resp.Logits
}

// referenceTokenize returns llama.cpp's token ids for each text (no BOS, no
// special-token parsing).
func referenceTokenize(t testing.TB, model string, texts []string) [][]int32 {
	var resp struct {
		Tokens [][]int32 `json:"tokens"`
	}
	reference(t, "tokenize", model, map[string]any{"texts": texts}, &resp)
	return resp.Tokens
}
