package source

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
	"testing"
	"time"

	"github.com/moe-operator/moe-operator/engine/modelgen"
)

// testHub is a Hugging Face Hub on loopback: the model API
// (/api/models/{repo}/revision/{rev}?blobs=true) and the resolve endpoint
// (/{repo}/resolve/{rev}/{file}), which redirects LFS files to a second
// server standing in for the CDN, as the real Hub does. Faults can be set
// per file.
type testHub struct {
	t     *testing.T
	srv   *httptest.Server
	cdn   *httptest.Server
	token string // when set, every Hub request must carry it

	mu     sync.Mutex
	repos  map[string]*testRepo
	faults map[string]*fault // by file name, or "api"
	log    []hubRequest
}

type testRepo struct {
	commit string
	files  map[string][]byte
	gated  bool
}

type hubRequest struct {
	Server, Path, File, Range, Auth string
}

// fault makes the hub misbehave for one file.
type fault struct {
	status     int   // answer with this status
	times      int   // for this many requests (-1: always)
	corrupt    bool  // serve bytes that do not match the listed sha256
	resetAfter int64 // abort the connection after serving this many bytes of a response
	pauseAt    int64 // stop at this absolute offset until release is closed
	release    chan struct{}
	reached    chan struct{} // closed when pauseAt is reached
	slow       time.Duration // sleep per 16 KiB served
	once       sync.Once
}

func newTestHub(t *testing.T) *testHub {
	h := &testHub{t: t, repos: map[string]*testRepo{}, faults: map[string]*fault{}}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serveHub))
	h.cdn = httptest.NewServer(http.HandlerFunc(h.serveCDN))
	t.Cleanup(func() { h.srv.Close(); h.cdn.Close() })
	return h
}

func (h *testHub) endpoint() string { return h.srv.URL }

// addRepo serves the files of dir (recursively) as repository name.
func (h *testHub) addRepo(name, dir string, extra map[string][]byte) *testRepo {
	r := &testRepo{commit: fmt.Sprintf("%040x", len(name)*7919), files: map[string][]byte{}}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			b, _ := os.ReadFile(p)
			r.files[filepath.ToSlash(rel)] = b
		}
		return nil
	})
	for k, v := range extra {
		r.files[k] = v
	}
	h.mu.Lock()
	h.repos[name] = r
	h.mu.Unlock()
	return r
}

func (h *testHub) setFault(file string, f *fault) {
	h.mu.Lock()
	h.faults[file] = f
	h.mu.Unlock()
}

func (h *testHub) record(r hubRequest) {
	h.mu.Lock()
	h.log = append(h.log, r)
	h.mu.Unlock()
}

func (h *testHub) requests() []hubRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hubRequest(nil), h.log...)
}

// gets counts the content requests for file (at the Hub or the CDN).
func (h *testHub) gets(file string) int {
	n := 0
	for _, r := range h.requests() {
		if r.File == file && r.Server == "cdn" || r.File == file && r.Server == "hub" && !isLFS(file) {
			n++
		}
	}
	return n
}

func isLFS(name string) bool {
	return strings.HasSuffix(name, ".safetensors") || strings.HasSuffix(name, ".gguf")
}

func sha256Hex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func gitBlobID(b []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(b))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// takeFault returns the file's fault if it still applies, counting it.
func (h *testHub) takeFault(file string) *fault {
	h.mu.Lock()
	defer h.mu.Unlock()
	f := h.faults[file]
	if f == nil || f.times == 0 {
		return nil
	}
	if f.times > 0 {
		f.times--
	}
	return f
}

