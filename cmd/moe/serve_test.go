package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeChildProcess is not a test: TestServeDrainsOnSIGTERM runs this
// test binary again with MOE_SERVE_ARGS set, and then it is `moe` itself.
func TestServeChildProcess(t *testing.T) {
	args := os.Getenv("MOE_SERVE_ARGS")
	if args == "" {
		t.Skip("runs only as the child of TestServeDrainsOnSIGTERM")
	}
	os.Args = append([]string{"moe"}, strings.Fields(args)...)
	main()
}

func TestServeDrainsOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server process")
	}
	path := tinyModel(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestServeChildProcess$")
	cmd.Env = append(os.Environ(), "MOE_SERVE_ARGS=serve --model "+path+" --host 127.0.0.1 --port 0 --served-model-name tiny --threads 1 --shutdown-grace 1m")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	// The log says where it listens.
	addrs := make(chan string, 1)
	var logs bytes.Buffer
	go func() {
		sc := bufio.NewScanner(stderr)
		re := regexp.MustCompile(`msg=listening addr=(\S+)`)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				addrs <- m[1]
			}
		}
	}()
	var url string
	select {
	case a := <-addrs:
		url = "http://" + a
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

	body, _ := json.Marshal(map[string]any{"model": "tiny", "prompt": "still going", "max_tokens": 500, "temperature": 0, "ignore_eos": true, "stream": true})
	res, err := http.Post(url+"/v1/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	rd := bufio.NewReader(res.Body)
	if _, err := rd.ReadString('\n'); err != nil { // the first token arrived
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rd)
	if err != nil {
		t.Fatalf("reading the in-flight stream after SIGTERM: %v", err)
	}
	if !bytes.Contains(rest, []byte(`"finish_reason":"length"`)) || !bytes.HasSuffix(bytes.TrimSpace(rest), []byte("data: [DONE]")) {
		t.Errorf("the in-flight request did not complete: ...%s", tail(rest, 300))
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("moe serve exited with %v after SIGTERM; log:\n%s", err, logs.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("moe serve did not exit after SIGTERM")
	}
	if !strings.Contains(logs.String(), "msg=draining running=1") {
		t.Errorf("the log shows no drain with a request in flight:\n%s", logs.String())
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return fmt.Sprintf("%s", b)
}

func TestTheAPIKeyComesFromOnePlace(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/api-key"
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := dir + "/empty"
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		flag, file, env string
		want            string // "" with wantErr
		wantErr         string
	}{
		{want: ""},
		{flag: "from-flag", want: "from-flag"},
		{file: file, want: "from-file"},
		{env: " from-env\n", want: "from-env"},
		{flag: "a", env: "b", wantErr: "once"},
		{file: file, env: "b", wantErr: "once"},
		{flag: "a", file: file, wantErr: "once"},
		{file: empty, wantErr: "is empty"},
		{file: dir + "/missing", wantErr: "reading the API key"},
	}
	for _, tt := range tests {
		got, err := resolveAPIKey(tt.flag, tt.file, tt.env)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%+v: err %v, want one saying %q", tt, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("%+v: %q, %v; want %q", tt, got, err, tt.want)
		}
	}
}
