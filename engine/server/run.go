package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/scheduler"
)

// RunConfig is what Run needs.
type RunConfig struct {
	Options
	// Listener is where to serve; Run closes it.
	Listener net.Listener
	// Load loads the model; Run calls it after it starts serving /health,
	// and /ready turns true once it returns.
	Load func() (*model.Model, error)
	// Scheduler configures batching (its Observer is set by Run).
	Scheduler scheduler.Config
	// ShutdownGrace bounds how long requests in flight may take to finish
	// once ctx ends (default 30s); the rest are aborted.
	ShutdownGrace time.Duration
	// ReadTimeout bounds reading a request, headers and body (default 1m).
	ReadTimeout time.Duration
	// MaxConnections bounds the open connections; past it, new ones wait
	// in the listen backlog (default 4096).
	MaxConnections int
}

// Run serves until ctx ends (on SIGTERM, say), then drains: /ready turns
// false, new requests get 503, requests in flight finish within
// ShutdownGrace (and are aborted after it), and Run returns nil. It
// returns an error only when the model cannot be loaded or the listener
// fails.
func Run(ctx context.Context, c RunConfig) error {
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 30 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = time.Minute
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = 4096
	}
	s := New(c.Options)
	log := s.log
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       c.ReadTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(limitListener(c.Listener, c.MaxConnections)) }()
	stopHTTP := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if hs.Shutdown(sctx) != nil {
			hs.Close()
		}
	}
	log.Info("listening", "addr", c.Listener.Addr().String())

	type loaded struct {
		m   *model.Model
		err error
	}
	loading := make(chan loaded, 1)
	start := time.Now()
	go func() {
		m, err := c.Load()
		loading <- loaded{m, err}
	}()
	var m *model.Model
	select {
	case l := <-loading:
		if l.err != nil {
			stopHTTP()
			return fmt.Errorf("loading the model: %w", l.err)
		}
		m = l.m
	case err := <-served:
		return err
	case <-ctx.Done():
		log.Info("stopped while loading the model")
		stopHTTP()
		return nil
	}
	defer m.Close()

	sc := c.Scheduler
	sc.Observer = s.Observer()
	sch, err := scheduler.New(m, sc)
	if err != nil {
		stopHTTP()
		return err
	}
	defer sch.Close()
	if err := s.Attach(sch); err != nil {
		stopHTTP()
		return err
	}
	cfg := sch.Config()
	attrs := []any{"model", c.ModelName, "load_seconds", time.Since(start).Seconds(), "context", cfg.Context,
		"kv_cache_tokens", sch.KVCacheTokens(), "max_model_len", sch.MaxSequence(), "max_num_seqs", cfg.MaxNumSeqs, "max_batched_tokens", cfg.MaxBatchedTokens}
	if name, mem, ok := sch.Device(); ok {
		// Ready means the weights and the KV cache are in this device's memory.
		attrs = append(attrs, "device", name, "device_memory_used_bytes", mem.Used, "device_memory_budget_bytes", mem.Budget)
	}
	log.Info("ready", attrs...)

	select {
	case <-ctx.Done():
	case err := <-served:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	st := sch.Stats()
	log.Info("draining", "running", st.Running, "waiting", st.Waiting, "grace", c.ShutdownGrace.String())
	// Clients that keep connections alive through a Service stay pinned to this replica
	// after it has left the endpoints. Close the idle connections now and answer on the
	// busy ones with "Connection: close", so that their next request opens a connection to
	// another replica instead of meeting a 503 here.
	hs.SetKeepAlivesEnabled(false)
	gctx, cancel := context.WithTimeout(context.Background(), c.ShutdownGrace)
	defer cancel()
	if err := s.Drain(gctx); err != nil {
		log.Warn("the shutdown grace period ended; aborted the requests still running", "grace", c.ShutdownGrace.String())
	}
	stopHTTP()
	log.Info("stopped")
	return nil
}

// limitListener accepts at most n connections at once: Accept waits for
// one to close, and the kernel's backlog holds the rest.
func limitListener(l net.Listener, n int) net.Listener {
	return &limited{Listener: l, slots: make(chan struct{}, n), done: make(chan struct{})}
}

type limited struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limited) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &slotConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limited) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
