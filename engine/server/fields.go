package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
)

// ignoredFields are request fields of the OpenAI API (and vLLM's) that the
// server accepts and does not act on: they change nothing a client could
// tell apart, so they are neither refused nor reported.
var ignoredFields = []string{
	"user", "metadata", "store", "service_tier", "prediction", "modalities",
	"audio", "reasoning_effort", "web_search_options", "functions", "function_call",
	"add_generation_prompt", "add_special_tokens", "skip_special_tokens", "spaces_between_special_tokens",
	"include_stop_str_in_output", "echo", "request_id", "priority",
}

// knownFields caches, per request type, the JSON names of its fields.
var knownFields sync.Map // reflect.Type -> map[string]bool

func fieldsOf(t reflect.Type) map[string]bool {
	if m, ok := knownFields.Load(t); ok {
		return m.(map[string]bool)
	}
	m := map[string]bool{}
	var walk func(reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			switch {
			case f.Anonymous && name == "":
				walk(f.Type)
			case name != "" && name != "-":
				m[name] = true
			}
		}
	}
	walk(t)
	for _, f := range ignoredFields {
		m[f] = true
	}
	knownFields.Store(t, m)
	return m
}

// warnedFields are the unknown field names already logged, at most maxWarnedFields of
// them: clients choose the names, and must not grow the server's memory.
var warnedFields = struct {
	sync.Mutex
	names map[string]bool
}{names: map[string]bool{}}

const maxWarnedFields = 256

// checkFields looks for top-level fields of body that v's type does not
// know. With StrictRequests they are a 400; otherwise each name is logged
// once (per process) and the response's X-Ignored-Fields header lists
// them, as the request was served without them.
func (s *Server) checkFields(w http.ResponseWriter, body []byte, v any) error {
	known := fieldsOf(reflect.TypeOf(v).Elem())
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil { // the object's opening brace; decode checked it
		return nil
	}
	var unknown []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		if name, ok := tok.(string); ok && !known[name] && !slices.Contains(unknown, name) {
			unknown = append(unknown, name)
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	if s.opts.StrictRequests {
		return invalid(unknown[0], fmt.Sprintf("unknown field %s: this server does not support %s (it runs with --strict-requests, which refuses fields it would ignore)",
			quoteList(unknown), plural(len(unknown), "it", "them")))
	}
	warnedFields.Lock()
	for _, name := range unknown {
		if !warnedFields.names[name] && len(warnedFields.names) < maxWarnedFields {
			warnedFields.names[name] = true
			s.log.Warn("a request has a field this server does not support; it is ignored (this is logged once per field name)", "field", name)
		}
	}
	warnedFields.Unlock()
	w.Header().Set("X-Ignored-Fields", strings.Join(unknown, ", "))
	return nil
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
