// Package source resolves model URIs and downloads remote models into a
// local cache, so that the engine can open them from disk.
//
// URIs (see Parse): hf://org/repo[@revision][/file] for Hugging Face
// repositories, https://… for any file, pvc://claim/path for a claim the
// operator mounts at PVCMountRoot/claim, file:///path and plain paths.
// Local URIs resolve to their path; remote ones are fetched by Fetch into
// the cache directory URI.CacheDir(root).
//
// Downloads are written under the cache's .moe/ directory as <name>.partial
// and renamed into place only once complete and verified, so a file at its
// final name is always whole. An interrupted download resumes from its
// partial file with an HTTP Range request. Files whose sha256 the source
// publishes (the Hub's LFS files; an https URI's #sha256= fragment) are
// verified, as are the Hub's small files by their git blob id; a mismatch
// deletes the file and fails with ErrChecksum. 5xx answers, 429 and
// connection failures are retried with exponential backoff; 401, 403 and
// 404 fail at once with ErrAuth or ErrNotFound and a message that says what
// to change. Several processes may pull into one cache at once: each file
// is guarded by an advisory lock (flock) while it is fetched, and whoever
// waits finds it complete and verified.
package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// DefaultEndpoint is the Hugging Face Hub.
const DefaultEndpoint = "https://huggingface.co"

// metaDir holds partial downloads, locks and verification records inside a
// cache directory.
const metaDir = ".moe"

// DefaultCacheDir is the cache root when none is given: $MOE_MODEL_CACHE,
// else ${XDG_CACHE_HOME:-~/.cache}/moe/models.
func DefaultCacheDir() string {
	if d := os.Getenv("MOE_MODEL_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "moe", "models")
	}
	return filepath.Join(os.TempDir(), "moe", "models")
}

// Options tune Fetch. The zero value works: it reads HF_ENDPOINT and
// HF_TOKEN from the environment and caches under DefaultCacheDir.
type Options struct {
	// Dest is the cache root (DefaultCacheDir when empty).
	Dest string
	// Endpoint is the Hub's base URL ($HF_ENDPOINT, else DefaultEndpoint).
	Endpoint string
	// Token is sent as a Bearer token to the Hub ($HF_TOKEN, else
	// $HUGGING_FACE_HUB_TOKEN). It is never sent to other hosts, nor to
	// the hosts the Hub redirects downloads to.
	Token string
	// Client makes the requests (a client with connection and header
	// timeouts but no overall deadline when nil: files take hours).
	Client *http.Client
	// Parallel is the number of files fetched at once (default 4).
	Parallel int
	// Retries is how many failed attempts in a row, without a byte of
	// progress, a file may have before Fetch gives up (default 6).
	Retries int
	// Backoff is the wait before the first retry; it doubles up to 30s
	// (default 1s). A Retry-After header, up to a minute, takes precedence.
	Backoff time.Duration
	// AllowHTTP permits http:// (unencrypted) URLs and endpoints on
	// non-loopback hosts.
	AllowHTTP bool
	// PVCRoot replaces PVCMountRoot (for tests).
	PVCRoot string
	// Offline uses only the cache: a remote URI resolves if an earlier
	// pull completed, and fails with ErrNotFound otherwise.
	Offline bool
	// Verify re-hashes files already in the cache instead of trusting
	// the record of their earlier verification.
	Verify bool
	// Report receives progress events; it may be nil. It is called from
	// several goroutines, one call at a time.
	Report func(Event)
	// ProgressInterval is the time between "progress" events (default 1s).
	ProgressInterval time.Duration
}

func (o *Options) defaults() {
	if o.Dest == "" {
		o.Dest = DefaultCacheDir()
	}
	if o.Endpoint == "" {
		o.Endpoint = os.Getenv("HF_ENDPOINT")
	}
	if o.Endpoint == "" {
		o.Endpoint = DefaultEndpoint
	}
	o.Endpoint = strings.TrimRight(o.Endpoint, "/")
	if o.Token == "" {
		o.Token = os.Getenv("HF_TOKEN")
	}
	if o.Token == "" {
		o.Token = os.Getenv("HUGGING_FACE_HUB_TOKEN")
	}
	o.Token = strings.TrimSpace(o.Token)
	if o.Client == nil {
		o.Client = defaultClient()
	}
	// The token is for the Hub: redirects elsewhere (the Hub sends LFS
	// downloads to a CDN with signed URLs) must not carry it.
	c := *o.Client
	next := c.CheckRedirect
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) > 0 && req.URL.Host != via[0].URL.Host {
			req.Header.Del("Authorization")
		}
		if next != nil {
			return next(req, via)
		}
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		return nil
	}
	o.Client = &c
	if o.Parallel <= 0 {
		o.Parallel = 4
	}
	if o.Retries <= 0 {
		o.Retries = 6
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = time.Second
	}
}

func defaultClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.ResponseHeaderTimeout = 60 * time.Second
	t.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: t}
}

// Result describes a resolved model.
type Result struct {
	URI string
	// Path is what to open: the model's directory or file.
	Path string
	// Dir is the cache directory of a remote URI ("" for local ones).
	Dir string
	// Commit is the commit a Hub revision resolved to.
	Commit string
	// Files are the model's files (none for a local URI).
	Files []FileResult
	// Total is the size of Files; Downloaded the bytes this call
	// transferred; Resumed the bytes of partial files an earlier,
	// interrupted pull left and this one kept; Reused the bytes of
	// files already complete in the cache.
	Total, Downloaded, Resumed, Reused int64
	Elapsed                            time.Duration
}

// File states in FileResult.State.
const (
	StateDownloaded = "downloaded" // fetched from the start
	StateResumed    = "resumed"    // completed from a partial download
	StateReused     = "reused"     // already complete in the cache
)

// FileResult is one file of a fetched model.
type FileResult struct {
	Name       string `json:"name"`
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256,omitempty"`
	State      string `json:"state"`
	Downloaded int64  `json:"downloaded"`
	Resumed    int64  `json:"resumed,omitempty"`
}

// Fetch resolves uri to a local path, downloading a remote model into the
// cache first unless the cache already holds it whole (then only the
// Hub's file list is fetched, to see whether the revision moved). Errors
// are *Error values wrapping one of the sentinel errors.
func Fetch(ctx context.Context, uri string, opts Options) (*Result, error) {
	opts.defaults()
	start := time.Now()
	u, err := Parse(uri)
	if err != nil {
		return nil, err
	}
	if !u.Remote() {
		return resolveLocal(u, opts)
	}
	if u.Scheme == "http" && !opts.AllowHTTP && !loopback(u.URL) {
		return nil, invalid(uri, "plain http:// is only allowed to loopback hosts; use https:// (or --allow-http)")
	}
	if u.Scheme == "hf" && strings.HasPrefix(opts.Endpoint, "http://") && !opts.AllowHTTP && !loopback(opts.Endpoint) {
		return nil, invalid(uri, fmt.Sprintf("HF_ENDPOINT %s is plain http:// to a non-loopback host; use https:// (or --allow-http)", opts.Endpoint))
	}
	dir := u.CacheDir(opts.Dest)
	if opts.Offline {
		return cached(u, dir)
	}
	p := &puller{u: u, dir: dir, opts: opts}
	var specs []fileSpec
	var modelRel string
	switch u.Scheme {
	case "hf":
		info, err := p.listHF(ctx)
		if errors.Is(err, ErrUnavailable) && ctx.Err() == nil {
			// The Hub is unreachable, but an earlier pull may have completed:
			// a warm cache must not depend on the Hub being up.
			if res, cerr := cached(u, dir); cerr == nil {
				if opts.Report != nil {
					opts.Report(Event{Time: time.Now().UTC(), Event: "offline", URI: uri, Bytes: res.Total, Total: res.Total, Reused: res.Total,
						Files: len(res.Files), FilesTotal: len(res.Files), Error: err.Error(),
						Msg: fmt.Sprintf("the Hub is unreachable; using the complete copy pulled earlier (commit %s)", res.Commit)})
				}
				res.Elapsed = time.Since(start)
				return res, nil
			}
		}
		if err != nil {
			return nil, err
		}
		p.commit = info.SHA
		if specs, modelRel, err = selectHFFiles(u, info, opts.Endpoint); err != nil {
			return nil, err
		}
	default:
		name := urlFileName(u.URL)
		specs = []fileSpec{{Name: name, URL: u.URL, Size: -1, SHA256: u.SHA256}}
		modelRel = name
	}
	if err := os.MkdirAll(filepath.Join(dir, metaDir), 0o755); err != nil {
		return nil, &Error{Kind: ErrStorage, URI: uri, Msg: fmt.Sprintf("cannot create the cache directory %s", dir), Err: err}
	}
	if err := p.checkSpace(specs); err != nil {
		return nil, err
	}
	res, err := p.run(ctx, specs)
	if err != nil {
		return nil, err
	}
	res.URI, res.Dir, res.Commit = uri, dir, p.commit
	res.Path = filepath.Join(dir, filepath.FromSlash(modelRel))
	res.Elapsed = time.Since(start)
	if err := writeManifest(dir, u, p.commit, modelRel, res.Files); err != nil {
		return nil, &Error{Kind: ErrStorage, URI: uri, Msg: "cannot record the completed pull", Err: err}
	}
	return res, nil
}

