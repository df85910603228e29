package source

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// fileSpec is one file to fetch.
type fileSpec struct {
	Name    string // slash path relative to the cache directory
	URL     string
	Size    int64  // -1 when unknown
	SHA256  string // expected content sha256, or ""
	GitSHA1 string // expected git blob id (sha1 of "blob <size>\0" + content), or ""
	Auth    bool   // send the token
}

type puller struct {
	u      URI
	dir    string
	opts   Options
	commit string
	tr     *tracker
}

// digest hashes a file's content the way its expected checksum is stated.
type digest struct {
	h    hash.Hash
	want string
	kind string
	size int64
}

func newDigest(s fileSpec) *digest {
	switch {
	case s.SHA256 != "":
		return &digest{h: sha256.New(), want: strings.ToLower(s.SHA256), kind: "sha256"}
	case s.GitSHA1 != "" && s.Size >= 0:
		d := &digest{h: sha1.New(), want: strings.ToLower(s.GitSHA1), kind: "git blob id", size: s.Size}
		d.reset()
		return d
	}
	// Nothing to check against: hash anyway, to record the sha256.
	return &digest{h: sha256.New(), kind: "sha256"}
}

func (d *digest) reset() {
	d.h.Reset()
	if d.kind == "git blob id" {
		fmt.Fprintf(d.h, "blob %d\x00", d.size)
	}
}

func (d *digest) sum() string { return hex.EncodeToString(d.h.Sum(nil)) }

// verified records a file checked against its checksum, so that later
// pulls reuse it without hashing it again unless it changed.
type verified struct {
	Size    int64  `json:"size"`
	ModTime int64  `json:"modTime"`
	Sum     string `json:"sum"`
}

func (p *puller) metaPath(name, suffix string) string {
	return filepath.Join(p.dir, metaDir, url.PathEscape(name)+suffix)
}

func (p *puller) storageErr(file, msg string, err error) error {
	return &Error{Kind: ErrStorage, URI: p.u.String(), File: file, Msg: msg, Err: err}
}

// fetch makes spec's file complete and verified at its final name.
func (p *puller) fetch(ctx context.Context, spec fileSpec) (FileResult, error) {
	res := FileResult{Name: spec.Name, Size: spec.Size, SHA256: spec.SHA256}
	target := filepath.Join(p.dir, filepath.FromSlash(spec.Name))
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return res, p.storageErr(spec.Name, "cannot create its directory", err)
	}
	unlock, err := lockFile(ctx, p.metaPath(spec.Name, ".lock"), func() {
		p.tr.emit(Event{Event: "wait", File: spec.Name, Msg: "another pull is fetching this file; waiting for it"})
	})
	if err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, p.storageErr(spec.Name, "cannot lock it", err)
	}
	defer unlock()

	if sum, ok := p.reusable(target, spec); ok {
		res.State, res.SHA256 = StateReused, sum
		if spec.Size < 0 {
			if st, err := os.Stat(target); err == nil {
				res.Size = st.Size()
				p.tr.total.Add(res.Size)
			}
		}
		p.tr.bytes.Add(res.Size)
		p.tr.reused.Add(res.Size)
		p.tr.files.Add(1)
		p.tr.emit(Event{Event: "file", File: spec.Name, State: res.State})
		return res, nil
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}

	partial := p.metaPath(spec.Name, ".partial")
	dg := newDigest(spec)
	var offset int64
	if st, err := os.Stat(partial); err == nil && (spec.Size < 0 || st.Size() <= spec.Size) {
		offset = st.Size()
	}
	if offset > 0 {
		// Hash what an earlier pull left, then continue it.
		if err := hashPrefix(partial, offset, dg); err != nil {
			offset = 0
			dg.reset()
		} else {
			res.Resumed = offset
			p.tr.bytes.Add(offset)
			p.tr.resumed.Add(offset)
			p.tr.emit(Event{Event: "resume", File: spec.Name, Resumed: offset,
				Msg: fmt.Sprintf("resuming from byte %d of a partial download", offset)})
		}
	}
	retriedFresh := false
	fails := 0
	for {
		n, status, retryAfter, err := p.attempt(ctx, &spec, partial, &offset, dg, &res)
		res.Downloaded += n
		if err == nil {
			got := dg.sum()
			if dg.want != "" && got != dg.want {
				os.Remove(partial)
				p.tr.bytes.Add(-offset)
				if res.Resumed > 0 && !retriedFresh {
					// The partial file may have come from another revision:
					// download the whole file once more before giving up.
					retriedFresh = true
					offset, res.Resumed = 0, 0
					dg.reset()
					p.tr.emit(Event{Event: "retry", File: spec.Name, Msg: "checksum mismatch after resuming; downloading the whole file again"})
					continue
				}
				return res, &Error{Kind: ErrChecksum, URI: p.u.String(), File: spec.Name,
					Msg: fmt.Sprintf("the downloaded file's %s is %s but the source publishes %s; the bad file was deleted (pull again to re-download it; if it persists, the source or a proxy is corrupting the transfer)", dg.kind, got, dg.want)}
			}
			if err := os.Rename(partial, target); err != nil {
				return res, p.storageErr(spec.Name, "cannot move the completed download into place", err)
			}
			if dg.kind == "sha256" {
				res.SHA256 = got
			}
			if st, err := os.Stat(target); err == nil {
				res.Size = st.Size()
				b, _ := json.Marshal(verified{Size: st.Size(), ModTime: st.ModTime().UnixNano(), Sum: got})
				_ = writeFileAtomic(p.metaPath(spec.Name, ".verified"), b)
			}
			res.State = StateDownloaded
			if res.Resumed > 0 {
				res.State = StateResumed
			}
			p.tr.files.Add(1)
			p.tr.emit(Event{Event: "file", File: spec.Name, State: res.State})
			return res, nil
		}
		var perm *Error
		switch {
		case ctx.Err() != nil:
			return res, ctx.Err()
		case errors.As(err, &perm):
			return res, err
		}
		if n > 0 {
			fails = 0
		}
		fails++
		if fails > p.opts.Retries {
			e := &Error{Kind: ErrUnavailable, URI: p.u.String(), File: spec.Name, Status: status, Err: err,
				Msg: fmt.Sprintf("gave up after %d attempts without progress", fails)}
			if status != 0 {
				e.Err = nil
				e.Msg = fmt.Sprintf("the server kept failing through %d attempts (try again later, or set HF_ENDPOINT to a mirror)", fails)
			}
			if offset > 0 {
				e.Msg += fmt.Sprintf("; pulling again resumes from byte %d", offset)
			}
			return res, e
		}
		wait := p.backoff(fails, retryAfter)
		p.tr.emit(Event{Event: "retry", File: spec.Name, Attempt: fails, Wait: wait.Seconds(), Error: err.Error()})
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(wait):
		}
	}
}

