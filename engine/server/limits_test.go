package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/moe-operator/moe-operator/engine/scheduler"
	"github.com/moe-operator/moe-operator/engine/server"
)

// allocated is the bytes fn allocates, in the whole process: the client's
// and the server's side of a request.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestHugePromptsAreRefusedCheaply(t *testing.T) {
	h := start(t, server.Options{}, scheduler.Config{})
	big := strings.Repeat("a", 16<<20)
	// Short words: few bytes per token, so the size alone cannot refuse them.
	words := strings.Repeat("a b ", 20_000)
	tests := []struct {
		name, path  string
		body        map[string]any
		status      int
		param, code string
	}{
		{"16 MB prompt", "/v1/completions", map[string]any{"prompt": big}, 413, "", "request_too_large"},
		{"16 MB message", "/v1/chat/completions", map[string]any{"messages": []map[string]string{{"role": "user", "content": big}}}, 413, "", "request_too_large"},
		{"a prompt too long by its size", "/v1/completions", map[string]any{"prompt": big[:200_000]}, 400, "prompt", "context_length_exceeded"},
		{"a prompt too long by its tokens", "/v1/completions", map[string]any{"prompt": words}, 400, "prompt", "context_length_exceeded"},
		{"messages too long by their tokens", "/v1/chat/completions", map[string]any{"messages": []map[string]string{{"role": "user", "content": words}}}, 400, "messages", "context_length_exceeded"},
		{"one of many prompts too long", "/v1/completions", map[string]any{"prompt": []string{"hi", words}}, 400, "prompt", "context_length_exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, err := json.Marshal(tt.body)
			if err != nil {
				t.Fatal(err)
			}
			text := string(body)
			var r response
			n := allocated(func() { r = do(t, "POST", h.url+tt.path, text) })
			checkError(t, r, tt.status, tt.param, tt.code)
			t.Logf("%d-byte body: %d, %.1f MiB allocated", len(body), r.status, float64(n)/(1<<20))
			if n > 64<<20 {
				t.Errorf("refusing a %d-byte body allocated %.0f MiB, want under 64 MiB", len(body), float64(n)/(1<<20))
			}
		})
	}
}

func TestTheBodyLimitCanBeSet(t *testing.T) {
	h := start(t, server.Options{MaxBodyBytes: 1000}, scheduler.Config{})
	prompt := strings.Repeat("x", 1000)
	checkError(t, do(t, "POST", h.url+"/v1/completions", map[string]any{"prompt": prompt, "max_tokens": 1}), 413, "", "request_too_large")
	if r := do(t, "POST", h.url+"/v1/completions", map[string]any{"prompt": prompt[:100], "max_tokens": 1}); r.status != 200 {
		t.Errorf("a body under the limit: %d %s", r.status, r.body)
	}
}

func TestUnavailableAnswersSayWhenToRetry(t *testing.T) {
	loading := httptest.NewServer(server.New(server.Options{ModelName: modelName, RetryAfter: 3 * time.Second}).Handler())
	defer loading.Close()
	r := do(t, "GET", loading.URL+"/v1/models", nil)
	checkError(t, r, 503, "", "not_ready")
	if got := r.header.Get("Retry-After"); got != "3" {
		t.Errorf("while loading: Retry-After %q, want 3", got)
	}

	h := start(t, server.Options{RetryAfter: 2 * time.Second}, scheduler.Config{})
	h.srv.StartDraining()
	r = do(t, "POST", h.url+"/v1/completions", map[string]any{"prompt": "hi", "max_tokens": 1})
	checkError(t, r, 503, "", "draining")
	if got := r.header.Get("Retry-After"); got != "2" {
		t.Errorf("while draining: Retry-After %q, want 2", got)
	}
}

// smallBuffers makes each accepted connection's send buffer small, so that
// a client that stops reading blocks the server's writes soon.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
	}
	return c, err
}

func TestAStreamTheClientStopsReadingIsCutAfterTheWriteTimeout(t *testing.T) {
	for _, timeout := range []time.Duration{200 * time.Millisecond, time.Minute} {
		t.Run(timeout.String(), func(t *testing.T) {
			m, err := loadTiny()
			if err != nil {
				t.Fatal(err)
			}
			srv := server.New(server.Options{ModelName: modelName, WriteTimeout: timeout})
			sch, err := scheduler.New(m, scheduler.Config{})
			if err != nil {
				t.Fatal(err)
			}
			srv.Attach(sch)
			hs := httptest.NewUnstartedServer(srv.Handler())
			hs.Listener = smallBuffers{hs.Listener}
			hs.Start()
			defer func() { hs.Close(); sch.Close(); m.Close() }()

			var d net.Dialer
			conn, err := d.DialContext(context.Background(), "tcp", hs.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.(*net.TCPConn).SetReadBuffer(4096)
			// Every token with 20 alternatives: a stream of ~1 MB, far more than the buffers.
			body := `{"prompt":"hi","max_tokens":500,"ignore_eos":true,"stream":true,"logprobs":20}`
			fmt.Fprintf(conn, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			// Stop reading until generation is over and the timeout has passed.
			// Generation ends at max_tokens, or earlier when the write timeout cancels it.
			waitFor(t, "generation to start", func() bool { return sch.Stats().GenerationTokens > 0 })
			waitFor(t, "generation to end", func() bool {
				st := sch.Stats()
				return st.Running == 0 && st.Waiting == 0
			})
			time.Sleep(time.Second)
			conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			rest, _ := io.ReadAll(bufio.NewReader(conn))
			done := bytes.Contains(rest, []byte("data: [DONE]"))
			if timeout < time.Second && done {
				t.Errorf("the stream finished although the client did not read for longer than the %v write timeout", timeout)
			}
			if timeout > time.Second && !done {
				t.Errorf("the stream was cut within the %v write timeout (%d bytes)", timeout, len(rest))
			}
		})
	}
}

// runServer runs Run on a loopback port until the test ends, and waits for /ready.
func runServer(t *testing.T, c server.RunConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	c.Options.ModelName, c.Listener, c.Load = modelName, ln, loadTiny
	go func() { ran <- server.Run(ctx, c) }()
	t.Cleanup(func() {
		stop()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitFor(t, "ready", func() bool { return do(t, "GET", url+"/ready", nil).status == 200 })
	http.DefaultClient.CloseIdleConnections() // they would hold connection slots
	return url
}

func TestRunBoundsConnectionsAndSlowBodies(t *testing.T) {
	url := runServer(t, server.RunConfig{MaxConnections: 1, ReadTimeout: 300 * time.Millisecond})
	addr := strings.TrimPrefix(url, "http://")
	// A client that sends its headers and then a body that never ends holds
	// the only connection until the read timeout closes it.
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"prompt\":")
	time.Sleep(50 * time.Millisecond)

	// Meanwhile a second connection is accepted by the kernel but not served.
	other, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	fmt.Fprintf(other, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	other.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	if n, err := other.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("a second connection was served while the limit of one was held (%v)", err)
	}

	// The read timeout ends the slow body: its connection gets an answer or is closed...
	slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(slow); err != nil {
		t.Fatalf("the slow body's connection was neither answered nor closed: %v (%q)", err, got)
	}
	// ...and the waiting connection is served.
	other.SetReadDeadline(time.Now().Add(5 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(other), nil)
	if err != nil {
		t.Fatalf("the second connection after the first closed: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("/health on the second connection: %d", res.StatusCode)
	}
}
