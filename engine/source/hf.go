package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strings"
	"time"
)

// hfSibling is one file of a Hub repository, as the model API lists it
// with blobs=true: size, git blob id and, for LFS files, the content's
// sha256.
type hfSibling struct {
	Name   string `json:"rfilename"`
	Size   *int64 `json:"size"`
	BlobID string `json:"blobId"`
	LFS    *struct {
		SHA256 string `json:"sha256"`
		Size   int64  `json:"size"`
	} `json:"lfs"`
}

// hfModelInfo is the Hub's answer to GET /api/models/{repo}/revision/{rev}.
type hfModelInfo struct {
	ID       string      `json:"id"`
	SHA      string      `json:"sha"`
	Siblings []hfSibling `json:"siblings"`
}

// listHF fetches the repository's file list at the URI's revision,
// retrying like downloads do.
func (p *puller) listHF(ctx context.Context) (*hfModelInfo, error) {
	api := fmt.Sprintf("%s/api/models/%s/revision/%s?blobs=true", p.opts.Endpoint, p.u.Repo, url.PathEscape(p.u.Revision))
	fails := 0
	for {
		info, status, retryAfter, err := p.getInfo(ctx, api)
		if err == nil {
			return info, nil
		}
		var perm *Error
		if errors.As(err, &perm) || ctx.Err() != nil {
			if ctx.Err() != nil {
				return nil, &Error{Kind: ErrUnavailable, URI: p.u.String(), Msg: "interrupted", Err: ctx.Err()}
			}
			return nil, err
		}
		fails++
		if fails > p.opts.Retries {
			if status != 0 {
				return nil, httpError(p.u, "", status, "", p.opts.Token != "")
			}
			return nil, &Error{Kind: ErrUnavailable, URI: p.u.String(), Msg: fmt.Sprintf("cannot reach %s after %d attempts (set HF_ENDPOINT for a mirror)", p.opts.Endpoint, fails), Err: err}
		}
		wait := p.backoff(fails, retryAfter)
		if p.opts.Report != nil {
			p.opts.Report(Event{Time: time.Now().UTC(), Event: "retry", URI: p.u.String(), Attempt: fails, Wait: wait.Seconds(), Error: err.Error()})
		}
		select {
		case <-ctx.Done():
			return nil, &Error{Kind: ErrUnavailable, URI: p.u.String(), Msg: "interrupted", Err: ctx.Err()}
		case <-time.After(wait):
		}
	}
}

func (p *puller) getInfo(ctx context.Context, api string) (*hfModelInfo, int, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api, nil)
	if err != nil {
		return nil, 0, 0, &Error{Kind: ErrInvalid, URI: p.u.String(), Msg: "bad Hub endpoint " + p.opts.Endpoint, Err: err}
	}
	req.Header.Set("User-Agent", "moe-operator/engine")
	if p.opts.Token != "" {
		req.Header.Set("Authorization", "Bearer "+p.opts.Token)
	}
	resp, err := p.opts.Client.Do(req)
	if err != nil {
		return nil, 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		if retryable(resp.StatusCode) {
			return nil, resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After")), fmt.Errorf("HTTP %s", resp.Status)
		}
		return nil, resp.StatusCode, 0, httpError(p.u, "", resp.StatusCode, resp.Header.Get("X-Error-Code"), p.opts.Token != "")
	}
	var info hfModelInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&info); err != nil {
		return nil, resp.StatusCode, 0, fmt.Errorf("reading the file list: %w", err)
	}
	return &info, resp.StatusCode, 0, nil
}

// hfSideFiles are the small files a model directory needs beside its weights.
var hfSideFiles = map[string]bool{
	"config.json": true, "generation_config.json": true, "tokenizer.json": true,
	"tokenizer_config.json": true, "special_tokens_map.json": true, "model.safetensors.index.json": true,
}

