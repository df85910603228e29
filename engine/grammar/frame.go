package grammar

// A frame is one value being matched, and the frames below it are the values around it.
// Frames are never changed once made: a step makes new ones, so every earlier state
// stays valid.
type frame struct {
	n     *node
	phase phase
	// i: object: the next declared property that may come (or, in a key or value, the
	// property); array: items so far; string: characters so far; number: bytes so far;
	// literal: bytes matched; regex: unused.
	i int
	// j: string: UTF-8 continuation bytes still due; number: the sub-state.
	j int
	// lo and hi bound a string's next continuation byte (UTF-8 excludes overlong forms
	// and surrogates through the first one).
	lo, hi byte
	// cand: literal: the candidates still possible; key: the property of each.
	cand   []int32
	re     reState
	parent *frame
}

type phase uint8

const (
	phStart phase = iota // before the value's first byte
	phObjOpen
	phObjKey      // a key is being matched (the child)
	phObjColon    // free objects: after the key, before the colon
	phObjValStart // before the value's first byte
	phObjValue    // the value is being matched (the child)
	phObjNext     // after a value: a comma or the end
	phObjComma    // after a comma: a key
	phArrOpen
	phArrItemStart
	phArrValue
	phArrNext
	phStrIn
	phStrEsc
	phNum
	phLit
	phRegex
	phSeq        // part i is being matched (the child); the frame is the parent
	phSeqNext    // before part i's first byte
	phTagged     // i: 0 the head, 1 the body, 2 the close (the child); j: the head chosen
	phTaggedNext // before the first byte of part i (1 the body, 2 the close)
)

// Number sub-states.
const (
	nSign = iota
	nZero
	nInt
	nDot
	nFrac
	nExp
	nExpSign
	nExpDigits  // one exponent digit
	nExpDigits2 // two: the most, so a number stays within float64's range
)

func (f *frame) with(p phase, i int) *frame {
	g := *f
	g.phase, g.i = p, i
	return &g
}

// end is what follows f when f's value has just ended with the byte consumed: the
// frame around it, moved past it, or nil when f was the root.
func (f *frame) end() *frame {
	if f.parent == nil {
		return nil
	}
	return f.parent.childDone(f)
}

// begin starts a value of n under parent with its first byte b.
func begin(n *node, parent *frame, b byte) (*frame, bool) {
	n = n.resolve()
	switch n.kind {
	case kObject:
		if b == '{' {
			return &frame{n: n, phase: phObjOpen, parent: parent}, true
		}
	case kArray:
		if b == '[' {
			return &frame{n: n, phase: phArrOpen, parent: parent}, true
		}
	case kString:
		if b == '"' {
			return &frame{n: n, phase: phStrIn, parent: parent}, true
		}
	case kNumber:
		f := &frame{n: n, phase: phNum, i: 1, parent: parent}
		switch {
		case b == '-' && !n.unsigned:
			f.j = nSign
		case b == '0':
			f.j = nZero
		case b >= '1' && b <= '9':
			f.j = nInt
		default:
			return nil, false
		}
		return f, true
	case kLiteral:
		f := &frame{n: n, phase: phLit, parent: parent}
		f.cand = make([]int32, len(n.lits))
		for k := range n.lits {
			f.cand[k] = int32(k)
		}
		return f.stepLiteral(b)
	case kUnion:
		for _, a := range n.alts {
			if f, ok := begin(a, parent, b); ok {
				return f, true
			}
		}
	case kAny:
		switch {
		case b == '{' && n.depth > 0:
			return begin(freeObject(n.depth), parent, b)
		case b == '[' && n.depth > 0:
			return begin(freeArray(n.depth), parent, b)
		case b == '"':
			return begin(anyString, parent, b)
		case b == '-' || (b >= '0' && b <= '9'):
			return begin(anyNumber, parent, b)
		default:
			return begin(scalarLiterals, parent, b)
		}
	case kRegex:
		f := &frame{n: n, phase: phRegex, re: n.re.start(), parent: parent}
		return f.step(b)
	case kSeq:
		return begin(n.parts[0], &frame{n: n, phase: phSeq, parent: parent}, b)
	case kTagged:
		return begin(n.heads, &frame{n: n, phase: phTagged, parent: parent}, b)
	}
	return nil, false
}

