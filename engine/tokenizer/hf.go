package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"unicode/utf8"
)

// Hugging Face tokenizers (tokenizer.json).
//
// Mistral's and Llama 2's tokenizer.json files describe the SentencePiece
// model as a BPE model: a vocabulary, an ordered list of merges, byte
// fallback, and a normalizer that prepends "▁" and replaces spaces by "▁".
// HF's BPE applies the adjacent merge of lowest rank first; this package's
// encoder merges the adjacent pair whose merged piece has the highest
// score. The two agree when each piece's score orders pieces as their
// merges' ranks do, so a piece's score is minus the rank of the first merge
// that produces it. A multi-character piece no merge produces can never be
// formed by HF's BPE; it gets the lowest score (as llama.cpp's SentencePiece
// vocabularies give pieces of only "▁").

// ErrHFTokenizer reports a tokenizer.json the engine cannot run.
var ErrHFTokenizer = errors.New("tokenizer: unsupported tokenizer.json")

// unmergedScore is the score of pieces that no merge produces.
const unmergedScore = -1e9

type hfTokenizerFile struct {
	Model struct {
		Type                    string          `json:"type"`
		Vocab                   map[string]int  `json:"vocab"`
		Merges                  json.RawMessage `json:"merges"`
		UnkToken                *string         `json:"unk_token"`
		ByteFallback            bool            `json:"byte_fallback"`
		ContinuingSubwordPrefix *string         `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string         `json:"end_of_word_suffix"`
		IgnoreMerges            bool            `json:"ignore_merges"`
	} `json:"model"`
	AddedTokens []struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	} `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
}

// hfComponent is a normalizer, pre-tokenizer or post-processor entry.
type hfComponent struct {
	Type          string          `json:"type"`
	Normalizers   []hfComponent   `json:"normalizers"`
	PreTokenizers []hfComponent   `json:"pretokenizers"`
	Processors    []hfComponent   `json:"processors"`
	Prepend       string          `json:"prepend"`
	Pattern       json.RawMessage `json:"pattern"`
	Content       string          `json:"content"`
	Replacement   string          `json:"replacement"`
	PrependScheme string          `json:"prepend_scheme"`
	AddPrefix     *bool           `json:"add_prefix_space"`
	Split         *bool           `json:"split"`
	Single        []struct {
		SpecialToken *struct {
			ID string `json:"id"`
		} `json:"SpecialToken"`
		Sequence *struct {
			ID string `json:"id"`
		} `json:"Sequence"`
	} `json:"single"`
}

// HFConfig holds what tokenizer_config.json adds to tokenizer.json.
type hfConfigFile struct {
	AddBOS       *bool           `json:"add_bos_token"`
	AddEOS       *bool           `json:"add_eos_token"`
	BOS          json.RawMessage `json:"bos_token"`
	EOS          json.RawMessage `json:"eos_token"`
	UNK          json.RawMessage `json:"unk_token"`
	ChatTemplate json.RawMessage `json:"chat_template"`
}

// tokenContent reads a token given as "<s>" or {"content": "<s>", ...}.
func tokenContent(raw json.RawMessage) (string, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	var o struct {
		Content string `json:"content"`
	}
	if json.Unmarshal(raw, &o) == nil && o.Content != "" {
		return o.Content, true
	}
	return "", false
}

// FromHFJSON builds a tokenizer from a Hugging Face tokenizer.json and,
// if not nil, the tokenizer_config.json beside it.
func FromHFJSON(tokenizerJSON, configJSON []byte) (*Tokenizer, error) {
	v, err := VocabFromHFJSON(tokenizerJSON, configJSON)
	if err != nil {
		return nil, err
	}
	return New(v)
}

// VocabFromHFJSON converts a SentencePiece-style BPE tokenizer.json (as in
// Mistral's and Llama 2's repositories) to a Vocab, deriving piece scores
// from merge ranks (see the package comment above). configJSON, the
// tokenizer_config.json, may be nil; it supplies add_bos_token,
// add_eos_token, the special tokens and the chat template. Byte-level BPE
// (GPT-2, Llama 3, Mistral's Tekken) and Unigram or WordPiece models are
// refused with ErrHFTokenizer.
func VocabFromHFJSON(tokenizerJSON, configJSON []byte) (Vocab, error) {
	var f hfTokenizerFile
	if err := json.Unmarshal(tokenizerJSON, &f); err != nil {
		return Vocab{}, fmt.Errorf("%w: tokenizer.json: %v", ErrVocab, err)
	}
	var cfg hfConfigFile
	if len(configJSON) > 0 {
		if err := json.Unmarshal(configJSON, &cfg); err != nil {
			return Vocab{}, fmt.Errorf("%w: tokenizer_config.json: %v", ErrVocab, err)
		}
	}
	m := &f.Model
	if m.Type != "BPE" && !(m.Type == "" && len(m.Vocab) > 0 && len(m.Merges) > 0) {
		return Vocab{}, fmt.Errorf("%w: model type %q; the engine runs SentencePiece-style BPE tokenizers", ErrHFTokenizer, m.Type)
	}
	if (m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "") || (m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "") || m.IgnoreMerges {
		return Vocab{}, fmt.Errorf("%w: BPE options continuing_subword_prefix, end_of_word_suffix or ignore_merges are not supported", ErrHFTokenizer)
	}
	v := Vocab{}
	var err error
	if v.AddSpacePrefix, err = hfSpaceHandling(f.Normalizer, f.PreTokenizer); err != nil {
		return Vocab{}, err
	}

	// Pieces: the model's vocabulary plus the added tokens, ids dense.
	n := len(m.Vocab)
	for _, a := range f.AddedTokens {
		if _, ok := m.Vocab[a.Content]; !ok {
			n++
		}
	}
	if n == 0 {
		return Vocab{}, fmt.Errorf("%w: tokenizer.json has an empty vocabulary", ErrVocab)
	}
	v.Pieces = make([]string, n)
	filled := make([]bool, n)
	place := func(piece string, id int) error {
		if id < 0 || id >= n {
			return fmt.Errorf("%w: piece %q has id %d; ids must run from 0 to %d without gaps", ErrVocab, piece, id, n-1)
		}
		if filled[id] && v.Pieces[id] != piece {
			return fmt.Errorf("%w: id %d is both %q and %q", ErrVocab, id, v.Pieces[id], piece)
		}
		v.Pieces[id], filled[id] = piece, true
		return nil
	}
	for p, id := range m.Vocab {
		if err := place(p, id); err != nil {
			return Vocab{}, err
		}
	}
	v.Types = make([]TokenType, n)
	for i := range v.Types {
		v.Types[i] = Normal
	}
	special := map[string]int{}
	for _, a := range f.AddedTokens {
		if id, ok := m.Vocab[a.Content]; ok && id != a.ID {
			return Vocab{}, fmt.Errorf("%w: added token %q has id %d but the vocabulary gives it %d", ErrVocab, a.Content, a.ID, id)
		}
		if err := place(a.Content, a.ID); err != nil {
			return Vocab{}, err
		}
		if a.Special {
			v.Types[a.ID] = Control
		} else {
			v.Types[a.ID] = UserDefined
		}
		special[a.Content] = a.ID
	}
	for id, ok := range filled {
		if !ok {
			return Vocab{}, fmt.Errorf("%w: no piece has id %d; ids must run from 0 to %d without gaps", ErrVocab, id, n-1)
		}
	}
	index := make(map[string]int, n)
	for id, p := range v.Pieces {
		index[p] = id
	}
	for id, p := range v.Pieces {
		if _, ok := parseByteToken(p); ok && m.ByteFallback && v.Types[id] == Normal {
			v.Types[id] = Byte
		}
	}

	// Special tokens: tokenizer_config.json first, then the usual names.
	find := func(what string, raw json.RawMessage, fallback ...string) (int32, error) {
		names := fallback
		if s, ok := tokenContent(raw); ok {
			names = []string{s}
		}
		for _, s := range names {
			if id, ok := index[s]; ok {
				return int32(id), nil
			}
		}
		return 0, fmt.Errorf("%w: no %s token (looked for %q)", ErrVocab, what, names)
	}
	unk := "<unk>"
	if m.UnkToken != nil {
		unk = *m.UnkToken
	}
	if v.UNK, err = find("unknown", cfg.UNK, unk); err != nil {
		return Vocab{}, err
	}
	v.Types[v.UNK] = Unknown
	if v.BOS, err = find("beginning-of-sequence", cfg.BOS, "<s>"); err != nil {
		return Vocab{}, err
	}
	if v.EOS, err = find("end-of-sequence", cfg.EOS, "</s>"); err != nil {
		return Vocab{}, err
	}

	// BOS/EOS: the post-processor's template, else tokenizer_config.json,
	// else the Llama tokenizer's defaults (BOS on, EOS off).
	v.AddBOS, v.AddEOS = true, false
	if addBOS, addEOS, ok := hfTemplateSpecials(f.PostProcessor, v.Pieces[v.BOS], v.Pieces[v.EOS]); ok {
		v.AddBOS, v.AddEOS = addBOS, addEOS
	} else {
		if cfg.AddBOS != nil {
			v.AddBOS = *cfg.AddBOS
		}
		if cfg.AddEOS != nil {
			v.AddEOS = *cfg.AddEOS
		}
	}
	v.ChatTemplate = hfChatTemplate(cfg.ChatTemplate)

	if v.Scores, err = hfScores(m.Merges, index, v.Pieces, v.Types); err != nil {
		return Vocab{}, err
	}
	return v, nil
}

// hfSpaceHandling checks that the normalizer and pre-tokenizer do what
// SentencePiece does (spaces become "▁", optionally a "▁" is prepended)
// and reports whether the prefix is added.
func hfSpaceHandling(normalizer, preTokenizer json.RawMessage) (prefix bool, err error) {
	replaced := false
	var walkNorm func(c hfComponent) error
	walkNorm = func(c hfComponent) error {
		switch c.Type {
		case "Sequence":
			for _, n := range c.Normalizers {
				if err := walkNorm(n); err != nil {
					return err
				}
			}
		case "Prepend":
			if c.Prepend != spaceMark {
				return fmt.Errorf("%w: normalizer prepends %q, want %q", ErrHFTokenizer, c.Prepend, spaceMark)
			}
			prefix = true
		case "Replace":
			var pat struct {
				String *string `json:"String"`
			}
			if json.Unmarshal(c.Pattern, &pat) != nil || pat.String == nil || *pat.String != " " || c.Content != spaceMark {
				return fmt.Errorf("%w: normalizer Replace other than \" \" -> %q", ErrHFTokenizer, spaceMark)
			}
			replaced = true
		default:
			return fmt.Errorf("%w: normalizer %q is not supported", ErrHFTokenizer, c.Type)
		}
		return nil
	}
	if len(normalizer) > 0 && string(normalizer) != "null" {
		var c hfComponent
		if err := json.Unmarshal(normalizer, &c); err != nil {
			return false, fmt.Errorf("%w: normalizer: %v", ErrVocab, err)
		}
		if err := walkNorm(c); err != nil {
			return false, err
		}
	}
	var walkPre func(c hfComponent) error
	walkPre = func(c hfComponent) error {
		switch c.Type {
		case "Sequence":
			for _, p := range c.PreTokenizers {
				if err := walkPre(p); err != nil {
					return err
				}
			}
		case "Metaspace":
			if c.Replacement != "" && c.Replacement != spaceMark {
				return fmt.Errorf("%w: Metaspace replacement %q, want %q", ErrHFTokenizer, c.Replacement, spaceMark)
			}
			if c.Split != nil && *c.Split {
				return fmt.Errorf("%w: a Metaspace pre-tokenizer that splits on spaces is not supported", ErrHFTokenizer)
			}
			replaced = true
			switch {
			case c.PrependScheme == "always" || c.PrependScheme == "first":
				prefix = true
			case c.PrependScheme == "never":
			case c.AddPrefix != nil:
				prefix = *c.AddPrefix
			default:
				prefix = true
			}
		case "ByteLevel":
			return fmt.Errorf("%w: byte-level BPE (GPT-2, Llama 3, Mistral Tekken) is not supported; the engine runs SentencePiece-style tokenizers", ErrHFTokenizer)
		default:
			return fmt.Errorf("%w: pre-tokenizer %q is not supported", ErrHFTokenizer, c.Type)
		}
		return nil
	}
	if len(preTokenizer) > 0 && string(preTokenizer) != "null" {
		var c hfComponent
		if err := json.Unmarshal(preTokenizer, &c); err != nil {
			return false, fmt.Errorf("%w: pre_tokenizer: %v", ErrVocab, err)
		}
		if err := walkPre(c); err != nil {
			return false, err
		}
	}
	if !replaced {
		return false, fmt.Errorf("%w: neither the normalizer nor the pre-tokenizer turns spaces into %q, as SentencePiece does", ErrHFTokenizer, spaceMark)
	}
	return prefix, nil
}

// hfTemplateSpecials reads whether a TemplateProcessing post-processor puts
// BOS before and EOS after a single sequence.
func hfTemplateSpecials(raw json.RawMessage, bos, eos string) (addBOS, addEOS, ok bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return false, false, false
	}
	var c hfComponent
	if json.Unmarshal(raw, &c) != nil {
		return false, false, false
	}
	if c.Type == "Sequence" {
		for _, p := range c.Processors {
			if p.Type == "TemplateProcessing" {
				c = p
				break
			}
		}
	}
	if c.Type != "TemplateProcessing" || len(c.Single) == 0 {
		return false, false, false
	}
	first, last := c.Single[0], c.Single[len(c.Single)-1]
	addBOS = first.SpecialToken != nil && first.SpecialToken.ID == bos
	addEOS = last.SpecialToken != nil && last.SpecialToken.ID == eos
	return addBOS, addEOS, true
}