// backoff is the wait before retry number n (from 1): Backoff doubling up
// to 30s, with ±20% jitter so pullers do not retry in step; a server's
// Retry-After (capped at a minute) wins.
func (p *puller) backoff(n int, retryAfter time.Duration) time.Duration {
	if retryAfter > 0 {
		return min(retryAfter, time.Minute)
	}
	d := p.opts.Backoff << min(n-1, 10)
	d = min(d, 30*time.Second)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

func hashPrefix(path string, n int64, dg *digest) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.CopyN(dg.h, f, n)
	return err
}

// reusable reports whether target is already complete: the right size
// and, unless Options.Verify, a verification record that matches its size
// and modification time and the expected checksum; otherwise it is hashed
// now. A file that fails is removed.
func (p *puller) reusable(target string, spec fileSpec) (string, bool) {
	st, err := os.Stat(target)
	if err != nil || !st.Mode().IsRegular() || (spec.Size >= 0 && st.Size() != spec.Size) {
		if err == nil {
			os.Remove(target)
		}
		return "", false
	}
	dg := newDigest(spec)
	if b, err := os.ReadFile(p.metaPath(spec.Name, ".verified")); err == nil && !p.opts.Verify {
		var v verified
		if json.Unmarshal(b, &v) == nil && v.Size == st.Size() && v.ModTime == st.ModTime().UnixNano() && (dg.want == "" || v.Sum == dg.want) {
			if dg.kind != "sha256" {
				return "", true
			}
			return v.Sum, true
		}
	}
	if err := hashPrefix(target, st.Size(), dg); err != nil {
		return "", false
	}
	got := dg.sum()
	if dg.want != "" && got != dg.want {
		os.Remove(target)
		return "", false
	}
	b, _ := json.Marshal(verified{Size: st.Size(), ModTime: st.ModTime().UnixNano(), Sum: got})
	_ = writeFileAtomic(p.metaPath(spec.Name, ".verified"), b)
	if dg.kind != "sha256" {
		return "", true
	}
	return got, true
}

