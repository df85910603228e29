package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/moe-operator/moe-operator/engine/source"
)

// resolveModel turns --model into a local path. Paths, file:// and pvc://
// URIs resolve directly. hf:// and https:// models are opened from the
// cache when an earlier pull completed there, without the network (a pod
// whose init container ran `moe pull` starts offline, even from a
// read-only volume); otherwise they are pulled first, with progress on log
// (JSON lines, or a bar on a terminal).
func resolveModel(ctx context.Context, uri, cache string, log *os.File) (string, error) {
	u, err := source.Parse(uri)
	if err != nil {
		return "", err
	}
	opts := source.Options{Dest: cache}
	if u.Remote() {
		if res, err := source.Cached(uri, opts); err == nil {
			return res.Path, nil
		}
		mode, _ := progressMode("auto", log)
		out := &pullOutput{mode: mode, stdout: log, stderr: log, uri: uri}
		opts.Report, opts.ProgressInterval = out.report, 5*time.Second
		if mode == "bar" {
			opts.ProgressInterval = 200 * time.Millisecond
		}
		res, err := source.Fetch(ctx, uri, opts)
		out.finish(res, err)
		if err != nil {
			return "", err
		}
		return res.Path, nil
	}
	res, err := source.Fetch(ctx, uri, opts)
	if err != nil {
		return "", err
	}
	return res.Path, nil
}

// quantizeProgress logs on-load conversion to w at every tenth of the work.
func quantizeProgress(w io.Writer, what string) func(done, total int64) {
	var mu sync.Mutex
	last := -1
	return func(done, total int64) {
		if total <= 0 {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if step := int(10 * done / total); step > last {
			last = step
			fmt.Fprintf(w, "%s: %d%% of %s\n", what, 10*step, humanBytes(total))
		}
	}
}