// hfChatTemplate returns the default chat template of tokenizer_config.json:
// a string, or the entry named "default" of a list of named templates.
func hfChatTemplate(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var named []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if json.Unmarshal(raw, &named) == nil {
		for _, t := range named {
			if t.Name == "default" {
				return t.Template
			}
		}
	}
	return ""
}

// hfScores turns the merge list into piece scores.
func hfScores(raw json.RawMessage, index map[string]int, pieces []string, types []TokenType) ([]float32, error) {
	merges, err := parseMerges(raw)
	if err != nil {
		return nil, err
	}
	if len(merges) >= 1<<24 {
		return nil, fmt.Errorf("%w: %d merges; ranks beyond 2^24 do not fit a float32 score", ErrVocab, len(merges))
	}
	rank := make([]int, len(pieces))
	for i := range rank {
		rank[i] = -1
	}
	for r, mg := range merges {
		for _, part := range mg {
			if _, ok := index[part]; !ok {
				return nil, fmt.Errorf("%w: merge %d (%q %q) uses %q, which is not in the vocabulary", ErrVocab, r, mg[0], mg[1], part)
			}
		}
		id, ok := index[mg[0]+mg[1]]
		if !ok {
			return nil, fmt.Errorf("%w: merge %d (%q %q) makes %q, which is not in the vocabulary", ErrVocab, r, mg[0], mg[1], mg[0]+mg[1])
		}
		if rank[id] < 0 {
			rank[id] = r
		}
	}
	scores := make([]float32, len(pieces))
	for id, p := range pieces {
		switch {
		case types[id] != Normal:
		case rank[id] >= 0:
			scores[id] = -float32(rank[id])
		case utf8.RuneCountInString(p) > 1:
			scores[id] = unmergedScore
		}
	}
	return scores, nil
}

