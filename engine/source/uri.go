package source

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"strings"
)

// PVCMountRoot is where a PersistentVolumeClaim named in a pvc:// URI is
// mounted: pvc://claim/some/path is read from PVCMountRoot/claim/some/path.
// The operator mounts each claim a MixtralDeployment names at
// PVCMountRoot/<claim>, read-only.
const PVCMountRoot = "/models/pvc"

// CacheMountPath is where a pod mounts the model cache volume (the
// operator's spec.model.cache claim): `moe pull --dest CacheMountPath` fills
// it, and `moe serve --model-cache CacheMountPath` reads it.
const CacheMountPath = "/models/cache"

// URI is a parsed model location.
type URI struct {
	// Scheme is "hf", "https", "http", "pvc" or "file"; "" for a plain
	// local path.
	Scheme string
	// Repo is a Hugging Face repository, "org/name" (hf).
	Repo string
	// Revision is a branch, tag or commit (hf); "main" when not given.
	Revision string
	// File is one file of the repository (hf), or "" for the model's files.
	File string
	// URL is the address of an http(s) URI, without its fragment.
	URL string
	// SHA256 is the checksum an http(s) URI gives in a "#sha256=<hex>"
	// fragment, lower case, or "".
	SHA256 string
	// Claim is the PersistentVolumeClaim of a pvc URI.
	Claim string
	// Path is the local path of a file or plain URI, or the path inside
	// the claim of a pvc URI.
	Path string

	raw string
}

// String returns the URI as it was given.
func (u URI) String() string { return u.raw }

// Remote reports whether the model must be downloaded (hf, http, https).
func (u URI) Remote() bool { return u.Scheme == "hf" || u.Scheme == "http" || u.Scheme == "https" }

