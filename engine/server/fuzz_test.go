package server

import (
	"bytes"
	"errors"
	"net/http"
	"testing"
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
