package grammar

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// FuzzCompileSchema: any input is compiled or refused with an error, never a panic, and
// what compiles admits only JSON: random walks over the allowed tokens give outputs that
// parse whenever they end.
func FuzzCompileSchema(f *testing.F) {
	for _, s := range []string{
		`{"type":"object","properties":{"a":{"type":"string","maxLength":3}},"required":["a"]}`,
		`{"anyOf":[{"type":"string"},{"type":"integer"}]}`,
		`{"$defs":{"n":{"type":"object","properties":{"next":{"$ref":"#/$defs/n"}}}},"$ref":"#/$defs/n"}`,
		`{"type":"array","items":{"enum":[1,"x",null]},"minItems":1,"maxItems":2}`,
		`{"type":["number","null"]}`, `{}`, `{"const":{"a":[1]}}`, `{"type":"string","pattern":"x"}`,
	} {
		f.Add([]byte(s))
	}
	v := testVocab()
	f.Fuzz(func(t *testing.T, schema []byte) {
		g, err := CompileSchema(schema)
		if err != nil {
			return
		}
		r := rand.New(rand.NewPCG(uint64(len(schema)), 1))
		c := g.Constrain(v, false)
		mask := make([]uint64, (v.Size()+63)/64)
		var out []byte
		for range 300 {
			c.Allowed(mask)
			allowed := allowedIDs(mask, v.Size())
			if len(allowed) == 0 {
				t.Fatalf("schema %s: no token allowed after %q", schema, out)
			}
			tok := allowed[r.IntN(len(allowed))]
			if tok == 0 {
				if !json.Valid(out) {
					t.Fatalf("schema %s: the output %q is not JSON", schema, out)
				}
				return
			}
			c.Accept(tok)
			out = append(out, v.tokens[tok]...)
		}
	})
}

// FuzzRegex: any pattern compiles or is refused, and matching never panics.
func FuzzRegex(f *testing.F) {
	for _, s := range []string{`[0-9]+`, `(a|b)*c`, `^x$`, `é+`, `\d{2,4}-\w`} {
		f.Add(s, "123-x")
	}
	f.Fuzz(func(t *testing.T, pattern, text string) {
		g, err := Regex(pattern)
		if err != nil {
			return
		}
		m := g.Start()
		for i := 0; i < len(text); i++ {
			var ok bool
			if m, ok = m.Step(text[i]); !ok {
				return
			}
		}
		_ = m.Accepting()
	})
}