// step consumes b, returning the new top frame (nil: the root ended with b).
func (f *frame) step(b byte) (*frame, bool) {
	n := f.n
	switch f.phase {
	case phStart:
		return begin(n, f.parent, b)

	case phObjOpen, phObjComma:
		if b == '}' && f.phase == phObjOpen && f.mayClose() {
			return f.end(), true
		}
		if b != '"' {
			return nil, false
		}
		if n.free {
			if n.depth <= 0 {
				return nil, false
			}
			return begin(anyString, f.with(phObjKey, f.i), b)
		}
		keys := n.keysFrom(f.i)
		if keys == nil {
			return nil, false
		}
		return begin(keys, f.with(phObjKey, f.i), b)
	case phObjColon:
		if b == ':' {
			return f.with(phObjValStart, f.i), true
		}
	case phObjValStart:
		v := n.valueOf(f.i)
		return begin(v, f.with(phObjValue, f.i), b)
	case phObjNext:
		switch {
		case b == ',' && f.mayContinue():
			return f.with(phObjComma, f.i), true
		case b == '}' && f.mayClose():
			return f.end(), true
		}

	case phArrOpen:
		if b == ']' && n.minItems == 0 {
			return f.end(), true
		}
		if n.maxItems == 0 {
			return nil, false
		}
		return begin(n.items, f.with(phArrValue, 0), b)
	case phArrItemStart:
		return begin(n.items, f.with(phArrValue, f.i), b)
	case phArrNext:
		switch {
		case b == ',' && (n.maxItems < 0 || f.i < n.maxItems):
			return f.with(phArrItemStart, f.i), true
		case b == ']' && f.i >= n.minItems:
			return f.end(), true
		}

	case phSeqNext:
		return begin(n.parts[f.i], f.with(phSeq, f.i), b)
	case phTaggedNext:
		part := n.parts[0]
		if f.i == 1 {
			part = n.bodies[f.j]
		}
		return begin(part, f.with(phTagged, f.i), b)
	case phStrIn:
		return f.stepString(b)
	case phStrEsc:
		switch b {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			return f.with(phStrIn, f.i), true
		}
	case phNum:
		return f.stepNumber(b)
	case phLit:
		return f.stepLiteral(b)
	case phRegex:
		next, ok := f.re.step(n.re, b)
		if !ok {
			return nil, false
		}
		g := *f
		g.re = next
		return &g, true
	}
	return nil, false
}

func (f *frame) stepString(b byte) (*frame, bool) {
	n := f.n
	if f.j > 0 { // a continuation byte of a multi-byte character
		if b < f.lo || b > f.hi {
			return nil, false
		}
		g := *f
		g.j--
		g.lo, g.hi = 0x80, 0xBF
		return &g, true
	}
	room := n.maxLen < 0 || f.i < n.maxLen
	switch {
	case b == '"':
		if f.i < n.minLen {
			return nil, false
		}
		return f.end(), true
	case b == '\\':
		if !room {
			return nil, false
		}
		return f.with(phStrEsc, f.i+1), true
	case b < 0x20 || !room:
		return nil, false
	case b < 0x80:
		return f.with(phStrIn, f.i+1), true
	}
	more, lo, hi := 0, byte(0x80), byte(0xBF)
	switch {
	case b >= 0xC2 && b <= 0xDF:
		more = 1
	case b == 0xE0:
		more, lo = 2, 0xA0
	case b == 0xED:
		more, hi = 2, 0x9F
	case b >= 0xE1 && b <= 0xEF:
		more = 2
	case b == 0xF0:
		more, lo = 3, 0x90
	case b == 0xF4:
		more, hi = 3, 0x8F
	case b >= 0xF1 && b <= 0xF3:
		more = 3
	default:
		return nil, false
	}
	g := f.with(phStrIn, f.i+1)
	g.j, g.lo, g.hi = more, lo, hi
	return g, true
}

