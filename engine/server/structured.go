package server

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"sync"

	"github.com/moe-operator/moe-operator/engine/grammar"
	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// grammarCacheSize bounds the compiled grammars kept: a schema is compiled once and
// reused by every request that sends it again.
const grammarCacheSize = 256

var grammars = struct {
	sync.Mutex
	m map[string]*grammar.Grammar
}{m: map[string]*grammar.Grammar{}}

// cachedGrammar is the grammar under key, compiled by compile on first use. Errors are
// not cached.
func cachedGrammar(key string, compile func() (*grammar.Grammar, error)) (*grammar.Grammar, error) {
	// Keys are schemas of up to 256 KiB; the cache keeps their digests.
	sum := sha256.Sum256([]byte(key))
	key = string(sum[:])
	grammars.Lock()
	g, ok := grammars.m[key]
	grammars.Unlock()
	if ok {
		return g, nil
	}
	g, err := compile()
	if err != nil {
		return nil, err
	}
	grammars.Lock()
	if len(grammars.m) >= grammarCacheSize {
		clear(grammars.m) // a simple bound: workloads reuse a few schemas
	}
	grammars.m[key] = g
	grammars.Unlock()
	return g, nil
}

// compileSchema compiles a JSON Schema through the cache, keyed by its compact form.
func compileSchema(schema []byte) (*grammar.Grammar, error) {
	var b bytes.Buffer
	key := schema
	if json.Compact(&b, schema) == nil {
		key = b.Bytes()
	}
	return cachedGrammar("schema:"+string(key), func() (*grammar.Grammar, error) { return grammar.CompileSchema(schema) })
}

// grammarVocab is the vocabulary as structured outputs see it: each token's text bytes,
// and none for control tokens, which a grammar never allows.
func grammarVocab(tok *tokenizer.Tokenizer, texts []string) *grammar.Vocab {
	toks := make([][]byte, len(texts))
	eos := int32(-1)
	if tok != nil {
		v := tok.Vocab()
		for id, t := range texts {
			if id < len(v.Types) {
				switch v.Types[id] {
				case tokenizer.Control, tokenizer.Unknown, tokenizer.Unused:
					continue
				}
			}
			toks[id] = []byte(t)
		}
		eos = tok.EOS()
	}
	return grammar.NewVocab(toks, eos)
}