// selectHFFiles picks what to download: the file the URI names (with, for
// a .safetensors file or an index, the config and tokenizer files beside it
// and the index's shards); else, for
// a safetensors repository, the top-level model*.safetensors files (not
// Mistral's consolidated*.safetensors, which duplicate them in another
// layout) and the JSON files beside them; else the repository's only .gguf
// file. It returns the specs and the model's path relative to the cache
// directory.
func selectHFFiles(u URI, info *hfModelInfo, endpoint string) ([]fileSpec, string, error) {
	rev := info.SHA
	if rev == "" {
		rev = u.Revision
	}
	spec := func(s hfSibling) fileSpec {
		f := fileSpec{Name: s.Name, Size: -1, Auth: true,
			URL: fmt.Sprintf("%s/%s/resolve/%s/%s", endpoint, u.Repo, url.PathEscape(rev), escapePath(s.Name))}
		if s.Size != nil {
			f.Size = *s.Size
		}
		if s.LFS != nil {
			f.SHA256, f.Size = strings.ToLower(s.LFS.SHA256), s.LFS.Size
		} else {
			f.GitSHA1 = s.BlobID
		}
		return f
	}
	var ok []hfSibling
	for _, s := range info.Siblings {
		if cleanRelative(s.Name) {
			ok = append(ok, s)
		}
	}
	if u.File != "" {
		for _, s := range ok {
			if s.Name != u.File {
				continue
			}
			specs := []fileSpec{spec(s)}
			// A checkpoint file needs the files beside it: its config and
			// tokenizer and, for an index, every shard.
			if dir := path.Dir(s.Name); strings.HasSuffix(s.Name, ".safetensors") || strings.HasSuffix(s.Name, ".safetensors.index.json") {
				for _, o := range ok {
					if o.Name == s.Name || path.Dir(o.Name) != dir {
						continue
					}
					base := path.Base(o.Name)
					shard := strings.HasSuffix(s.Name, ".json") && strings.HasSuffix(base, ".safetensors") && !strings.HasPrefix(base, "consolidated")
					if hfSideFiles[base] && base != "model.safetensors.index.json" || shard {
						specs = append(specs, spec(o))
					}
				}
			}
			return specs, s.Name, nil
		}
		return nil, "", &Error{Kind: ErrNotFound, URI: u.String(),
			Msg: fmt.Sprintf("%s has no file %s at %s", u.Repo, u.File, u.Revision)}
	}
	var weights, side, ggufs []hfSibling
	for _, s := range ok {
		switch base := s.Name; {
		case strings.Contains(base, "/"):
		case strings.HasSuffix(base, ".safetensors") && !strings.HasPrefix(base, "consolidated"):
			weights = append(weights, s)
		case hfSideFiles[base]:
			side = append(side, s)
		case strings.HasSuffix(base, ".gguf"):
			ggufs = append(ggufs, s)
		}
	}
	switch {
	case len(weights) > 0:
		// Small files first: a missing config fails the pull before hours of weights.
		var specs []fileSpec
		for _, s := range append(side, weights...) {
			specs = append(specs, spec(s))
		}
		return specs, "", nil
	case len(ggufs) == 1:
		return []fileSpec{spec(ggufs[0])}, ggufs[0].Name, nil
	case len(ggufs) > 1:
		names := make([]string, len(ggufs))
		for i, s := range ggufs {
			names[i] = s.Name
		}
		sort.Strings(names)
		return nil, "", &Error{Kind: ErrInvalid, URI: u.String(),
			Msg: fmt.Sprintf("%s holds %d GGUF files; name one, e.g. hf://%s/%s (have %s)", u.Repo, len(ggufs), u.Repo, names[0], strings.Join(names, ", "))}
	}
	return nil, "", &Error{Kind: ErrNotFound, URI: u.String(),
		Msg: fmt.Sprintf("%s at %s holds no model the engine loads (model*.safetensors with config.json, or a .gguf file)", u.Repo, u.Revision)}
}

// escapePath percent-encodes each segment of a slash path.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return path.Join(segs...)
}