func (f *frame) stepNumber(b byte) (*frame, bool) {
	if f.i >= MaxNumberBytes || (f.n.integer && f.i >= MaxIntegerBytes) {
		return nil, false
	}
	digit := b >= '0' && b <= '9'
	integer := f.n.integer
	next := -1
	switch f.j {
	case nSign:
		switch {
		case b == '0':
			next = nZero
		case digit:
			next = nInt
		}
	case nZero, nInt:
		switch {
		case digit && f.j == nInt:
			next = nInt
		case b == '.' && !integer:
			next = nDot
		case (b == 'e' || b == 'E') && !integer:
			next = nExp
		}
	case nDot, nFrac:
		switch {
		case digit:
			next = nFrac
		case (b == 'e' || b == 'E') && f.j == nFrac:
			next = nExp
		}
	case nExp:
		switch {
		case b == '+' || b == '-':
			next = nExpSign
		case digit:
			next = nExpDigits
		}
	case nExpSign:
		if digit {
			next = nExpDigits
		}
	case nExpDigits:
		if digit {
			next = nExpDigits2
		}
	}
	if next < 0 {
		return nil, false
	}
	g := f.with(phNum, f.i+1)
	g.j = next
	return g, true
}

func (f *frame) stepLiteral(b byte) (*frame, bool) {
	lits := f.n.lits
	var cand []int32
	whole := true // every candidate left ends with b
	for _, k := range f.cand {
		l := lits[k]
		if f.i < len(l) && l[f.i] == b {
			cand = append(cand, k)
			if len(l) > f.i+1 {
				whole = false
			}
		}
	}
	if len(cand) == 0 {
		return nil, false
	}
	g := f.with(phLit, f.i+1)
	g.cand = cand
	if whole {
		return g.end(), true
	}
	return g, true
}

// canEnd reports whether f's value may end before the next byte (a number, a literal
// one of whose candidates is whole, an accepting regex).
func (f *frame) canEnd() bool {
	switch f.phase {
	case phNum:
		return f.j == nZero || f.j == nInt || f.j == nFrac || f.j == nExpDigits || f.j == nExpDigits2
	case phLit:
		for _, k := range f.cand {
			if len(f.n.lits[k]) == f.i {
				return true
			}
		}
	case phRegex:
		return f.re.accepting(f.n.re)
	}
	return false
}

// childDone is f, the frame around a value that has just ended, moved past it.
func (f *frame) childDone(child *frame) *frame {
	n := f.n
	switch f.phase {
	case phObjKey:
		if n.free {
			return f.with(phObjColon, f.i)
		}
		// The key literal ended: which property it named.
		for _, k := range child.cand {
			if len(child.n.lits[k]) == child.i {
				return f.with(phObjValStart, f.i+int(k))
			}
		}
	case phObjValue:
		return f.with(phObjNext, f.i+1)
	case phArrValue:
		return f.with(phArrNext, f.i+1)
	case phSeq:
		if f.i+1 == len(n.parts) {
			return f.end()
		}
		return f.with(phSeqNext, f.i+1)
	case phTagged:
		switch f.i {
		case 0:
			for _, k := range child.cand {
				if len(child.n.lits[k]) == child.i {
					g := f.with(phTaggedNext, 1)
					g.j = int(k)
					return g
				}
			}
		case 1:
			return f.with(phTaggedNext, 2)
		default:
			return f.end()
		}
	}
	panic("grammar: a child ended under a frame that has none")
}

// mayClose reports whether an object may end before declared property f.i: no required
// one is left (a free object: it has its least number of properties).
func (f *frame) mayClose() bool {
	n := f.n
	if n.free {
		return true
	}
	for _, p := range n.props[f.i:] {
		if p.required {
			return false
		}
	}
	return true
}

// mayContinue reports whether another property may follow.
func (f *frame) mayContinue() bool {
	return f.n.free || f.i < len(f.n.props)
}
