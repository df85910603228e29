// Package openai runs the official openai npm client (pinned in
// package.json and package-lock.json here) against a real `moe serve` on
// loopback with a generated model. The client must be installed (`make
// openai-client`, which runs npm ci here); without it the test fails, it
// never skips.
package openai

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moe-operator/moe-operator/engine/modelgen"
)

func here() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

func TestOfficialOpenAIClientAgainstMoeServe(t *testing.T) {
	dir := here()
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai", "package.json")); err != nil {
		t.Fatalf("the openai npm client is not installed in %s (run `make openai-client`): %v", dir, err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not on PATH: %v", err)
	}

	tmp := t.TempDir()
	moe := filepath.Join(tmp, "moe")
	build := exec.Command("go", "build", "-o", moe, "./cmd/moe")
	build.Dir = filepath.Join(dir, "..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building moe: %v\n%s", err, out)
	}
	model := filepath.Join(tmp, "small.gguf")
	c, _ := modelgen.Preset("small") // the real Mistral vocabulary
	if err := modelgen.Write(model, c); err != nil {
		t.Fatal(err)
	}

	const name, key = "small-test", "test-key"
	serve := exec.Command(moe, "serve", "--model", model, "--host", "127.0.0.1", "--port", "0",
		"--served-model-name", name, "--api-key", key, "--threads", "2",
		"--max-num-seqs", "2", "--max-queue", "2", "--shutdown-grace", "10s")
	stderr, err := serve.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	defer serve.Process.Kill()
	addr := make(chan string, 1)
	var logs strings.Builder
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		re := regexp.MustCompile(`msg=listening addr=(\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addr <- "http://" + m[1]
			}
		}
	}()
	var url string
	select {
	case url = <-addr:
	case <-time.After(time.Minute):
		t.Fatal("moe serve did not log its address")
	}
	deadline := time.Now().Add(time.Minute)
	for {
		res, err := http.Get(url + "/ready")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("moe serve never became ready")
		}
		time.Sleep(20 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=spec", "client.test.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "MOE_URL="+url, "MOE_MODEL="+name, "MOE_API_KEY="+key, "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	t.Logf("node --test client.test.mjs:\n%s", out)
	if err != nil {
		t.Errorf("the openai client tests failed: %v", err)
	}

	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := serve.Wait(); err != nil {
		t.Errorf("moe serve exited with %v after SIGTERM", err)
	}
	<-logged
	if t.Failed() {
		t.Logf("moe serve log:\n%s", logs.String())
	}
}