// attempt makes one request for the rest of the file and appends what
// arrives to partial. It returns the bytes written; err is nil when the
// file is complete, an *Error for a failure not worth retrying, and any
// other error for one that is (with the HTTP status and the server's
// Retry-After, if any).
func (p *puller) attempt(ctx context.Context, spec *fileSpec, partial string, offset *int64, dg *digest, res *FileResult) (written int64, status int, retryAfter time.Duration, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, spec.URL, nil)
	if err != nil {
		return 0, 0, 0, &Error{Kind: ErrInvalid, URI: p.u.String(), File: spec.Name, Msg: "bad download URL", Err: err}
	}
	req.Header.Set("User-Agent", "moe-operator/engine")
	if spec.Auth && p.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+p.opts.Token)
	}
	if *offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", *offset))
	}
	resp, err := p.opts.Client.Do(req)
	if err != nil {
		return 0, 0, 0, err
	}
	defer resp.Body.Close()
	restart := func() {
		p.tr.bytes.Add(-*offset)
		*offset, res.Resumed = 0, 0
		dg.reset()
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != *offset {
			restart()
			return 0, resp.StatusCode, 0, fmt.Errorf("the server answered the range request with %q; starting over", resp.Header.Get("Content-Range"))
		}
		p.learnSize(spec, total)
	case resp.StatusCode == http.StatusOK:
		if *offset > 0 { // the server ignored Range: take the whole file
			restart()
		}
		p.learnSize(spec, resp.ContentLength)
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable:
		if spec.Size >= 0 && *offset == spec.Size {
			return 0, 0, 0, nil
		}
		restart()
		return 0, resp.StatusCode, 0, errors.New("the server cannot resume the partial download; starting over")
	default:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		if retryable(resp.StatusCode) {
			return 0, resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After")), fmt.Errorf("HTTP %s", resp.Status)
		}
		return 0, resp.StatusCode, 0, httpError(p.u, spec.Name, resp.StatusCode, resp.Header.Get("X-Error-Code"), spec.Auth && p.opts.Token != "")
	}

	f, err := os.OpenFile(partial, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return 0, 0, 0, p.storageErr(spec.Name, "cannot write the download", err)
	}
	defer f.Close()
	if err := f.Truncate(*offset); err != nil {
		return 0, 0, 0, p.storageErr(spec.Name, "cannot write the download", err)
	}
	if _, err := f.Seek(*offset, io.SeekStart); err != nil {
		return 0, 0, 0, p.storageErr(spec.Name, "cannot write the download", err)
	}
	buf := make([]byte, 1<<20)
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if spec.Size >= 0 && *offset+int64(n) > spec.Size {
				return written, resp.StatusCode, 0, &Error{Kind: ErrChecksum, URI: p.u.String(), File: spec.Name,
					Msg: fmt.Sprintf("the server sent more than the %d bytes the file should have", spec.Size)}
			}
			if _, err := f.Write(buf[:n]); err != nil {
				return written, 0, 0, p.storageErr(spec.Name, "cannot write the download (is the disk full?)", err)
			}
			dg.h.Write(buf[:n])
			*offset += int64(n)
			written += int64(n)
			p.tr.bytes.Add(int64(n))
			p.tr.downloaded.Add(int64(n))
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return written, resp.StatusCode, 0, rerr
		}
	}
	if spec.Size >= 0 && *offset < spec.Size {
		return written, resp.StatusCode, 0, fmt.Errorf("the connection ended at byte %d of %d: %w", *offset, spec.Size, io.ErrUnexpectedEOF)
	}
	if err := f.Sync(); err != nil {
		return written, 0, 0, p.storageErr(spec.Name, "cannot flush the download to disk", err)
	}
	return written, resp.StatusCode, 0, nil
}

// learnSize records the size of a file the listing did not give.
func (p *puller) learnSize(spec *fileSpec, size int64) {
	if spec.Size < 0 && size >= 0 {
		spec.Size = size
		p.tr.total.Add(size)
	}
}

func retryable(status int) bool {
	return status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout
}

// parseContentRange reads "bytes start-end/total" (total may be "*").
func parseContentRange(s string) (start, total int64, ok bool) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, false
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, false
	}
	a, _, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, total, true
}

func parseRetryAfter(s string) time.Duration {
	if s == "" {
		return 0
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(s); err == nil {
		return time.Until(t)
	}
	return 0
}

// checkSpace fails early when the files still to download cannot fit on
// the cache's filesystem.
func (p *puller) checkSpace(specs []fileSpec) error {
	var need int64
	for _, s := range specs {
		if s.Size <= 0 {
			continue
		}
		have := int64(0)
		if st, err := os.Stat(filepath.Join(p.dir, filepath.FromSlash(s.Name))); err == nil && st.Size() == s.Size {
			continue
		}
		if st, err := os.Stat(p.metaPath(s.Name, ".partial")); err == nil && st.Size() <= s.Size {
			have = st.Size()
		}
		need += s.Size - have
	}
	free, ok := freeSpace(p.dir)
	if ok && need > free {
		return &Error{Kind: ErrStorage, URI: p.u.String(),
			Msg: fmt.Sprintf("the model needs %.2f GB more but %s has %.2f GB free: give the cache more room (spec.model.cache.size)", float64(need)/1e9, p.dir, float64(free)/1e9)}
	}
	return nil
}