// parseMerges accepts both encodings of tokenizer.json merges: "a b"
// strings and ["a", "b"] pairs.
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	var items []json.RawMessage
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("%w: merges: %v", ErrVocab, err)
	}
	pairs := make([][2]string, len(items))
	for i, it := range items {
		var s string
		if err := json.Unmarshal(it, &s); err == nil {
			a, b, ok := strings.Cut(s, " ")
			if !ok || a == "" || b == "" || strings.Contains(b, " ") {
				return nil, fmt.Errorf("%w: merge %d is %q, want two pieces separated by one space", ErrVocab, i, s)
			}
			pairs[i] = [2]string{a, b}
			continue
		}
		var pair []string
		if err := json.Unmarshal(it, &pair); err != nil || len(pair) != 2 || pair[0] == "" || pair[1] == "" {
			return nil, fmt.Errorf("%w: merge %d is %s, want \"a b\" or [\"a\", \"b\"]", ErrVocab, i, truncate(it, 40))
		}
		pairs[i] = [2]string{pair[0], pair[1]}
	}
	return pairs, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// HFJSON writes v as a tokenizer.json and a tokenizer_config.json that
// VocabFromHFJSON reads back to an equivalent tokenizer: the merges list
// every way of splitting each normal piece into two pieces, ordered by the
// merged piece's score (highest first, ties by id). Byte, control,
// unknown and unused pieces are never merge results.
func (v Vocab) HFJSON() (tokenizerJSON, configJSON []byte, err error) {
	if _, err := New(v); err != nil {
		return nil, nil, err
	}
	scores := v.Scores
	if scores == nil {
		scores = make([]float32, len(v.Pieces))
	}
	typ := func(id int) TokenType {
		if v.Types == nil {
			return Normal
		}
		return v.Types[id]
	}
	index := make(map[string]int, len(v.Pieces))
	for id, p := range v.Pieces {
		if _, dup := index[p]; !dup {
			index[p] = id
		}
	}
	type merge struct {
		a, b  string
		piece int
	}
	var merges []merge
	for id, p := range v.Pieces {
		if typ(id) != Normal || index[p] != id {
			continue
		}
		for i := range p {
			if i == 0 {
				continue
			}
			a, b := p[:i], p[i:]
			ia, okA := index[a]
			ib, okB := index[b]
			if okA && okB && typ(ia) != Control && typ(ib) != Control && utf8.ValidString(a) && utf8.ValidString(b) {
				merges = append(merges, merge{a, b, id})
			}
		}
	}
	sort.SliceStable(merges, func(i, j int) bool {
		si, sj := scores[merges[i].piece], scores[merges[j].piece]
		if si != sj {
			return si > sj
		}
		return merges[i].piece < merges[j].piece
	})
	vocab := make(map[string]int, len(v.Pieces))
	type added struct {
		ID         int    `json:"id"`
		Content    string `json:"content"`
		SingleWord bool   `json:"single_word"`
		LStrip     bool   `json:"lstrip"`
		RStrip     bool   `json:"rstrip"`
		Normalized bool   `json:"normalized"`
		Special    bool   `json:"special"`
	}
	var addedTokens []added
	for id, p := range v.Pieces {
		if index[p] != id {
			return nil, nil, fmt.Errorf("%w: piece %q appears twice; tokenizer.json cannot hold that", ErrVocab, p)
		}
		vocab[p] = id
		switch typ(id) {
		case Control, Unknown:
			addedTokens = append(addedTokens, added{ID: id, Content: p, Special: true})
		case UserDefined:
			addedTokens = append(addedTokens, added{ID: id, Content: p})
		}
	}
	mergeStrs := make([][2]string, len(merges))
	for i, m := range merges {
		mergeStrs[i] = [2]string{m.a, m.b}
	}
	normalizers := []map[string]any{{"type": "Replace", "pattern": map[string]string{"String": " "}, "content": spaceMark}}
	if v.AddSpacePrefix {
		normalizers = append([]map[string]any{{"type": "Prepend", "prepend": spaceMark}}, normalizers...)
	}
	var single []map[string]any
	if v.AddBOS {
		single = append(single, map[string]any{"SpecialToken": map[string]any{"id": v.Pieces[v.BOS], "type_id": 0}})
	}
	single = append(single, map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}})
	if v.AddEOS {
		single = append(single, map[string]any{"SpecialToken": map[string]any{"id": v.Pieces[v.EOS], "type_id": 0}})
	}
	tok := map[string]any{
		"version":        "1.0",
		"truncation":     nil,
		"padding":        nil,
		"added_tokens":   addedTokens,
		"normalizer":     map[string]any{"type": "Sequence", "normalizers": normalizers},
		"pre_tokenizer":  nil,
		"post_processor": map[string]any{"type": "TemplateProcessing", "single": single},
		"decoder": map[string]any{"type": "Sequence", "decoders": []map[string]any{
			{"type": "Replace", "pattern": map[string]string{"String": spaceMark}, "content": " "},
			{"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0},
		}},
		"model": map[string]any{
			"type": "BPE", "dropout": nil, "unk_token": v.Pieces[v.UNK], "continuing_subword_prefix": nil,
			"end_of_word_suffix": nil, "fuse_unk": true, "byte_fallback": true, "vocab": vocab, "merges": mergeStrs,
		},
	}
	if tokenizerJSON, err = json.Marshal(tok); err != nil {
		return nil, nil, err
	}
	cfg := map[string]any{
		"add_bos_token": v.AddBOS, "add_eos_token": v.AddEOS, "bos_token": v.Pieces[v.BOS],
		"eos_token": v.Pieces[v.EOS], "unk_token": v.Pieces[v.UNK], "tokenizer_class": "LlamaTokenizer",
		"legacy": true, "model_max_length": math.MaxInt32,
	}
	if v.ChatTemplate != "" {
		cfg["chat_template"] = v.ChatTemplate
	}
	if configJSON, err = json.MarshalIndent(cfg, "", "  "); err != nil {
		return nil, nil, err
	}
	return tokenizerJSON, configJSON, nil
}
