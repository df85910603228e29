package modelgen

import (
	"bufio"
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/moe-operator/moe-operator/engine/tokenizer"
)

// mistralVocabGz is the 32000-piece Mistral / Mixtral-8x7B vocabulary; see
// vocab/PROVENANCE.md for where it comes from and how it was built.
//
//go:embed vocab/mistral-v1.tsv.gz
var mistralVocabGz []byte

var mistralOnce = sync.OnceValues(func() (tokenizer.Vocab, error) {
	zr, err := gzip.NewReader(bytes.NewReader(mistralVocabGz))
	if err != nil {
		return tokenizer.Vocab{}, err
	}
	v := tokenizer.Vocab{BOS: 1, EOS: 2, UNK: 0, AddBOS: true, AddSpacePrefix: true}
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 3 {
			return tokenizer.Vocab{}, fmt.Errorf("modelgen: bad vocabulary line %d", len(v.Pieces)+1)
		}
		score, err1 := strconv.ParseFloat(f[1], 32)
		typ, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			return tokenizer.Vocab{}, fmt.Errorf("modelgen: bad vocabulary line %d", len(v.Pieces)+1)
		}
		v.Pieces = append(v.Pieces, f[0])
		v.Scores = append(v.Scores, float32(score))
		v.Types = append(v.Types, tokenizer.TokenType(typ))
	}
	return v, sc.Err()
})

// MistralVocab returns the real Mistral v1 vocabulary (32000 pieces). The
// returned slices are shared: do not modify them.
func MistralVocab() tokenizer.Vocab {
	v, err := mistralOnce()
	if err != nil {
		panic("modelgen: embedded Mistral vocabulary is corrupt: " + err.Error())
	}
	return v
}

// SyntheticVocab returns a deterministic SentencePiece-style vocabulary of
// size pieces (at least 300): <unk>, <s>, </s>, the 256 byte tokens, "▁",
// printable ASCII characters, then "▁"-prefixed letters and letter pairs.
// Scores follow the same rule as the Mistral vocabulary.
func SyntheticVocab(size int) (tokenizer.Vocab, error) {
	if size < 300 {
		return tokenizer.Vocab{}, fmt.Errorf("modelgen: a synthetic vocabulary needs at least 300 pieces, asked for %d", size)
	}
	v := tokenizer.Vocab{BOS: 1, EOS: 2, UNK: 0, AddBOS: true, AddSpacePrefix: true}
	add := func(p string, t tokenizer.TokenType) {
		v.Pieces = append(v.Pieces, p)
		v.Types = append(v.Types, t)
	}
	add("<unk>", tokenizer.Unknown)
	add("<s>", tokenizer.Control)
	add("</s>", tokenizer.Control)
	for b := 0; b < 256; b++ {
		add(fmt.Sprintf("<0x%02X>", b), tokenizer.Byte)
	}
	seen := map[string]bool{}
	candidates := []string{"\u2581", "\u2581\u2581"}
	for c := byte('!'); c <= '~'; c++ {
		candidates = append(candidates, string(c))
	}
	letters := "etaoinshrdlucmfwypvbgkjqxz"
	for _, c := range letters {
		candidates = append(candidates, "\u2581"+string(c))
	}
	for _, a := range letters {
		for _, b := range letters {
			candidates = append(candidates, string(a)+string(b))
		}
	}
	for _, a := range letters {
		for _, b := range letters {
			candidates = append(candidates, "\u2581"+string(a)+string(b))
		}
	}
	for _, p := range candidates {
		if len(v.Pieces) == size {
			break
		}
		if !seen[p] {
			seen[p] = true
			add(p, tokenizer.Normal)
		}
	}
	for i := 0; len(v.Pieces) < size; i++ { // pad with unused pieces
		add(fmt.Sprintf("<unused%d>", i), tokenizer.Unused)
	}
	v.Scores = make([]float32, size)
	for id, p := range v.Pieces {
		switch {
		case v.Types[id] != tokenizer.Normal:
		case strings.Trim(p, "\u2581") == "":
			v.Scores[id] = -1e9
		default:
			v.Scores[id] = -float32(id - 259)
		}
	}
	return v, nil
}
