package grammar

import (
	"bytes"
	"encoding/json"
	"sync"
)

// The nodes of free JSON (json_object, and schemas that leave a value open), one per
// depth, shared by every grammar.
var (
	anyString      = &node{kind: kString, maxLen: -1}
	anyNumber      = &node{kind: kNumber}
	scalarLiterals = &node{kind: kLiteral, lits: [][]byte{[]byte("true"), []byte("false"), []byte("null")}}
	freeNodes      = sync.OnceValue(func() (out [MaxDepth + 1][3]*node) {
		for d := range out {
			out[d][0] = &node{kind: kAny, depth: d}
			if d > 0 {
				out[d][1] = &node{kind: kObject, free: true, depth: d}
				out[d][2] = &node{kind: kArray, items: out[d-1][0], maxItems: -1, depth: d}
			}
		}
		return out
	})
)

// anyAt is any JSON value nested at most d deep.
func anyAt(d int) *node { return freeNodes()[max(0, min(d, MaxDepth))][0] }

// freeObject is any JSON object nested at most d deep (d >= 1).
func freeObject(d int) *node { return freeNodes()[max(1, min(d, MaxDepth))][1] }

// freeArray is any JSON array nested at most d deep (d >= 1).
func freeArray(d int) *node { return freeNodes()[max(1, min(d, MaxDepth))][2] }

// valueOf is the node of object n's property i.
func (n *node) valueOf(i int) *node {
	if n.free {
		return anyAt(n.depth - 1)
	}
	return n.props[i].value
}

// keysFrom is the literal of the keys that may come at declared property i: it and the
// optional ones after it, up to and including the first required one (nil: none left).
// The k-th literal names property i+k.
func (n *node) keysFrom(i int) *node {
	if i >= len(n.props) {
		return nil
	}
	return n.keyNodes[i]
}

// finishObject precomputes an object node's key literals.
func (n *node) finishObject() {
	n.keyNodes = make([]*node, len(n.props))
	for i := range n.props {
		lit := &node{kind: kLiteral}
		for _, p := range n.props[i:] {
			lit.lits = append(lit.lits, p.key)
			if p.required {
				break
			}
		}
		n.keyNodes[i] = lit
	}
}

// quotedKey is a key as it appears before its value: "name":
func quotedKey(name string) []byte {
	return append(jsonString(name), ':')
}

// jsonString is s as a JSON string, escaping only what JSON requires.
func jsonString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
