package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// apiError is an error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
type apiError struct {
	status     int
	message    string
	typ        string
	code       string
	retryAfter int // seconds; sets Retry-After when > 0
}

func writeError(w http.ResponseWriter, e apiError) {
	type body struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	}
	b := body{Message: e.message, Type: e.typ}
	if e.code != "" {
		b.Code = &e.code
	}
	data, _ := json.Marshal(struct {
		Error body `json:"error"`
	}{b})
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.status)
	_, _ = w.Write(append(data, '\n'))
}

func badRequest(msg string) apiError {
	return apiError{status: http.StatusBadRequest, message: msg, typ: "invalid_request_error"}
}

func modelNotFound(model string, served []string) *apiError {
	return &apiError{status: http.StatusNotFound, typ: "invalid_request_error", code: "model_not_found",
		message: fmt.Sprintf("the model %q does not exist; this gateway serves %s", model, strings.Join(served, ", "))}
}