func resolveLocal(u URI, opts Options) (*Result, error) {
	p := u.LocalPath(opts.PVCRoot)
	if _, err := os.Stat(p); err != nil {
		e := &Error{Kind: ErrNotFound, URI: u.String(), Err: err}
		switch {
		case u.Scheme == "pvc" && errors.Is(err, fs.ErrNotExist):
			root := opts.PVCRoot
			if root == "" {
				root = PVCMountRoot
			}
			if _, err := os.Stat(filepath.Join(root, u.Claim)); err != nil {
				e.Msg = fmt.Sprintf("claim %s is not mounted at %s", u.Claim, filepath.Join(root, u.Claim))
			} else {
				e.Msg = fmt.Sprintf("the claim has no %s", u.Path)
			}
			e.Err = nil
		case errors.Is(err, fs.ErrNotExist):
			e.Msg, e.Err = fmt.Sprintf("%s does not exist", p), nil
		default:
			e.Kind, e.Msg = ErrStorage, "cannot read the model"
		}
		return nil, e
	}
	return &Result{URI: u.String(), Path: p}, nil
}

// Cached resolves a remote URI from the cache alone: it succeeds when an
// earlier Fetch completed and every file is still there at its size. It
// reads only the local disk, so a server whose cache an init container
// filled starts without the network.
func Cached(uri string, opts Options) (*Result, error) {
	opts.Offline = true
	return Fetch(context.Background(), uri, opts)
}

// manifest records a completed pull in .moe/manifest.json.
type manifest struct {
	URI    string       `json:"uri"`
	Commit string       `json:"commit,omitempty"`
	Path   string       `json:"path"` // the model's path, relative to the cache directory
	Files  []FileResult `json:"files"`
	Time   time.Time    `json:"time"`
}

func writeManifest(dir string, u URI, commit, modelRel string, files []FileResult) error {
	b, err := json.MarshalIndent(manifest{URI: u.String(), Commit: commit, Path: modelRel, Files: files, Time: time.Now().UTC()}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, metaDir, "manifest.json"), b)
}

// writeFileAtomic writes b to a temporary file beside path and renames it
// into place, so readers see the old or the new content, never a mix.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func cached(u URI, dir string) (*Result, error) {
	notCached := &Error{Kind: ErrNotFound, URI: u.String(), Msg: fmt.Sprintf("not in the model cache %s: run `moe pull %s` first", dir, u.String())}
	b, err := os.ReadFile(filepath.Join(dir, metaDir, "manifest.json"))
	if err != nil {
		return nil, notCached
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil || !cleanRelative(m.Path) && m.Path != "" {
		return nil, notCached
	}
	res := &Result{URI: u.String(), Dir: dir, Path: filepath.Join(dir, filepath.FromSlash(m.Path)), Commit: m.Commit}
	for _, f := range m.Files {
		if !cleanRelative(f.Name) {
			return nil, notCached
		}
		st, err := os.Stat(filepath.Join(dir, filepath.FromSlash(f.Name)))
		if err != nil || st.Size() != f.Size {
			notCached.Msg = fmt.Sprintf("the cached copy in %s is incomplete (%s): run `moe pull %s` again", dir, f.Name, u.String())
			return nil, notCached
		}
		f.State, f.Downloaded, f.Resumed = StateReused, 0, 0
		res.Files = append(res.Files, f)
		res.Total += f.Size
		res.Reused += f.Size
	}
	return res, nil
}

// run fetches the files, Parallel at a time, reporting progress. The first
// error stops the others (their partial files stay for the next pull).
func (p *puller) run(ctx context.Context, specs []fileSpec) (*Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.tr = newTracker(p.u.String(), specs, p.opts.Report)
	stop := p.tr.tick(p.opts.ProgressInterval)
	defer stop()
	p.tr.emit(Event{Event: "start", Msg: fmt.Sprintf("pulling %d files into %s", len(specs), p.dir)})

	results := make([]FileResult, len(specs))
	errs := make([]error, len(specs))
	sem := make(chan struct{}, p.opts.Parallel)
	var wg sync.WaitGroup
	for i := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			results[i], errs[i] = p.fetch(ctx, specs[i])
			if errs[i] != nil {
				cancel()
			}
		}()
	}
	wg.Wait()
	// Report the error that caused the others, not their cancellations.
	var first error
	for _, err := range errs {
		if err != nil && (first == nil || errors.Is(first, context.Canceled)) {
			first = err
		}
	}
	if first != nil {
		if errors.Is(first, context.Canceled) || errors.Is(first, context.DeadlineExceeded) {
			return nil, &Error{Kind: ErrUnavailable, URI: p.u.String(), Msg: "interrupted; pulling again resumes where this stopped", Err: first}
		}
		return nil, first
	}
	res := &Result{Files: results}
	for _, f := range results {
		res.Total += f.Size
		res.Downloaded += f.Downloaded
		res.Resumed += f.Resumed
		if f.State == StateReused {
			res.Reused += f.Size
		}
	}
	return res, nil
}
