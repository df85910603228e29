// Package sourcetest runs a Hugging Face Hub on loopback for tests: the
// model API (GET /api/models/{org}/{name}/revision/{rev}?blobs=true, with
// sizes, git blob ids and LFS sha256) and the resolve endpoint
// (GET /{org}/{name}/resolve/{rev}/{file}, with Range support), which
// redirects LFS files (*.safetensors, *.gguf) to a second server standing
// in for the CDN, as the real Hub does. Faults (error statuses, corrupt
// bytes, dropped connections, pauses, slowness) can be set per file.
package sourcetest

import (
	"bytes"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Hub is a Hugging Face Hub on loopback (see the package comment).
type Hub struct {
	srv *httptest.Server
	cdn *httptest.Server

	mu     sync.Mutex
	token  string // when set, every Hub request must carry it
	repos  map[string]*Repo
	faults map[string]*Fault // by file name, or "api"
	log    []Request
}

// Repo is a served repository.
type Repo struct {
	Commit string
	Files  map[string][]byte
	// Gated makes every request for it fail with 403 and X-Error-Code GatedRepo.
	Gated bool
}

// Request is a logged request: Server is "hub" or "cdn"; File the
// repository file asked for, if any; Range and Auth the headers.
type Request struct {
	Server, Path, File, Range, Auth string
}

// Fault makes the Hub misbehave for one file (or, keyed "api", for the
// model API). Zero fields do nothing.
type Fault struct {
	Status     int   // answer with this status
	Times      int   // for this many requests (-1: always)
	Corrupt    bool  // serve bytes that do not match the listed sha256
	ResetAfter int64 // abort the connection after serving this many bytes of a response
	PauseAt    int64 // stop at this absolute offset until Release is closed
	Release    chan struct{}
	Reached    chan struct{} // closed when PauseAt is reached
	Slow       time.Duration // sleep per 16 KiB served
	once       sync.Once
}

// NewHub starts a Hub with no repositories. Close it when done.
func NewHub() *Hub {
	h := &Hub{repos: map[string]*Repo{}, faults: map[string]*Fault{}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serveHub))
	h.cdn = httptest.NewServer(http.HandlerFunc(h.serveCDN))
	return h
}

// Close stops the Hub and its CDN.
func (h *Hub) Close() { h.srv.Close(); h.cdn.Close() }

// URL is the Hub's endpoint, for HF_ENDPOINT.
func (h *Hub) URL() string { return h.srv.URL }

// CDNURL is the base URL of the server LFS downloads are redirected to; it
// serves GET /blobs/{sha256}?name={org}/{name}/{file} and so also stands in
// for any plain HTTPS file server.
func (h *Hub) CDNURL() string { return h.cdn.URL }

// AddRepo serves the files of dir (recursively) plus extra as repository
// name ("org/name"), at revision "main" and at its commit (Repo.Commit).
func (h *Hub) AddRepo(name, dir string, extra map[string][]byte) *Repo {
	r := &Repo{Commit: fmt.Sprintf("%040x", len(name)*7919), Files: map[string][]byte{}}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			b, _ := os.ReadFile(p)
			r.Files[filepath.ToSlash(rel)] = b
		}
		return nil
	})
	for k, v := range extra {
		r.Files[k] = v
	}
	h.mu.Lock()
	h.repos[name] = r
	h.mu.Unlock()
	return r
}

// SetFault sets the fault for a file name (or "api").
func (h *Hub) SetFault(file string, f *Fault) {
	h.mu.Lock()
	h.faults[file] = f
	h.mu.Unlock()
}

func (h *Hub) record(r Request) {
	h.mu.Lock()
	h.log = append(h.log, r)
	h.mu.Unlock()
}

// Requests returns every request so far, in order.
func (h *Hub) Requests() []Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Request(nil), h.log...)
}

// gets counts the content requests for file (at the Hub or the CDN).
func (h *Hub) Gets(file string) int {
	n := 0
	for _, r := range h.Requests() {
		if r.File == file && r.Server == "cdn" || r.File == file && r.Server == "hub" && !IsLFS(file) {
			n++
		}
	}
	return n
}

// IsLFS reports whether the Hub serves a file through LFS (and the CDN).
func IsLFS(name string) bool {
	return strings.HasSuffix(name, ".safetensors") || strings.HasSuffix(name, ".gguf")
}

// SHA256Hex is the hex sha256 of b.
func SHA256Hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// GitBlobID is git's id of a blob with content b.
func GitBlobID(b []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(b))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// takeFault returns the file's Fault if it still applies, counting it.
func (h *Hub) takeFault(file string) *Fault {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.faults[file]
	if f == nil || f.Times == 0 {
		return nil
	}
	if f.Times > 0 {
		f.Times--
	}
	return f
}

// SetToken makes every Hub request need "Authorization: Bearer token" ("" for none).
func (h *Hub) SetToken(token string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.token = token
}

// Token is the token SetToken set.
func (h *Hub) Token() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.token
}

