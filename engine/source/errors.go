package source

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors: every error Fetch returns for a known cause wraps one of
// them (test with errors.Is), and is an *Error carrying the details.
var (
	// ErrInvalid: the URI or the options are wrong.
	ErrInvalid = errors.New("source: invalid model URI")
	// ErrAuth: the server refused the credentials (HTTP 401 or 403).
	// Retrying does not help; the token must change.
	ErrAuth = errors.New("source: not authorized")
	// ErrNotFound: the repository, revision or file does not exist
	// (HTTP 404), or a local path is missing.
	ErrNotFound = errors.New("source: not found")
	// ErrChecksum: downloaded bytes do not match the published sha256.
	ErrChecksum = errors.New("source: checksum mismatch")
	// ErrUnavailable: the server or the network kept failing (5xx,
	// resets, timeouts) through every retry. Retrying later may help.
	ErrUnavailable = errors.New("source: unavailable")
	// ErrStorage: the cache cannot be written (permissions, space).
	ErrStorage = errors.New("source: cache storage error")
)

// Exit codes of `moe pull`, one per error class, so that a Job or init
// container's result says what to do next without parsing text.
const (
	ExitOK          = 0 // the model is in the cache
	ExitFailure     = 1 // any other error
	ExitUsage       = 2 // bad arguments or URI (ErrInvalid)
	ExitAuth        = 3 // 401/403: set or fix the token (ErrAuth)
	ExitNotFound    = 4 // 404 or a missing local path: fix the URI (ErrNotFound)
	ExitChecksum    = 5 // published checksum not matched (ErrChecksum)
	ExitUnavailable = 6 // server/network failures outlasted the retries (ErrUnavailable)
	ExitStorage     = 7 // the cache is not writable or is full (ErrStorage)
)

// ExitCode maps an error from this package to a `moe pull` exit code.
func ExitCode(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrInvalid):
		return ExitUsage
	case errors.Is(err, ErrAuth):
		return ExitAuth
	case errors.Is(err, ErrNotFound):
		return ExitNotFound
	case errors.Is(err, ErrChecksum):
		return ExitChecksum
	case errors.Is(err, ErrUnavailable):
		return ExitUnavailable
	case errors.Is(err, ErrStorage):
		return ExitStorage
	}
	return ExitFailure
}

// Error is a failure to resolve or fetch a model, with a message that
// says what to do about it.
type Error struct {
	Kind   error  // one of the sentinel errors
	URI    string // the model URI
	File   string // the file involved, if any
	Status int    // the HTTP status, if any
	Msg    string // what went wrong and what to do
	Err    error  // the underlying error, if any
}

func (e *Error) Error() string {
	s := e.URI
	if e.File != "" {
		s += " (" + e.File + ")"
	}
	s += ": "
	if e.Status != 0 {
		s += fmt.Sprintf("%d %s — ", e.Status, http.StatusText(e.Status))
	}
	s += e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the sentinel kind and the underlying error.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// ExitCode is the `moe pull` exit code for the error.
func (e *Error) ExitCode() int { return ExitCode(e) }

func invalid(uri, msg string) error { return &Error{Kind: ErrInvalid, URI: uri, Msg: msg} }

// httpError describes a final (non-retried) HTTP failure. hfCode is the
// Hub's X-Error-Code header, which tells a missing repository from a
// missing file or a gated one.
func httpError(u URI, file string, status int, hfCode string, haveToken bool) error {
	e := &Error{URI: u.String(), File: file, Status: status}
	what := "the server"
	if u.Scheme == "hf" {
		what = u.Repo
	}
	switch {
	case status == http.StatusUnauthorized && !haveToken:
		e.Kind = ErrAuth
		e.Msg = fmt.Sprintf("%s is private or gated, or does not exist: set HF_TOKEN (or spec.model.tokenSecretRef) to a token that can read it", what)
	case status == http.StatusUnauthorized:
		e.Kind = ErrAuth
		e.Msg = "the token in HF_TOKEN (or spec.model.tokenSecretRef) was rejected: it is invalid or expired, or the repository does not exist"
	case status == http.StatusForbidden && hfCode == "GatedRepo":
		e.Kind = ErrAuth
		e.Msg = fmt.Sprintf("%s is gated: accept its conditions on the model page with the account whose token is in HF_TOKEN", what)
	case status == http.StatusForbidden:
		e.Kind = ErrAuth
		e.Msg = "access denied: the token lacks permission to read it (for gated models, accept the conditions on the model page; fine-grained tokens need read access to the repository)"
	case status == http.StatusNotFound && hfCode == "RevisionNotFound":
		e.Kind = ErrNotFound
		e.Msg = fmt.Sprintf("revision %q does not exist: check the @revision of the URI", u.Revision)
	case status == http.StatusNotFound && u.Scheme == "hf" && file != "" && u.File == "":
		e.Kind = ErrNotFound
		e.Msg = "the Hub listed this file but does not serve it; the repository may have changed during the pull: pull again"
	case status == http.StatusNotFound && (hfCode == "EntryNotFound" || file != "" && u.Scheme == "hf"):
		e.Kind = ErrNotFound
		e.Msg = "the file does not exist at this revision: check the path in the URI"
	case status == http.StatusNotFound && u.Scheme == "hf":
		e.Kind = ErrNotFound
		e.Msg = fmt.Sprintf("repository %s was not found: check the org/name (a private repository also needs HF_TOKEN)", u.Repo)
	case status == http.StatusNotFound:
		e.Kind = ErrNotFound
		e.Msg = "not found: check the URL"
	case status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout:
		e.Kind = ErrUnavailable
		e.Msg = "the server kept failing through every retry: try again later, or set HF_ENDPOINT to a mirror"
	default:
		e.Kind = ErrInvalid
		e.Msg = "the server refused the request"
	}
	return e
}
