package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/moe-operator/moe-operator/engine/source"
)

func init() { rootCmd.AddCommand(newPullCmd()) }

const pullLong = `pull downloads a model into the model cache, so that serve, run and logits open
it from disk. It is what an init container or loader Job runs to fill a cache
volume once; running it again on a complete cache transfers nothing.

URIs:
  hf://org/repo[@revision][/file]   Hugging Face: the safetensors checkpoint with its
                                    config.json and tokenizer files, or the repository's
                                    single .gguf file, or the file named
  https://host/path[#sha256=HEX]    any file
  pvc://claim/path, file:///path    local: only checked, nothing is copied

Environment: HF_TOKEN (or --token-file) authenticates to the Hub; HF_ENDPOINT
points at a mirror; MOE_MODEL_CACHE is the default --dest.

Output. With --progress json (the default when stderr is not a terminal) stdout
carries one JSON object per line: "start", "progress" (every --progress-interval:
bytes, total, rate in bytes/s, etaSeconds), "file", "resume", "retry", "wait",
"offline" (the Hub is unreachable and a complete earlier pull is used), and last
"done" (with path) or "error" (with code and error). On a terminal a
progress bar goes to stderr and stdout gets the model's path.

Exit codes: 0 done; 2 bad arguments or URI; 3 not authorized (401/403: fix the
token); 4 not found (404); 5 checksum mismatch; 6 server or network failures
outlasted the retries, or interrupted (run again: it resumes); 7 the cache is not
writable or is full; 1 anything else.`

// exitError carries a process exit code for main.
type exitError struct {
	err  error
	code int
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }
func (e *exitError) ExitCode() int { return e.code }

func usageError(err error) error { return &exitError{err, source.ExitUsage} }

func newPullCmd() *cobra.Command {
	var (
		dest, progress, tokenFile, termLog string
		parallel, retries                  int
		interval                           time.Duration
		allowHTTP, verify                  bool
	)
	cmd := &cobra.Command{
		Use:   "pull URI [--dest DIR]",
		Short: "Download a model (hf://, https://) into the model cache",
		Long:  pullLong,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError(fmt.Errorf("pull takes exactly one URI, have %d arguments", len(args)))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := source.Options{Dest: dest, Parallel: parallel, Retries: retries, AllowHTTP: allowHTTP, Verify: verify}
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return usageError(fmt.Errorf("--token-file: %w", err))
				}
				opts.Token = strings.TrimSpace(string(b))
			}
			mode, err := progressMode(progress, os.Stderr)
			if err != nil {
				return usageError(err)
			}
			out := &pullOutput{mode: mode, stdout: cmd.OutOrStdout(), stderr: cmd.ErrOrStderr(), uri: args[0]}
			opts.Report = out.report
			opts.ProgressInterval = interval
			if mode == "bar" {
				opts.ProgressInterval = 200 * time.Millisecond
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := source.Fetch(ctx, args[0], opts)
			final := out.finish(res, err)
			if termLog != "" {
				writeTerminationLog(termLog, final)
			}
			if err != nil {
				return &exitError{err, source.ExitCode(err)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dest, "dest", "", "cache directory (default $MOE_MODEL_CACHE or ${XDG_CACHE_HOME:-~/.cache}/moe/models)")
	f.IntVar(&parallel, "parallel", 4, "files downloaded at once")
	f.IntVar(&retries, "retries", 6, "failed attempts in a row, without progress, before a file is given up")
	f.StringVar(&progress, "progress", "auto", "auto (bar on a terminal, else json), bar, json or none")
	f.DurationVar(&interval, "progress-interval", 5*time.Second, "time between JSON progress lines")
	f.StringVar(&tokenFile, "token-file", "", "read the Hugging Face token from this file (a mounted Secret) instead of HF_TOKEN")
	f.StringVar(&termLog, "termination-log", "", "also write the final JSON event here (e.g. /dev/termination-log, for the pod's status)")
	f.BoolVar(&allowHTTP, "allow-http", false, "allow plain http:// to non-loopback hosts")
	f.BoolVar(&verify, "verify", false, "re-hash files already in the cache instead of trusting their verification record")
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	return cmd
}

// progressMode resolves --progress.
func progressMode(s string, stderr *os.File) (string, error) {
	switch s {
	case "bar", "json", "none":
		return s, nil
	case "auto", "":
		if term.IsTerminal(int(stderr.Fd())) {
			return "bar", nil
		}
		return "json", nil
	}
	return "", fmt.Errorf("--progress must be auto, bar, json or none, not %q", s)
}

// pullOutput renders events as JSON lines or a progress bar.
type pullOutput struct {
	mode           string
	stdout, stderr io.Writer
	uri            string
	mu             sync.Mutex
	barShown       bool
}

func (o *pullOutput) report(e source.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch o.mode {
	case "json":
		json.NewEncoder(o.stdout).Encode(e)
	case "bar":
		switch e.Event {
		case "progress", "file", "start":
			o.drawBar(e)
		case "retry":
			o.line(fmt.Sprintf("retrying %s in %.1fs (attempt %d): %s", orAll(e.File), e.Wait, e.Attempt, e.Error))
			o.drawBar(e)
		case "resume", "wait":
			o.line(fmt.Sprintf("%s: %s", e.File, e.Msg))
			o.drawBar(e)
		case "offline":
			o.line(fmt.Sprintf("%s (%s)", e.Msg, e.Error))
		}
	}
}

func orAll(s string) string {
	if s == "" {
		return "the file list"
	}
	return s
}

// line prints a message above the bar.
func (o *pullOutput) line(s string) {
	if o.barShown {
		fmt.Fprint(o.stderr, "\r\x1b[K")
	}
	fmt.Fprintln(o.stderr, s)
	o.barShown = false
}

func (o *pullOutput) drawBar(e source.Event) {
	const width = 30
	frac := 0.0
	if e.Total > 0 {
		frac = min(1, float64(e.Bytes)/float64(e.Total))
	}
	fill := int(frac * width)
	bar := strings.Repeat("=", fill)
	if fill < width {
		bar += ">" + strings.Repeat(" ", width-fill-1)
	}
	s := fmt.Sprintf("\r\x1b[K%s [%s] %3.0f%% %s/%s", o.uri, bar, 100*frac, humanBytes(e.Bytes), humanBytes(e.Total))
	if e.Rate > 0 {
		s += fmt.Sprintf(" %s/s", humanBytes(int64(e.Rate)))
	}
	if e.ETA > 0 {
		s += " ETA " + (time.Duration(e.ETA) * time.Second).Round(time.Second).String()
	}
	s += fmt.Sprintf(" (%d/%d files)", e.Files, e.FilesTotal)
	fmt.Fprint(o.stderr, s)
	o.barShown = true
}

func humanBytes(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f GB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1f MB", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%d B", n)
}