func (h *Hub) serveHub(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	req := Request{Server: "hub", Path: p, Range: r.Header.Get("Range"), Auth: r.Header.Get("Authorization")}
	if token := h.Token(); token != "" && req.Auth != "Bearer "+token {
		h.record(req)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if rest, ok := strings.CutPrefix(p, "/api/models/"); ok {
		h.record(req)
		parts := strings.SplitN(rest, "/", 4) // org, name, "revision", rev
		if len(parts) != 4 || parts[2] != "revision" {
			http.NotFound(w, r)
			return
		}
		if f := h.takeFault("api"); f != nil && f.Status != 0 {
			w.WriteHeader(f.Status)
			return
		}
		h.serveInfo(w, parts[0]+"/"+parts[1], parts[3])
		return
	}
	parts := strings.SplitN(strings.TrimPrefix(p, "/"), "/", 5) // org, name, "resolve", rev, file
	if len(parts) != 5 || parts[2] != "resolve" {
		h.record(req)
		http.NotFound(w, r)
		return
	}
	req.File = parts[4]
	h.record(req)
	repo, body, code := h.lookup(parts[0]+"/"+parts[1], parts[3], parts[4])
	if code != "" {
		w.Header().Set("X-Error-Code", code)
		if repo != nil && repo.Gated {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if IsLFS(parts[4]) {
		http.Redirect(w, r, h.cdn.URL+"/blobs/"+SHA256Hex(body)+"?name="+parts[0]+"/"+parts[1]+"/"+parts[4], http.StatusFound)
		return
	}
	h.serveBytes(w, r, parts[4], body)
}

func (h *Hub) lookup(repoName, rev, file string) (*Repo, []byte, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	repo := h.repos[repoName]
	switch {
	case repo == nil:
		return nil, nil, "RepoNotFound"
	case repo.Gated:
		return repo, nil, "GatedRepo"
	case rev != "main" && rev != repo.Commit:
		return repo, nil, "RevisionNotFound"
	}
	b, ok := repo.Files[file]
	if !ok {
		return repo, nil, "EntryNotFound"
	}
	return repo, b, ""
}

func (h *Hub) serveInfo(w http.ResponseWriter, repoName, rev string) {
	repo, _, code := h.lookup(repoName, rev, "")
	if code != "EntryNotFound" {
		w.Header().Set("X-Error-Code", code)
		if repo != nil && repo.Gated {
			w.WriteHeader(http.StatusForbidden)
		} else {
			w.WriteHeader(http.StatusNotFound)
		}
		return
	}
	var sibs []map[string]any
	h.mu.Lock()
	for name, b := range repo.Files {
		s := map[string]any{"rfilename": name, "size": len(b), "blobId": GitBlobID(b)}
		if IsLFS(name) {
			s["blobId"] = GitBlobID([]byte("pointer " + name))
			s["lfs"] = map[string]any{"sha256": SHA256Hex(b), "size": len(b), "pointerSize": 134}
		}
		sibs = append(sibs, s)
	}
	h.mu.Unlock()
	sort.Slice(sibs, func(i, j int) bool { return sibs[i]["rfilename"].(string) < sibs[j]["rfilename"].(string) })
	json.NewEncoder(w).Encode(map[string]any{"id": repoName, "sha": repo.Commit, "private": false, "siblings": sibs})
}

func (h *Hub) serveCDN(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	org, rest, _ := strings.Cut(name, "/")
	repoName, file, _ := strings.Cut(rest, "/")
	h.record(Request{Server: "cdn", Path: r.URL.Path, File: file, Range: r.Header.Get("Range"), Auth: r.Header.Get("Authorization")})
	_, body, code := h.lookup(org+"/"+repoName, "main", file)
	if code != "" || "/blobs/"+SHA256Hex(body) != r.URL.Path {
		http.NotFound(w, r)
		return
	}
	h.serveBytes(w, r, file, body)
}

// serveBytes serves body with Range support, applying the file's fault.
func (h *Hub) serveBytes(w http.ResponseWriter, r *http.Request, file string, body []byte) {
	f := h.takeFault(file)
	if f != nil && f.Status != 0 {
		w.WriteHeader(f.Status)
		return
	}
	if f != nil && f.Corrupt {
		body = append([]byte(nil), body...)
		body[len(body)/2] ^= 0xff
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, &faultyReader{Reader: bytes.NewReader(body), f: f, ctx: r})
}

// faultyReader injects a Fault into what http.ServeContent reads.
type faultyReader struct {
	*bytes.Reader
	f      *Fault
	ctx    *http.Request
	served int64
}

func (fr *faultyReader) Read(p []byte) (int, error) {
	f := fr.f
	if f == nil {
		return fr.Reader.Read(p)
	}
	pos := fr.Size() - int64(fr.Len())
	if len(p) > 16<<10 {
		p = p[:16<<10]
	}
	if f.PauseAt > 0 && pos >= f.PauseAt {
		f.once.Do(func() { close(f.Reached) })
		select {
		case <-f.Release:
		case <-fr.ctx.Context().Done():
			return 0, fr.ctx.Context().Err()
		}
	}
	if f.PauseAt > 0 && pos < f.PauseAt && pos+int64(len(p)) > f.PauseAt {
		p = p[:f.PauseAt-pos]
	}
	if f.ResetAfter > 0 && fr.served >= f.ResetAfter {
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	if f.ResetAfter > 0 && fr.served+int64(len(p)) > f.ResetAfter {
		p = p[:f.ResetAfter-fr.served]
	}
	if f.Slow > 0 {
		time.Sleep(f.Slow)
	}
	n, err := fr.Reader.Read(p)
	fr.served += int64(n)
	return n, err
}