func (h *testHub) serveHub(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	req := hubRequest{Server: "hub", Path: p, Range: r.Header.Get("Range"), Auth: r.Header.Get("Authorization")}
	if h.token != "" && req.Auth != "Bearer "+h.token {
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
		if f := h.takeFault("api"); f != nil && f.status != 0 {
			w.WriteHeader(f.status)
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
		if repo != nil && repo.gated {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if isLFS(parts[4]) {
		http.Redirect(w, r, h.cdn.URL+"/blobs/"+sha256Hex(body)+"?name="+parts[0]+"/"+parts[1]+"/"+parts[4], http.StatusFound)
		return
	}
	h.serveBytes(w, r, parts[4], body)
}

func (h *testHub) lookup(repoName, rev, file string) (*testRepo, []byte, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	repo := h.repos[repoName]
	switch {
	case repo == nil:
		return nil, nil, "RepoNotFound"
	case repo.gated:
		return repo, nil, "GatedRepo"
	case rev != "main" && rev != repo.commit:
		return repo, nil, "RevisionNotFound"
	}
	b, ok := repo.files[file]
	if !ok {
		return repo, nil, "EntryNotFound"
	}
	return repo, b, ""
}

func (h *testHub) serveInfo(w http.ResponseWriter, repoName, rev string) {
	repo, _, code := h.lookup(repoName, rev, "")
	if code != "EntryNotFound" {
		w.Header().Set("X-Error-Code", code)
		if repo != nil && repo.gated {
			w.WriteHeader(http.StatusForbidden)
		} else {
			w.WriteHeader(http.StatusNotFound)
		}
		return
	}
	var sibs []map[string]any
	h.mu.Lock()
	for name, b := range repo.files {
		s := map[string]any{"rfilename": name, "size": len(b), "blobId": gitBlobID(b)}
		if isLFS(name) {
			s["blobId"] = gitBlobID([]byte("pointer " + name))
			s["lfs"] = map[string]any{"sha256": sha256Hex(b), "size": len(b), "pointerSize": 134}
		}
		sibs = append(sibs, s)
	}
	h.mu.Unlock()
	sort.Slice(sibs, func(i, j int) bool { return sibs[i]["rfilename"].(string) < sibs[j]["rfilename"].(string) })
	json.NewEncoder(w).Encode(map[string]any{"id": repoName, "sha": repo.commit, "private": false, "siblings": sibs})
}

func (h *testHub) serveCDN(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	org, rest, _ := strings.Cut(name, "/")
	repoName, file, _ := strings.Cut(rest, "/")
	h.record(hubRequest{Server: "cdn", Path: r.URL.Path, File: file, Range: r.Header.Get("Range"), Auth: r.Header.Get("Authorization")})
	_, body, code := h.lookup(org+"/"+repoName, "main", file)
	if code != "" || "/blobs/"+sha256Hex(body) != r.URL.Path {
		http.NotFound(w, r)
		return
	}
	h.serveBytes(w, r, file, body)
}

// serveBytes serves body with Range support, applying the file's fault.
func (h *testHub) serveBytes(w http.ResponseWriter, r *http.Request, file string, body []byte) {
	f := h.takeFault(file)
	if f != nil && f.status != 0 {
		w.WriteHeader(f.status)
		return
	}
	if f != nil && f.corrupt {
		body = append([]byte(nil), body...)
		body[len(body)/2] ^= 0xff
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, &faultyReader{Reader: bytes.NewReader(body), f: f, ctx: r})
}

// faultyReader injects a fault into what http.ServeContent reads.
type faultyReader struct {
	*bytes.Reader
	f      *fault
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
	if f.pauseAt > 0 && pos >= f.pauseAt {
		f.once.Do(func() { close(f.reached) })
		select {
		case <-f.release:
		case <-fr.ctx.Context().Done():
			return 0, fr.ctx.Context().Err()
		}
	}
	if f.pauseAt > 0 && pos < f.pauseAt && pos+int64(len(p)) > f.pauseAt {
		p = p[:f.pauseAt-pos]
	}
	if f.resetAfter > 0 && fr.served >= f.resetAfter {
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	if f.resetAfter > 0 && fr.served+int64(len(p)) > f.resetAfter {
		p = p[:f.resetAfter-fr.served]
	}
	if f.slow > 0 {
		time.Sleep(f.slow)
	}
	n, err := fr.Reader.Read(p)
	fr.served += int64(n)
	return n, err
}

// generatedRepo writes a small generated Mixtral model as a Hugging Face
// checkpoint with several shards, and returns its directory.
func generatedRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	c, _ := modelgen.Preset("tiny")
	c.Seed = 11
	g := filepath.Join(dir, "m.gguf")
	if err := modelgen.Write(g, c); err != nil {
		t.Fatal(err)
	}
	hf := filepath.Join(dir, "hf")
	if err := modelgen.ExportHF(g, hf, modelgen.HFOptions{MaxShardBytes: 400 << 10}); err != nil {
		t.Fatal(err)
	}
	return hf
}
