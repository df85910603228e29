package grammar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"
)

// ErrUnsupported marks a schema that uses JSON Schema features the compiler does not
// support; the message names them.
var ErrUnsupported = errors.New("unsupported JSON Schema")

// annotations are keywords that constrain nothing.
var annotations = map[string]bool{
	"title": true, "description": true, "default": true, "examples": true, "$schema": true, "$id": true,
	"$comment": true, "deprecated": true, "readOnly": true, "writeOnly": true, "$defs": true, "definitions": true,
	"strict": true, "additionalProperties": true, "nullable": true,
}

// supported are the keywords the compiler turns into constraints.
var supported = map[string]bool{
	"type": true, "properties": true, "required": true, "items": true, "minItems": true, "maxItems": true,
	"minLength": true, "maxLength": true, "enum": true, "const": true, "anyOf": true, "oneOf": true, "$ref": true,
	"minimum": true,
}

// MaxSchemaBytes bounds a schema's size.
const MaxSchemaBytes = 256 << 10

// CompileSchema compiles a JSON Schema. Errors wrap ErrUnsupported for valid schemas the
// compiler cannot enforce (naming the keywords), and describe malformed ones.
func CompileSchema(schema []byte) (*Grammar, error) {
	if len(schema) > MaxSchemaBytes {
		return nil, fmt.Errorf("the schema is %d bytes; at most %d are accepted", len(schema), MaxSchemaBytes)
	}
	if !utf8.Valid(schema) {
		return nil, fmt.Errorf("the schema is not valid UTF-8")
	}
	var root map[string]json.RawMessage
	if err := json.Unmarshal(schema, &root); err != nil {
		return nil, fmt.Errorf("the schema is not a JSON object: %w", err)
	}
	c := &compiler{root: root, refs: map[string]*node{}, unsupported: map[string]bool{}}
	n, err := c.compile(root, "#")
	if err != nil {
		return nil, err
	}
	if len(c.unsupported) > 0 {
		var names []string
		for k := range c.unsupported {
			names = append(names, k)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("%w: the schema uses %s, which constrained decoding does not support", ErrUnsupported, strings.Join(names, ", "))
	}
	return &Grammar{root: n}, nil
}

type compiler struct {
	root        map[string]json.RawMessage
	refs        map[string]*node
	unsupported map[string]bool
	depth       int
}

func (c *compiler) compile(s map[string]json.RawMessage, path string) (*node, error) {
	c.depth++
	defer func() { c.depth-- }()
	if c.depth > 64 {
		return nil, fmt.Errorf("the schema nests deeper than 64 levels at %s", path)
	}
	for k := range s {
		if !supported[k] && !annotations[k] && !strings.HasPrefix(k, "x-") {
			c.unsupported[k] = true
		}
	}
	if raw, ok := s["$ref"]; ok {
		var ref string
		if err := json.Unmarshal(raw, &ref); err != nil {
			return nil, fmt.Errorf("%s/$ref must be a string", path)
		}
		return c.ref(ref)
	}
	if raw, ok := s["const"]; ok {
		return literal([]json.RawMessage{raw}, path+"/const")
	}
	if raw, ok := s["enum"]; ok {
		var vals []json.RawMessage
		if err := json.Unmarshal(raw, &vals); err != nil || len(vals) == 0 {
			return nil, fmt.Errorf("%s/enum must be a non-empty array", path)
		}
		return literal(vals, path+"/enum")
	}
	for _, key := range []string{"anyOf", "oneOf"} {
		if raw, ok := s[key]; ok {
			var alts []map[string]json.RawMessage
			if err := json.Unmarshal(raw, &alts); err != nil || len(alts) == 0 {
				return nil, fmt.Errorf("%s/%s must be a non-empty array of schemas", path, key)
			}
			var nodes []*node
			for i, a := range alts {
				n, err := c.compile(a, fmt.Sprintf("%s/%s/%d", path, key, i))
				if err != nil {
					return nil, err
				}
				nodes = append(nodes, n)
			}
			return union(nodes, path+"/"+key)
		}
	}

	var types []string
	if raw, ok := s["type"]; ok {
		var one string
		if json.Unmarshal(raw, &one) == nil {
			types = []string{one}
		} else if err := json.Unmarshal(raw, &types); err != nil || len(types) == 0 {
			return nil, fmt.Errorf("%s/type must be a type name or a list of them", path)
		}
	} else {
		switch {
		case s["properties"] != nil:
			types = []string{"object"}
		case s["items"] != nil:
			types = []string{"array"}
		default:
			return anyAt(MaxDepth), nil
		}
	}
	var nullable bool
	if raw, ok := s["nullable"]; ok {
		_ = json.Unmarshal(raw, &nullable)
	}
	if nullable && !slices.Contains(types, "null") {
		types = append(types, "null")
	}
	if slices.Contains(types, "number") {
		types = slices.DeleteFunc(types, func(t string) bool { return t == "integer" }) // every integer is a number
	}
	var nodes []*node
	for _, t := range types {
		n, err := c.typed(t, s, path)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, n)
	}
	if len(nodes) == 1 {
		return nodes[0], nil
	}
	return union(nodes, path+"/type")
}

