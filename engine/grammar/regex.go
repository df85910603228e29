package grammar

import (
	"fmt"
	"regexp/syntax"
	"slices"
	"unicode/utf8"
)

// MaxRegexBytes bounds a guided_regex pattern.
const MaxRegexBytes = 4 << 10

// regexProg is a compiled regular expression that must match the whole output.
type regexProg struct {
	prog *syntax.Prog
}

// reState is a regex match in progress: the program's threads (sorted, after following
// every empty transition) and the bytes of a character not yet complete.
type reState struct {
	pcs     []uint32
	pending [utf8.UTFMax]byte
	npend   int
}

// Regex is the grammar of guided_regex: outputs the whole of which match pattern (Go's
// RE2 syntax, as vLLM's guided decoding backends take it, without word boundaries).
func Regex(pattern string) (*Grammar, error) {
	if len(pattern) > MaxRegexBytes {
		return nil, fmt.Errorf("guided_regex is %d bytes; at most %d are accepted", len(pattern), MaxRegexBytes)
	}
	re, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return nil, fmt.Errorf("guided_regex: %w", err)
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return nil, fmt.Errorf("guided_regex: %w", err)
	}
	for _, in := range prog.Inst {
		if in.Op == syntax.InstEmptyWidth && syntax.EmptyOp(in.Arg)&(syntax.EmptyWordBoundary|syntax.EmptyNoWordBoundary) != 0 {
			return nil, fmt.Errorf("%w: guided_regex uses \\b or \\B, which constrained decoding does not support", ErrUnsupported)
		}
	}
	rp := &regexProg{prog: prog}
	return &Grammar{root: &node{kind: kRegex, re: rp}}, nil
}

// start is the state before the first byte.
func (p *regexProg) start() reState {
	return reState{pcs: p.closure([]uint32{uint32(p.prog.Start)}, true)}
}

// closure follows the empty transitions from pcs. atStart says whether the position is
// the start of the text (where ^ holds).
func (p *regexProg) closure(pcs []uint32, atStart bool) []uint32 {
	var out []uint32
	seen := make([]bool, len(p.prog.Inst))
	stack := slices.Clone(pcs)
	for len(stack) > 0 {
		pc := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[pc] {
			continue
		}
		seen[pc] = true
		in := &p.prog.Inst[pc]
		switch in.Op {
		case syntax.InstAlt, syntax.InstAltMatch:
			stack = append(stack, in.Out, in.Arg)
		case syntax.InstCapture, syntax.InstNop:
			stack = append(stack, in.Out)
		case syntax.InstEmptyWidth:
			op := syntax.EmptyOp(in.Arg)
			if op&(syntax.EmptyBeginText|syntax.EmptyBeginLine) != 0 && !atStart {
				continue
			}
			// End-of-text assertions are checked when the output ends (accepting).
			out = append(out, pc)
			if op&(syntax.EmptyEndText|syntax.EmptyEndLine) == 0 {
				stack = append(stack, in.Out)
			}
		case syntax.InstFail:
		default:
			out = append(out, pc)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// step consumes one byte.
func (s reState) step(p *regexProg, b byte) (reState, bool) {
	buf := append(s.pending[:s.npend:s.npend], b)
	r, size := utf8.DecodeRune(buf)
	if r == utf8.RuneError && size <= 1 {
		if !utf8.FullRune(buf) && len(buf) < utf8.UTFMax && validPrefix(buf) && s.mayMatch(p, buf) {
			next := reState{pcs: s.pcs, npend: len(buf)}
			copy(next.pending[:], buf)
			return next, true
		}
		return s, false
	}
	var to []uint32
	for _, pc := range s.pcs {
		in := &p.prog.Inst[pc]
		switch in.Op {
		case syntax.InstRune, syntax.InstRune1, syntax.InstRuneAny, syntax.InstRuneAnyNotNL:
			if in.MatchRune(r) {
				to = append(to, in.Out)
			}
		}
	}
	if len(to) == 0 {
		return s, false
	}
	return reState{pcs: p.closure(to, false)}, true
}

// accepting reports whether the text so far matches whole.
func (s reState) accepting(p *regexProg) bool {
	if s.npend > 0 {
		return false
	}
	for _, pc := range s.pcs {
		in := &p.prog.Inst[pc]
		if in.Op == syntax.InstMatch {
			return true
		}
		if in.Op == syntax.InstEmptyWidth {
			// An end assertion followed, at the end, by what it leads to.
			for _, q := range p.closure([]uint32{in.Out}, false) {
				if p.prog.Inst[q].Op == syntax.InstMatch {
					return true
				}
			}
		}
	}
	return false
}

// validPrefix reports whether b can start a UTF-8 character.
func validPrefix(b []byte) bool {
	switch c := b[0]; {
	case c >= 0xC2 && c <= 0xDF:
		return len(b) < 2
	case c >= 0xE0 && c <= 0xEF, c >= 0xF0 && c <= 0xF4:
		for _, x := range b[1:] {
			if x < 0x80 || x > 0xBF {
				return false
			}
		}
		return true
	}
	return false
}

// mayMatch reports whether some character that starts with the bytes prefix would be
// matched by a thread: the characters with a given UTF-8 prefix are one range of code
// points, so a partial character is allowed only where it can lead somewhere.
func (s reState) mayMatch(p *regexProg, prefix []byte) bool {
	size := 2
	switch c := prefix[0]; {
	case c >= 0xF0:
		size = 4
	case c >= 0xE0:
		size = 3
	}
	lo, hi := make([]byte, size), make([]byte, size)
	copy(lo, prefix)
	copy(hi, prefix)
	for i := len(prefix); i < size; i++ {
		lo[i], hi[i] = 0x80, 0xBF
	}
	rlo, _ := utf8.DecodeRune(lo)
	rhi, _ := utf8.DecodeRune(hi)
	if rlo == utf8.RuneError || rhi == utf8.RuneError {
		// The range's ends are overlong or surrogates: take the whole range of the lead.
		rlo, rhi = 0x80, utf8.MaxRune
	}
	for _, pc := range s.pcs {
		in := &p.prog.Inst[pc]
		switch in.Op {
		case syntax.InstRuneAny:
			return true
		case syntax.InstRuneAnyNotNL:
			return true // the range holds no newline: every character in it is past 0x7F
		case syntax.InstRune1:
			if in.Rune[0] >= rlo && in.Rune[0] <= rhi {
				return true
			}
		case syntax.InstRune:
			if len(in.Rune) == 1 || syntax.Flags(in.Arg)&syntax.FoldCase != 0 {
				// A single rune with case folding, or folded ranges: test the range's ends
				// and let the next byte decide.
				return true
			}
			for i := 0; i+1 < len(in.Rune); i += 2 {
				if in.Rune[i] <= rhi && in.Rune[i+1] >= rlo {
					return true
				}
			}
		}
	}
	return false
}
