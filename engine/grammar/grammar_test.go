package grammar

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

func mustSchema(t testing.TB, s string) *Grammar {
	t.Helper()
	g, err := CompileSchema([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// accepts reports whether out, whole, is a sentence of g.
func accepts(g *Grammar, out string) bool {
	m, ok := g.Start().Feed([]byte(out))
	return ok && m.Accepting()
}

func TestTheMatcherAcceptsExactlyTheSchemasCompactJSON(t *testing.T) {
	person := mustSchema(t, `{"type":"object","properties":{"name":{"type":"string","maxLength":5},
		"age":{"type":"integer","minimum":0},"tags":{"type":"array","items":{"enum":["a","b"]},"maxItems":2},
		"ok":{"type":["boolean","null"]}},"required":["name","age"]}`)
	for _, tt := range []struct {
		out  string
		want bool
	}{
		{`{"name":"Ann","age":31}`, true},
		{`{"name":"Ann","age":31,"tags":["a","b"],"ok":null}`, true},
		{`{"name":"Ann","age":31,"ok":true}`, true},
		{`{"name":"Ann"}`, false},                               // age is required
		{`{"age":31,"name":"Ann"}`, false},                      // declared order
		{`{"name":"Annabel","age":31}`, false},                  // maxLength
		{`{"name":"Ann","age":-1}`, false},                      // minimum 0
		{`{"name":"Ann","age":3.5}`, false},                     // integer
		{`{"name":"Ann","age":31,"tags":["a","b","a"]}`, false}, // maxItems
		{`{"name":"Ann","age":31,"tags":["c"]}`, false},         // enum
		{`{"name":"Ann","age":31,"extra":1}`, false},            // undeclared
		{`{ "name":"Ann","age":31}`, false},                     // no whitespace
		{`{"name":"A\"n","age":0}`, true},                       // escapes
		{`{"name":"Äñ€","age":0}`, true},                        // UTF-8
		{`{"name":"Ann","age":31}x`, false},
		{`{"name":"Ann","age":007}`, false},
	} {
		if got := accepts(person, tt.out); got != tt.want {
			t.Errorf("%s: accepted %v, want %v", tt.out, got, tt.want)
		}
	}
	obj := JSONObject()
	for _, tt := range []struct {
		out  string
		want bool
	}{
		{`{}`, true}, {`{"a":[1,{"b":null}],"c":"x"}`, true}, {`[1]`, false}, {`{"a":}`, false}, {`{"a":-0.5e+3}`, true},
	} {
		if got := accepts(obj, tt.out); got != tt.want {
			t.Errorf("json_object %s: accepted %v, want %v", tt.out, got, tt.want)
		}
	}
}

func TestChoiceAndRegex(t *testing.T) {
	c, err := Choice([]string{"yes", "yes please", "no"})
	if err != nil {
		t.Fatal(err)
	}
	for out, want := range map[string]bool{"yes": true, "yes please": true, "no": true, "ye": false, "nope": false} {
		if got := accepts(c, out); got != want {
			t.Errorf("choice %q: %v, want %v", out, got, want)
		}
	}
	r, err := Regex(`[0-9]{3}-[a-z]+(\.é)?`)
	if err != nil {
		t.Fatal(err)
	}
	for out, want := range map[string]bool{"123-abc": true, "123-abc.é": true, "12-abc": false, "123-": false, "123-abc.e": false} {
		if got := accepts(r, out); got != want {
			t.Errorf("regex %q: %v, want %v", out, got, want)
		}
	}
	if _, err := Regex(`\bword\b`); !errors.Is(err, ErrUnsupported) {
		t.Errorf("word boundaries: %v", err)
	}
}

func TestUnsupportedSchemasAreRefusedByName(t *testing.T) {
	for schema, want := range map[string]string{
		`{"type":"string","pattern":"^a"}`:                                                            "pattern",
		`{"type":"string","format":"date-time"}`:                                                      "format",
		`{"type":"integer","minimum":5,"maximum":9}`:                                                  "maximum, minimum (other than 0)",
		`{"anyOf":[{"type":"object","properties":{"a":{}}},{"type":"object","properties":{"b":{}}}]}`: "overlap",
		`{"type":"object","properties":{"a":{"type":"string"}},"required":["b"]}`:                     `"b", which is not in properties`,
		`{"type":"strin"}`:           `"strin" is not a JSON Schema type`,
		`{"$ref":"#/$defs/missing"}`: "no such definition",
		`[1]`:                        "not a JSON object",
	} {
		_, err := CompileSchema([]byte(schema))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one naming %q", schema, err, want)
		}
	}
}

// testVocab is a vocabulary of every single byte (as SentencePiece's byte fallback has),
// JSON punctuation, words and multi-byte characters, like a real one in kind.
func testVocab() *Vocab {
	var toks [][]byte
	toks = append(toks, nil) // 0: end of sequence
	for b := 1; b < 256; b++ {
		toks = append(toks, []byte{byte(b)})
	}
	for _, s := range []string{`{"`, `":`, `",`, `,"`, `"}`, `"]`, `["`, `true`, `false`, `null`, `12`, `0.`, `e+`, ` the`, `name`,
		`age`, `tags`, `ok`, `é`, `€`, "\xe2", "\x82\xac", `\n`, `\"`, `"a"`, `":"`, `"},{"`, "\n", "\t", `Ann`, ` `} {
		toks = append(toks, []byte(s))
	}
	return NewVocab(toks, 0)
}

func TestTheMaskIsEveryTokenTheMatcherAccepts(t *testing.T) {
	v := testVocab()
	r := rand.New(rand.NewPCG(3, 4))
	for _, g := range []*Grammar{
		JSONObject(),
		mustSchema(t, `{"type":"object","properties":{"name":{"type":"string","maxLength":3},"n":{"type":"number"},"l":{"type":"array","items":{"type":"string"},"maxItems":3}},"required":["name"]}`),
	} {
		for run := range 30 {
			c := g.Constrain(v, run%2 == 0)
			mask := make([]uint64, (v.Size()+63)/64)
			for step := 0; step < 60; step++ {
				c.Allowed(mask)
				// The brute force: feed every token.
				for id, tok := range v.tokens {
					want := false
					if id == 0 {
						want = c.m.Accepting()
					} else if len(tok) > 0 && !c.m.Done() {
						fed := tok
						if c.strip && fed[0] == ' ' {
							fed = fed[1:]
						}
						_, want = c.m.Feed(fed)
					}
					if got := mask[id/64]&(1<<(id%64)) != 0; got != want {
						t.Fatalf("run %d step %d: token %q allowed %v, the matcher says %v", run, step, tok, got, want)
					}
				}
				allowed := allowedIDs(mask, v.Size())
				if len(allowed) == 0 {
					break
				}
				tok := allowed[r.IntN(len(allowed))]
				if tok == 0 {
					break
				}
				c.Accept(tok)
			}
		}
	}
}

// TestConstrainedOutputsParseAndValidate generates many bounded schemas and, for each,
// outputs by picking uniformly among the allowed tokens (a model with random weights).
// Every output must end within the budget, parse, and validate against its schema.
func TestConstrainedOutputsParseAndValidate(t *testing.T) {
	v := testVocab()
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 300 {
		schema := randomSchema(r, 0)
		raw, _ := json.Marshal(schema)
		g, err := CompileSchema(raw)
		if err != nil {
			if errors.Is(err, ErrUnsupported) {
				continue // overlapping alternatives the generator made
			}
			t.Fatalf("schema %s: %v", raw, err)
		}
		for k := range 3 {
			out := generate(t, g, v, r, 4000)
			var val any
			if err := json.Unmarshal(out, &val); err != nil {
				t.Fatalf("schema %d %s: output %q does not parse: %v", i, raw, out, err)
			}
			if err := validate(val, schema); err != nil {
				t.Fatalf("schema %d %s, output %d %s: %v", i, raw, k, out, err)
			}
		}
	}
}

// generate picks random allowed tokens until the end of sequence.
func generate(t *testing.T, g *Grammar, v *Vocab, r *rand.Rand, budget int) []byte {
	t.Helper()
	c := g.Constrain(v, false)
	mask := make([]uint64, (v.Size()+63)/64)
	var out []byte
	for range budget {
		c.Allowed(mask)
		allowed := allowedIDs(mask, v.Size())
		if len(allowed) == 0 {
			t.Fatalf("no token allowed after %q", out)
		}
		tok := allowed[r.IntN(len(allowed))]
		if tok == 0 {
			return out
		}
		c.Accept(tok)
		out = append(out, v.tokens[tok]...)
	}
	t.Fatalf("no end after %d tokens: %q", budget, out)
	return nil
}

func randomSchema(r *rand.Rand, depth int) map[string]any {
	kinds := []string{"string", "integer", "number", "boolean", "null", "enum", "object", "array", "nullable"}
	if depth >= 3 {
		kinds = kinds[:6]
	}
	switch kinds[r.IntN(len(kinds))] {
	case "string":
		s := map[string]any{"type": "string", "maxLength": r.IntN(6)}
		if r.IntN(2) == 0 {
			s["minLength"] = r.IntN(s["maxLength"].(int) + 1)
		}
		return s
	case "integer":
		s := map[string]any{"type": "integer"}
		if r.IntN(2) == 0 {
			s["minimum"] = 0
		}
		return s
	case "number":
		return map[string]any{"type": "number"}
	case "boolean":
		return map[string]any{"type": "boolean"}
	case "null":
		return map[string]any{"type": "null"}
	case "enum":
		return map[string]any{"enum": []any{"a", "b c", 3, true, nil, "é"}[:1+r.IntN(6)]}
	case "nullable":
		return map[string]any{"type": []string{"string", "null"}, "maxLength": 4}
	case "object":
		props := map[string]any{}
		var req []string
		for k := range r.IntN(4) {
			name := fmt.Sprintf("p%d", k)
			props[name] = randomSchema(r, depth+1)
			if r.IntN(2) == 0 {
				req = append(req, name)
			}
		}
		s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
		if len(props) == 0 {
			s["properties"] = map[string]any{"only": map[string]any{"type": "boolean"}}
		}
		if len(req) > 0 {
			s["required"] = req
		}
		return s
	default:
		s := map[string]any{"type": "array", "items": randomSchema(r, depth+1), "maxItems": r.IntN(4)}
		if r.IntN(2) == 0 {
			s["minItems"] = r.IntN(s["maxItems"].(int) + 1)
		}
		return s
	}
}

// validate checks v against the subset of JSON Schema the generator uses, independently
// of the compiler.
func validate(v any, s map[string]any) error {
	if e, ok := s["enum"]; ok {
		for _, x := range e.([]any) {
			a, _ := json.Marshal(x)
			b, _ := json.Marshal(v)
			if string(a) == string(b) {
				return nil
			}
		}
		return fmt.Errorf("%v is not in the enum %v", v, e)
	}
	types := []string{}
	switch t := s["type"].(type) {
	case string:
		types = []string{t}
	case []string:
		types = t
	}
	var errs []string
	for _, t := range types {
		if err := validateType(v, t, s); err == nil {
			return nil
		} else {
			errs = append(errs, err.Error())
		}
	}
	return errors.New(strings.Join(errs, "; "))
}

func validateType(v any, t string, s map[string]any) error {
	switch t {
	case "null":
		if v != nil {
			return fmt.Errorf("%v is not null", v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			return fmt.Errorf("%v is not a boolean", v)
		}
	case "number", "integer":
		f, ok := v.(float64)
		if !ok {
			return fmt.Errorf("%v is not a number", v)
		}
		if t == "integer" && f != math.Trunc(f) {
			return fmt.Errorf("%v is not an integer", v)
		}
		if m, ok := s["minimum"]; ok && f < float64(m.(int)) {
			return fmt.Errorf("%v is under the minimum", v)
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("%v is not a string", v)
		}
		n := utf8.RuneCountInString(str)
		if m, ok := s["maxLength"]; ok && n > m.(int) {
			return fmt.Errorf("%q is longer than %d", str, m)
		}
		if m, ok := s["minLength"]; ok && n < m.(int) {
			return fmt.Errorf("%q is shorter than %d", str, m)
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%v is not an array", v)
		}
		if m, ok := s["maxItems"]; ok && len(a) > m.(int) {
			return fmt.Errorf("%d items, more than %d", len(a), m)
		}
		if m, ok := s["minItems"]; ok && len(a) < m.(int) {
			return fmt.Errorf("%d items, fewer than %d", len(a), m)
		}
		for _, x := range a {
			if err := validate(x, s["items"].(map[string]any)); err != nil {
				return err
			}
		}
	case "object":
		o, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%v is not an object", v)
		}
		props := s["properties"].(map[string]any)
		for k, x := range o {
			ps, ok := props[k]
			if !ok {
				return fmt.Errorf("property %q is not declared", k)
			}
			if err := validate(x, ps.(map[string]any)); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
		if req, ok := s["required"].([]string); ok {
			for _, k := range req {
				if _, ok := o[k]; !ok {
					return fmt.Errorf("required %q is missing", k)
				}
			}
		}
	default:
		return fmt.Errorf("type %s", t)
	}
	return nil
}

func TestReferenceCyclesWithoutASchemaAreRefused(t *testing.T) {
	for _, s := range []string{`{"$ref":"#"}`, `{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}`} {
		if _, err := CompileSchema([]byte(s)); err == nil || !strings.Contains(err.Error(), "refers only to itself") {
			t.Errorf("%s: %v", s, err)
		}
	}
	// A recursive schema with structure is fine.
	g := mustSchema(t, `{"$defs":{"n":{"type":"object","properties":{"v":{"type":"integer"},"next":{"$ref":"#/$defs/n"}},"required":["v"]}},"$ref":"#/$defs/n"}`)
	if !accepts(g, `{"v":1,"next":{"v":2,"next":{"v":3}}}`) {
		t.Error("a linked list of the recursive schema was refused")
	}
}

func TestToolCallsFollowEachToolsSchema(t *testing.T) {
	g, err := ToolCalls([]Tool{
		{Name: "get_weather", Parameters: []byte(`{"type":"object","properties":{"city":{"type":"string","maxLength":10}},"required":["city"]}`)},
		{Name: "get", Parameters: []byte(`{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}`)},
		{Name: "ping"},
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for out, want := range map[string]bool{
		`[TOOL_CALLS] [{"name":"get_weather","arguments":{"city":"Paris"}}]`:                      true,
		`[TOOL_CALLS] [{"name":"get","arguments":{"n":3}},{"name":"ping","arguments":{"x":[1]}}]`: true,
		`[TOOL_CALLS] [{"name":"get_weather","arguments":{"n":3}}]`:                               false,
		`[TOOL_CALLS] [{"name":"other","arguments":{}}]`:                                          false,
		`[TOOL_CALLS] []`:                  false,
		`[{"name":"ping","arguments":{}}]`: false,
	} {
		if got := accepts(g, out); got != want {
			t.Errorf("%s: %v, want %v", out, got, want)
		}
	}
	v := testVocab()
	r := rand.New(rand.NewPCG(8, 9))
	for range 20 {
		out := string(generate(t, g, v, r, 4000))
		var calls []struct {
			Name      string         `json:"name"`
			Arguments map[string]any `json:"arguments"`
		}
		if err := json.Unmarshal([]byte(strings.TrimPrefix(out, ToolCallsPrefix)), &calls); err != nil || len(calls) == 0 {
			t.Fatalf("%q: %v", out, err)
		}
	}
}

// allowedIDs lists the tokens set in mask.
func allowedIDs(mask []uint64, n int) []int32 {
	var out []int32
	for id := range n {
		if mask[id/64]&(1<<(id%64)) != 0 {
			out = append(out, int32(id))
		}
	}
	return out
}