func (c *compiler) typed(t string, s map[string]json.RawMessage, path string) (*node, error) {
	intOf := func(key string, def int) (int, error) {
		raw, ok := s[key]
		if !ok {
			return def, nil
		}
		var v float64
		if err := json.Unmarshal(raw, &v); err != nil || v < 0 || v != math.Trunc(v) || v > 1<<30 {
			return 0, fmt.Errorf("%s/%s must be a non-negative integer", path, key)
		}
		return int(v), nil
	}
	switch t {
	case "object":
		var props map[string]json.RawMessage
		if raw, ok := s["properties"]; ok {
			if err := json.Unmarshal(raw, &props); err != nil {
				return nil, fmt.Errorf("%s/properties must be an object of schemas", path)
			}
		}
		if len(props) == 0 {
			return freeObject(MaxDepth), nil
		}
		var required []string
		if raw, ok := s["required"]; ok {
			if err := json.Unmarshal(raw, &required); err != nil {
				return nil, fmt.Errorf("%s/required must be a list of property names", path)
			}
		}
		for _, r := range required {
			if _, ok := props[r]; !ok {
				return nil, fmt.Errorf("%s/required names %q, which is not in properties", path, r)
			}
		}
		n := &node{kind: kObject}
		for _, name := range propertyOrder(s["properties"]) {
			var sub map[string]json.RawMessage
			if err := json.Unmarshal(props[name], &sub); err != nil {
				return nil, fmt.Errorf("%s/properties/%s must be a schema (an object)", path, name)
			}
			v, err := c.compile(sub, path+"/properties/"+name)
			if err != nil {
				return nil, err
			}
			n.props = append(n.props, prop{key: quotedKey(name), value: v, required: slices.Contains(required, name)})
		}
		n.finishObject()
		return n, nil
	case "array":
		n := &node{kind: kArray, maxItems: -1, items: anyAt(MaxDepth - 1)}
		if raw, ok := s["items"]; ok {
			var sub map[string]json.RawMessage
			if err := json.Unmarshal(raw, &sub); err != nil {
				return nil, fmt.Errorf("%s/items must be a schema (an object)", path)
			}
			items, err := c.compile(sub, path+"/items")
			if err != nil {
				return nil, err
			}
			n.items = items
		}
		var err error
		if n.minItems, err = intOf("minItems", 0); err != nil {
			return nil, err
		}
		if n.maxItems, err = intOf("maxItems", -1); err != nil {
			return nil, err
		}
		if n.maxItems >= 0 && n.minItems > n.maxItems {
			return nil, fmt.Errorf("%s: minItems %d is more than maxItems %d", path, n.minItems, n.maxItems)
		}
		return n, nil
	case "string":
		n := &node{kind: kString}
		var err error
		if n.minLen, err = intOf("minLength", 0); err != nil {
			return nil, err
		}
		if n.maxLen, err = intOf("maxLength", -1); err != nil {
			return nil, err
		}
		if n.maxLen >= 0 && n.minLen > n.maxLen {
			return nil, fmt.Errorf("%s: minLength %d is more than maxLength %d", path, n.minLen, n.maxLen)
		}
		return n, nil
	case "integer", "number":
		n := &node{kind: kNumber, integer: t == "integer"}
		if raw, ok := s["minimum"]; ok {
			var v float64
			if err := json.Unmarshal(raw, &v); err != nil {
				return nil, fmt.Errorf("%s/minimum must be a number", path)
			}
			if v != 0 {
				c.unsupported["minimum (other than 0)"] = true
			}
			n.unsigned = true
		}
		return n, nil
	case "boolean":
		return &node{kind: kLiteral, lits: [][]byte{[]byte("true"), []byte("false")}}, nil
	case "null":
		return &node{kind: kLiteral, lits: [][]byte{[]byte("null")}}, nil
	}
	return nil, fmt.Errorf("%s/type: %q is not a JSON Schema type (object, array, string, number, integer, boolean, null)", path, t)
}