// finish prints the outcome and returns the final event.
func (o *pullOutput) finish(res *source.Result, err error) source.Event {
	e := source.Event{Time: time.Now().UTC(), URI: o.uri}
	if err != nil {
		e.Event, e.Code, e.Error = "error", source.ExitCode(err), err.Error()
	} else {
		e.Event, e.Path = "done", res.Path
		e.Bytes, e.Total, e.Downloaded, e.Resumed, e.Reused = res.Total, res.Total, res.Downloaded, res.Resumed, res.Reused
		e.Files, e.FilesTotal = len(res.Files), len(res.Files)
		if s := res.Elapsed.Seconds(); s > 0 && res.Downloaded > 0 {
			e.Rate = float64(res.Downloaded) / s
		}
		e.Msg = fmt.Sprintf("%s in %s: %s downloaded, %s resumed, %s already cached", res.Path, res.Elapsed.Round(time.Millisecond),
			humanBytes(res.Downloaded), humanBytes(res.Resumed), humanBytes(res.Reused))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	switch o.mode {
	case "json":
		json.NewEncoder(o.stdout).Encode(e)
	case "bar", "none":
		if o.barShown {
			fmt.Fprintln(o.stderr)
		}
		if err == nil {
			if o.mode == "bar" {
				fmt.Fprintln(o.stderr, e.Msg)
			}
			fmt.Fprintln(o.stdout, res.Path)
		}
	}
	return e
}

// writeTerminationLog writes the final event where Kubernetes reads a
// container's termination message (at most 4096 bytes).
func writeTerminationLog(path string, e source.Event) {
	b, _ := json.Marshal(e)
	if len(b) > 4096 && len(e.Error) > 0 {
		e.Error = e.Error[:max(0, len(e.Error)-(len(b)-4096)-3)] + "..."
		b, _ = json.Marshal(e)
	}
	_ = os.WriteFile(path, b, 0o644)
}
