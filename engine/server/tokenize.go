package server

import (
	"fmt"
	"math"
	"net/http"
	"strings"

	"github.com/moe-operator/moe-operator/engine/scheduler"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// TokenizeRequest is the body of POST /tokenize, as vLLM takes it: a
// completion prompt, or chat messages rendered with the chat template.
type TokenizeRequest struct {
	Model    string        `json:"model"`
	Prompt   *string       `json:"prompt"`
	Messages []ChatMessage `json:"messages"`
	// AddSpecialTokens adds the beginning-of-sequence token to a prompt
	// (default true, as for a completion).
	AddSpecialTokens *bool `json:"add_special_tokens"`
	// ReturnTokenStrs adds each token's text.
	ReturnTokenStrs bool `json:"return_token_strs"`
}

// DetokenizeRequest is the body of POST /detokenize.
type DetokenizeRequest struct {
	Model  string  `json:"model"`
	Tokens []int64 `json:"tokens"`
}

func (s *Server) tokenizeRequest(w http.ResponseWriter, r *http.Request, sch *scheduler.Scheduler) {
	var req TokenizeRequest
	tok, ok := s.readTokenizerRequest(w, r, sch, &req, &req.Model)
	if !ok {
		return
	}
	var ids []int32
	var err error
	switch {
	case (req.Prompt != nil) == (len(req.Messages) > 0):
		writeError(w, invalid("prompt", `give either "prompt" (a string) or "messages" (a chat), not both or neither`))
		return
	case req.Prompt != nil:
		special := req.AddSpecialTokens == nil || *req.AddSpecialTokens
		if !s.tokenize(r.Context(), func() { ids = tok.Encode(*req.Prompt, special) }) {
			return
		}
	default:
		msgs, aerr := chatMessages(req.Messages)
		if aerr != nil {
			writeError(w, asAPIError(aerr))
			return
		}
		if !s.tokenize(r.Context(), func() { ids, err = s.renderChat(tok, msgs, "", math.MaxInt) }) {
			return
		}
		if err != nil {
			writeError(w, invalid("messages", strings.TrimPrefix(err.Error(), tokenizer.ErrChat.Error()+": ")))
			return
		}
	}
	out := map[string]any{"count": len(ids), "max_model_len": sch.MaxSequence(), "tokens": ids}
	if req.ReturnTokenStrs {
		strs := make([]string, len(ids))
		for i, id := range ids {
			strs[i] = s.tokenText(id)
		}
		out["token_strs"] = strs
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) detokenizeRequest(w http.ResponseWriter, r *http.Request, sch *scheduler.Scheduler) {
	var req DetokenizeRequest
	tok, ok := s.readTokenizerRequest(w, r, sch, &req, &req.Model)
	if !ok {
		return
	}
	vocab := sch.ModelConfig().Vocab
	ids := make([]int32, len(req.Tokens))
	for i, t := range req.Tokens {
		if t < 0 || t >= int64(vocab) {
			writeError(w, invalid("tokens", fmt.Sprintf("tokens[%d] is %d, outside the vocabulary (0 to %d)", i, t, vocab-1)))
			return
		}
		ids[i] = int32(t)
	}
	writeJSON(w, http.StatusOK, map[string]string{"prompt": tok.Decode(ids)})
}

// renderChat renders a conversation with the chat template in effect.
func (s *Server) renderChat(tok *tokenizer.Tokenizer, msgs []tokenizer.Message, tools string, limit int) ([]int32, error) {
	if s.template != nil {
		return tok.RenderChat(s.template, msgs, tools, limit)
	}
	return tok.MistralToolChat(msgs, tools, limit)
}

// readTokenizerRequest reads a /tokenize or /detokenize body into req, whose model field
// is at model, and returns the tokenizer, writing the error response when it cannot.
func (s *Server) readTokenizerRequest(w http.ResponseWriter, r *http.Request, sch *scheduler.Scheduler, req any, model *string) (*tokenizer.Tokenizer, bool) {
	if !s.readBody(w, r, req) {
		return nil, false
	}
	if err := s.checkModel(*model); err != nil {
		writeError(w, err)
		return nil, false
	}
	tok := sch.Tokenizer()
	if tok == nil {
		writeError(w, invalid("", "this model has no tokenizer"))
		return nil, false
	}
	return tok, true
}
