package scheduler

import "strings"

// stopMatcher finds stop strings in text that arrives piece by piece. It
// holds back the longest tail of the text that could still grow into a stop
// string, so a stop string split over several tokens is never partly sent
// to the client before it is recognised.
type stopMatcher struct {
	stops []string
	held  string
}

// push appends text. It returns the text that is now safe to release and
// whether a stop string was found; after a match, out is everything before
// the earliest stop string and the matcher holds nothing.
func (m *stopMatcher) push(text string) (out string, stopped bool) {
	if len(m.stops) == 0 {
		return text, false
	}
	buf := text
	if m.held != "" {
		buf = m.held + text
	}
	at := -1
	for _, s := range m.stops {
		if i := strings.Index(buf, s); i >= 0 && (at < 0 || i < at) {
			at = i
		}
	}
	if at >= 0 {
		m.held = ""
		return buf[:at], true
	}
	keep := 0
	for _, s := range m.stops {
		for k := min(len(s)-1, len(buf)); k > keep; k-- {
			if strings.HasSuffix(buf, s[:k]) {
				keep = k
				break
			}
		}
	}
	m.held = buf[len(buf)-keep:]
	return buf[:len(buf)-keep], false
}

// flush releases the held-back text (the sequence ended without a match).
func (m *stopMatcher) flush() string {
	h := m.held
	m.held = ""
	return h
}