// ref resolves a local reference (#/$defs/Name, #/definitions/Name, or #), compiling
// each target once so that recursive schemas close on themselves.
func (c *compiler) ref(ref string) (*node, error) {
	if n, ok := c.refs[ref]; ok {
		return n, nil
	}
	placeholder := &node{kind: kAny} // until the target is compiled: any value's first byte
	c.refs[ref] = placeholder
	target := c.root
	if ref != "#" {
		parts := strings.Split(strings.TrimPrefix(ref, "#/"), "/")
		if !strings.HasPrefix(ref, "#/") || len(parts) != 2 || (parts[0] != "$defs" && parts[0] != "definitions") {
			return nil, fmt.Errorf("$ref %q: only local references to #/$defs/NAME or #/definitions/NAME are supported", ref)
		}
		var defs map[string]map[string]json.RawMessage
		if err := json.Unmarshal(c.root[parts[0]], &defs); err != nil || defs[parts[1]] == nil {
			return nil, fmt.Errorf("$ref %q: no such definition", ref)
		}
		target = defs[parts[1]]
	}
	n, err := c.compile(target, ref)
	if err != nil {
		return nil, err
	}
	for m := n; m.ref != nil || m == placeholder; m = m.ref {
		if m == placeholder {
			return nil, fmt.Errorf("$ref %q refers only to itself, through references alone", ref)
		}
	}
	placeholder.ref = n
	return placeholder, nil
}

// literal is a node of fixed JSON values, written compactly.
func literal(vals []json.RawMessage, path string) (*node, error) {
	n := &node{kind: kLiteral}
	for _, v := range vals {
		var b bytes.Buffer
		if err := json.Compact(&b, v); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		n.lits = append(n.lits, b.Bytes())
	}
	return n, nil
}

// union is one of nodes, which must be told apart by their first byte.
func union(nodes []*node, path string) (*node, error) {
	var seen [256]bool
	for _, n := range nodes {
		first := firstBytes(n.resolve())
		for b := range 256 {
			if first[b] && seen[b] {
				return nil, fmt.Errorf("%w: the alternatives of %s overlap (two of them may start with %q); constrained decoding supports alternatives of different types only",
					ErrUnsupported, path, rune(b))
			}
		}
		for b := range 256 {
			seen[b] = seen[b] || first[b]
		}
	}
	return &node{kind: kUnion, alts: nodes}, nil
}

// firstBytes is the set of bytes a value of n may start with.
func firstBytes(n *node) (out [256]bool) {
	switch n.kind {
	case kObject:
		out['{'] = true
	case kArray:
		out['['] = true
	case kString:
		out['"'] = true
	case kNumber:
		for b := '0'; b <= '9'; b++ {
			out[b] = true
		}
		out['-'] = !n.unsigned
	case kLiteral:
		for _, l := range n.lits {
			out[l[0]] = true
		}
	case kUnion:
		for _, a := range n.alts {
			for b, ok := range firstBytes(a.resolve()) {
				out[b] = out[b] || ok
			}
		}
	default: // kAny, and a reference still being compiled
		for b := range 256 {
			out[b] = true
		}
	}
	return out
}

// propertyOrder is the order of an object's keys as written (a Go map has none).
func propertyOrder(raw json.RawMessage) []string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return nil
	}
	var names []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return names
		}
		if name, ok := tok.(string); ok {
			names = append(names, name)
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return names
		}
	}
	return names
}