var (
	repoPart  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$`)
	claimName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
	hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Parse parses a model URI:
//
//	hf://org/repo[@revision][/path/in/repo]   a Hugging Face repository (revision
//	                                          "main" by default; percent-encode a
//	                                          revision with slashes: refs%2Fpr%2F1)
//	https://host/path[#sha256=<hex>]          any file, optionally checksummed
//	http://127.0.0.1:port/path                plain HTTP, loopback only (tests)
//	pvc://claim[/path]                        PVCMountRoot/claim/path
//	file:///abs/path                          a local file or directory
//	/abs/path, rel/path                       the same, without a scheme
func Parse(s string) (URI, error) {
	u := URI{raw: s}
	if strings.TrimSpace(s) == "" {
		return u, invalid(s, "the model URI is empty")
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || strings.ContainsAny(scheme, "/.") {
		u.Path = s
		return u, nil
	}
	u.Scheme = strings.ToLower(scheme)
	switch u.Scheme {
	case "hf":
		return parseHF(u, rest)
	case "http", "https":
		pu, err := url.Parse(s)
		if err != nil || pu.Host == "" {
			return u, invalid(s, "not a valid URL")
		}
		if pu.Fragment != "" {
			sum, ok := strings.CutPrefix(pu.Fragment, "sha256=")
			if !ok || !hexSHA256.MatchString(strings.ToLower(sum)) {
				return u, invalid(s, "the fragment must be #sha256=<64 hex digits>")
			}
			u.SHA256 = strings.ToLower(sum)
			pu.Fragment = ""
		}
		if pu.User != nil {
			return u, invalid(s, "credentials in the URL would be logged; use HF_TOKEN or a token file")
		}
		u.URL = pu.String()
		return u, nil
	case "pvc":
		claim, p, _ := strings.Cut(rest, "/")
		if !claimName.MatchString(claim) {
			return u, invalid(s, fmt.Sprintf("%q is not a PersistentVolumeClaim name", claim))
		}
		if p != "" && !cleanRelative(p) {
			return u, invalid(s, "the path inside the claim must be relative, without . or .. segments")
		}
		u.Claim, u.Path = claim, p
		return u, nil
	case "file":
		pu, err := url.Parse(s)
		if err != nil || (pu.Host != "" && pu.Host != "localhost") || !strings.HasPrefix(pu.Path, "/") {
			return u, invalid(s, "want file:///absolute/path")
		}
		u.Path = pu.Path
		return u, nil
	default:
		return u, invalid(s, fmt.Sprintf("unknown scheme %q (want hf://, https://, pvc://, file:// or a path)", scheme))
	}
}

func parseHF(u URI, rest string) (URI, error) {
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 2 {
		return u, invalid(u.raw, "want hf://org/repo[@revision][/file]")
	}
	org, repo := parts[0], parts[1]
	u.Revision = "main"
	if r, rev, ok := strings.Cut(repo, "@"); ok {
		dec, err := url.PathUnescape(rev)
		if err != nil || dec == "" || strings.Contains(dec, "..") {
			return u, invalid(u.raw, fmt.Sprintf("bad revision %q", rev))
		}
		repo, u.Revision = r, dec
	}
	if !repoPart.MatchString(org) || !repoPart.MatchString(repo) || strings.Contains(org+repo, "..") {
		return u, invalid(u.raw, fmt.Sprintf("%q is not a Hugging Face repository name (org/name)", org+"/"+repo))
	}
	u.Repo = org + "/" + repo
	if len(parts) == 3 && parts[2] != "" {
		if !cleanRelative(parts[2]) {
			return u, invalid(u.raw, "the file path must be relative, without . or .. segments")
		}
		u.File = parts[2]
	}
	return u, nil
}

// cleanRelative reports whether p is a relative slash path without empty,
// "." or ".." segments.
func cleanRelative(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, `\`) {
		return false
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return path.Clean(p) == p
}

// LocalPath returns where a local URI (pvc, file or a plain path) is read
// from; pvcRoot replaces PVCMountRoot when not empty.
func (u URI) LocalPath(pvcRoot string) string {
	if u.Scheme == "pvc" {
		if pvcRoot == "" {
			pvcRoot = PVCMountRoot
		}
		return filepath.Join(pvcRoot, u.Claim, filepath.FromSlash(u.Path))
	}
	return u.Path
}

// CacheDir returns the directory a remote URI is downloaded into under the
// cache root: root/hf/<org>/<repo>/<revision> (the revision percent-encoded
// into one path segment) for hf, root/url/<host>/<hash of the URL> for
// http(s). The layout is stable: an operator may compute it.
func (u URI) CacheDir(root string) string {
	switch u.Scheme {
	case "hf":
		org, repo, _ := strings.Cut(u.Repo, "/")
		return filepath.Join(root, "hf", org, repo, url.PathEscape(u.Revision))
	case "http", "https":
		pu, _ := url.Parse(u.URL)
		host := strings.NewReplacer(":", "_", "[", "", "]", "").Replace(pu.Host)
		return filepath.Join(root, "url", host, shortHash(u.URL))
	}
	return ""
}

// ModelPath returns the path a remote URI's model is opened from once
// pulled into root: the repository directory, or the file the URI names.
func (u URI) ModelPath(root string) string {
	dir := u.CacheDir(root)
	switch {
	case u.Scheme == "hf" && u.File != "":
		return filepath.Join(dir, filepath.FromSlash(u.File))
	case u.Scheme == "http" || u.Scheme == "https":
		return filepath.Join(dir, urlFileName(u.URL))
	}
	return dir
}

// urlFileName is the name a URL's file is saved under: its last path
// segment, or "model" when it has none.
func urlFileName(raw string) string {
	pu, err := url.Parse(raw)
	if err != nil {
		return "model"
	}
	name := path.Base(pu.Path)
	if name == "/" || name == "." || name == "" || strings.HasPrefix(name, ".") {
		return "model"
	}
	return name
}

// loopback reports whether an http URL's host is a loopback address.
func loopback(raw string) bool {
	pu, err := url.Parse(raw)
	if err != nil {
		return false
	}
	h := pu.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// shortHash is the first 16 hex digits of s's sha256.
func shortHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}
