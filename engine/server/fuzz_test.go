package server

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/moe-operator/moe-operator/engine/model"
	"github.com/moe-operator/moe-operator/engine/modelgen"
	"github.com/moe-operator/moe-operator/engine/scheduler"
)

// checkDecodeError holds the decoders' contract: a request is either
// accepted or refused with a 400 that says why, never a panic.
func checkDecodeError(t *testing.T, err error) {
	if err == nil {
		return
	}
	var ae *apiError
	if !errors.As(err, &ae) {
		t.Fatalf("error %v is not an API error", err)
	}
	if ae.Status != http.StatusBadRequest || ae.Message == "" || ae.Type != typeInvalidRequest {
		t.Fatalf("decoding error %+v, want a 400 with a message", ae)
	}
	if _, err := ae.MarshalJSON(); err != nil {
		t.Fatalf("the error does not encode: %v", err)
	}
}

func FuzzDecodeCompletionRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","prompt":"hello","max_tokens":16,"temperature":0.7,"top_p":0.9,"stop":["\n","END"],"seed":42,"logprobs":2,"n":2}`,
		`{"prompt":[1,2,3],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"prompt":[[1,2],[3]],"top_k":-1,"min_p":0.1,"repetition_penalty":1.1}`,
		`{"prompt":["a","b"],"stop":"x","presence_penalty":-2,"frequency_penalty":2}`,
		`{"prompt":"x","echo":true}`,
		`{"prompt":null}`,
		`{"prompt":"x","max_tokens":1e3}`,
		`[]`,
		`{"prompt":"x"} trailing`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeCompletionRequest(bytes.NewReader(body))
		checkDecodeError(t, err)
		if err == nil {
			p, verr := req.validate()
			if verr != nil || p.n < 1 || p.n > MaxN || req.Prompt.Len()*p.n > MaxChoices || len(p.stop) > MaxStops {
				t.Fatalf("accepted a request that does not validate: %+v %v", p, verr)
			}
		}
	})
}

func FuzzDecodeChatRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"max_completion_tokens":8}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],"logprobs":true,"top_logprobs":3}`,
		`{"messages":[{"role":"user","content":null}],"stream":true,"stream_options":{"include_usage":false}}`,
		`{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`,
		`{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}`,
		`{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"}}`,
		`{"messages":[],"n":3}`,
		`{"messages":"nope"}`,
		`{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeChatRequest(bytes.NewReader(body))
		checkDecodeError(t, err)
		if err == nil {
			if p, verr := req.validate(); verr != nil || len(req.Messages) == 0 || p.topLogprobs > 20 {
				t.Fatalf("accepted a request that does not validate: %+v %v", p, verr)
			}
		}
	})
}

// FuzzRequestToAdmission follows a completions body from decoding through
// validation, tokenizing, the context check and the scheduler's admission
// (SubmitAll, with a context already cancelled so nothing generates): every
// number a client can send must end in an accepted request that fits the
// context or in an OpenAI error, never a panic or an overflow.
func FuzzRequestToAdmission(f *testing.F) {
	for _, s := range []string{
		`{"prompt":"hello","max_tokens":16,"n":2,"logprobs":3}`,
		`{"prompt":[1,2,3],"max_tokens":9223372036854775807}`,
		`{"prompt":[[1,2],[3]],"max_tokens":-9223372036854775808,"n":16}`,
		`{"prompt":["a","b","c"],"n":16,"max_tokens":500}`,
		`{"prompt":"x","max_tokens":511,"top_k":2147483648,"seed":-1}`,
		`{"prompt":"x","logprobs":2147483647}`,
		`{"prompt":[1],"max_tokens":0}`,
	} {
		f.Add([]byte(s))
	}
	path := filepath.Join(f.TempDir(), "tiny.gguf")
	c, _ := modelgen.Preset("tiny")
	if err := modelgen.Write(path, c); err != nil {
		f.Fatal(err)
	}
	m, err := model.Open(path, model.LoadOptions{Threads: 1})
	if err != nil {
		f.Fatal(err)
	}
	defer m.Close()
	sch, err := scheduler.New(m, scheduler.Config{MaxNumSeqs: 4, MaxQueue: 8})
	if err != nil {
		f.Fatal(err)
	}
	defer sch.Close()
	s := New(Options{ModelName: "m"})
	s.Attach(sch)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := DecodeCompletionRequest(bytes.NewReader(body))
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		p, _ := req.validate()
		var prompts [][]int32
		for _, text := range req.Prompt.Texts {
			ids, ok := sch.Tokenizer().EncodeLimit(text, true, sch.MaxSequence())
			if !ok {
				return // promptTooLong
			}
			prompts = append(prompts, ids)
		}
		for _, ids := range req.Prompt.Tokens {
			if len(ids) == 0 {
				return
			}
			prompts = append(prompts, ids)
		}
		reqs, aerr := s.requests(sch, prompts, p, "prompt", false)
		if aerr != nil {
			if aerr.Status != http.StatusBadRequest || aerr.Message == "" {
				t.Fatalf("the context check answered %+v", aerr)
			}
			return
		}
		for _, r := range reqs {
			if r.MaxTokens < 1 || len(r.Prompt)+r.MaxTokens > sch.MaxSequence() {
				t.Fatalf("accepted %d prompt tokens and max_tokens %d, past the %d positions", len(r.Prompt), r.MaxTokens, sch.MaxSequence())
			}
		}
		streams, err := sch.SubmitAll(cancelled, reqs)
		if err != nil {
			if ae := s.schedulerError(err, "prompt"); ae.Status >= 500 && !errors.Is(err, scheduler.ErrAborted) {
				t.Fatalf("admission failed with %d: %v", ae.Status, err)
			}
			return
		}
		for _, st := range streams {
			st.Collect(context.Background()) // ends at once: its context is cancelled
		}
	})
}
