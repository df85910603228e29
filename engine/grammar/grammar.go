// Package grammar constrains generation to a formal language: JSON that a JSON Schema
// accepts (OpenAI's response_format json_schema, vLLM's guided_json), any JSON object
// (json_object), one of a list of strings (guided_choice) or a regular expression
// (guided_regex). A Grammar is compiled once; a Matcher follows one output byte by byte, and
// Mask (mask.go) turns its state into the set of vocabulary tokens that may come next.
//
// The JSON it admits is compact: no whitespace outside strings. A schema's declared
// properties come in the schema's order, each required one present and optional ones
// possibly left out, and no other property (as OpenAI's strict mode). So, with a
// schema that bounds its strings (maxLength, enum) and arrays (maxItems), every output is
// bounded, and a model, however random, ends it well inside a generous max_tokens. Every
// complete output parses and validates against the schema: the constraint, not the
// model, guarantees it.
//
// The matcher's state is an immutable stack of frames, so a mask computation can branch
// from one state into every token without copying.
package grammar

import (
	"fmt"
	"unicode/utf8"
)

// Grammar is a compiled constraint.
type Grammar struct {
	root *node
}

// kind is what a node matches.
type kind uint8

const (
	kObject  kind = iota // a JSON object: declared properties, or any keys (free)
	kArray               // a JSON array of items
	kString              // a JSON string, length-bounded
	kNumber              // a JSON number, or an integer
	kLiteral             // one of fixed byte strings (enum, const, true/false, null, choices)
	kUnion               // one of alternatives, told apart by their first byte
	kAny                 // any JSON value (free objects and arrays), depth-bounded
	kRegex               // a regular expression over the whole output
	kSeq                 // parts, one after the other
	kTagged              // a literal head that picks a body, then a closing literal
)

// node is a compiled schema (or other grammar) element.
type node struct {
	kind kind
	// kObject
	props    []prop
	keyNodes []*node // keysFrom's literals
	free     bool    // any keys, values kAny (json_object, or an object schema without properties)
	// kArray
	items              *node
	minItems, maxItems int // maxItems < 0: unbounded
	// kString
	minLen, maxLen int // in characters; maxLen < 0: unbounded
	// kNumber
	integer  bool
	unsigned bool // minimum >= 0: no minus sign
	// kLiteral
	lits [][]byte
	// kUnion
	alts []*node
	// kAny
	depth int
	// kRegex
	re *regexProg
	// kSeq: parts; kTagged: heads is a literal of the heads, bodies[k] follows head k,
	// and parts[0] closes every body.
	parts  []*node
	heads  *node
	bodies []*node
	// ref, set while compiling a $ref, resolves lazily (recursive schemas).
	ref *node
}

type prop struct {
	key      []byte // the quoted key and the colon: "name":
	value    *node
	required bool
}

func (n *node) resolve() *node {
	for n.ref != nil {
		n = n.ref
	}
	return n
}

// Limits of what the matcher admits where a schema sets none.
const (
	// MaxNumberBytes bounds a number's length, so digits cannot run forever, and
	// MaxIntegerBytes an integer's, so that it stays exact in a float64 (15 digits).
	MaxNumberBytes  = 24
	MaxIntegerBytes = 15
	// MaxDepth bounds the nesting of free JSON (json_object).
	MaxDepth = 12
)

// JSONObject is the grammar of response_format json_object: any JSON object.
func JSONObject() *Grammar {
	return &Grammar{root: freeObject(MaxDepth)}
}

// Choice is the grammar of guided_choice: exactly one of the strings.
func Choice(choices []string) (*Grammar, error) {
	if len(choices) == 0 {
		return nil, fmt.Errorf("guided_choice needs at least one choice")
	}
	n := &node{kind: kLiteral}
	for _, c := range choices {
		if c == "" || !utf8.ValidString(c) {
			return nil, fmt.Errorf("guided_choice: every choice must be non-empty UTF-8 text")
		}
		n.lits = append(n.lits, []byte(c))
	}
	return &Grammar{root: n}, nil
}

// Matcher follows one output through a grammar. The zero Matcher is invalid; use Start.
type Matcher struct {
	top *frame
	// done: the root value completed; only the end may follow.
	done bool
}

// Start is the matcher before the first byte.
func (g *Grammar) Start() Matcher {
	return Matcher{top: &frame{n: g.root.resolve(), phase: phStart}}
}

// Step is the matcher after byte b, and whether b is allowed.
func (m Matcher) Step(b byte) (Matcher, bool) {
	if m.done {
		return m, false
	}
	top := m.top
	for {
		if next, ok := top.step(b); ok {
			if next == nil { // the root consumed its last byte and completed
				return Matcher{done: true}, true
			}
			return Matcher{top: next}, true
		}
		// b does not continue the top value; if that value may end here, it ends, and
		// b goes to the value around it.
		if !top.canEnd() {
			return m, false
		}
		if top.parent == nil {
			return m, false // the root ended; nothing may follow it
		}
		top = top.parent.childDone(top)
	}
}

// Feed steps through every byte of p.
func (m Matcher) Feed(p []byte) (Matcher, bool) {
	for _, b := range p {
		var ok bool
		if m, ok = m.Step(b); !ok {
			return m, false
		}
	}
	return m, true
}

// Accepting reports whether the output may end here.
func (m Matcher) Accepting() bool {
	if m.done {
		return true
	}
	for f := m.top; f != nil; {
		if !f.canEnd() {
			return false
		}
		if f.parent == nil {
			return true
		}
		f = f.parent.childDone(f)
	}
	return true
}

// Done reports whether the output is complete and nothing more may follow.
func (m Matcher) Done() bool { return m.done }

// Tool is a function the model may call: its name and its parameters' JSON Schema
// (empty: any JSON object).
type Tool struct {
	Name       string
	Parameters []byte
}

// ToolCalls is the grammar of Mistral's tool-call output,
//
//	[TOOL_CALLS] [{"name":"NAME","arguments":{...}},...]
//
// with at least one call and at most maxCalls (0: MaxToolCalls), each naming one of tools
// with arguments its schema accepts.
func ToolCalls(tools []Tool, maxCalls int) (*Grammar, error) {
	if len(tools) == 0 {
		return nil, fmt.Errorf("no tools to call")
	}
	call := &node{kind: kTagged, heads: &node{kind: kLiteral}, parts: []*node{{kind: kLiteral, lits: [][]byte{[]byte("}")}}}}
	for _, t := range tools {
		head := append([]byte(`{"name":`), jsonString(t.Name)...)
		call.heads.lits = append(call.heads.lits, append(head, []byte(`,"arguments":`)...))
		args := freeObject(MaxDepth - 1)
		if len(t.Parameters) > 0 {
			g, err := CompileSchema(t.Parameters)
			if err != nil {
				return nil, fmt.Errorf("the parameters of %s: %w", t.Name, err)
			}
			args = g.root
		}
		call.bodies = append(call.bodies, args)
	}
	prefix := &node{kind: kLiteral, lits: [][]byte{[]byte(ToolCallsPrefix)}}
	if maxCalls <= 0 {
		maxCalls = MaxToolCalls
	}
	list := &node{kind: kArray, items: call, minItems: 1, maxItems: maxCalls}
	return &Grammar{root: &node{kind: kSeq, parts: []*node{prefix, list}}}, nil
}

// MaxToolCalls bounds the calls of one forced tool-call output.
const MaxToolCalls = 16

// ToolCallsPrefix starts a Mistral tool-call output.
const ToolCallsPrefix = "[TOOL_CALLS] "
