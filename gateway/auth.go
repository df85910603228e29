package gateway

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// Keys are the API keys clients may send ("Authorization: Bearer KEY"), read from a file
// of one key per line (blank lines and lines starting with # are skipped). The file is read
// again when it changes, so keys rotate without a restart (a Secret mounted as a volume is
// updated in place). Keys are compared in constant time and never logged.
type Keys struct {
	path string

	mu      sync.Mutex
	digests [][sha256.Size]byte
	modTime time.Time
	size    int64
	checked time.Time
}

// keysRecheck is how often the key file's modification time is looked at.
const keysRecheck = 2 * time.Second

// LoadKeys reads the key file; it must hold at least one key.
func LoadKeys(path string) (*Keys, error) {
	k := &Keys{path: path}
	if err := k.reload(); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *Keys) reload() error {
	st, err := os.Stat(k.path)
	if err != nil {
		return fmt.Errorf("reading the API key file: %w", err)
	}
	if st.ModTime().Equal(k.modTime) && st.Size() == k.size && k.digests != nil {
		return nil
	}
	data, err := os.ReadFile(k.path)
	if err != nil {
		return fmt.Errorf("reading the API key file: %w", err)
	}
	var digests [][sha256.Size]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		digests = append(digests, sha256.Sum256([]byte(line)))
	}
	if len(digests) == 0 {
		return fmt.Errorf("the API key file %s holds no key (one per line)", k.path)
	}
	k.digests, k.modTime, k.size = digests, st.ModTime(), st.Size()
	return nil
}

// Check reports whether key is one of the keys, and which (an index for per-key limits).
// A key file that became unreadable keeps the keys read last.
func (k *Keys) Check(key string) (int, bool) {
	k.mu.Lock()
	if time.Since(k.checked) >= keysRecheck {
		k.checked = time.Now()
		_ = k.reload()
	}
	digests := k.digests
	k.mu.Unlock()
	d := sha256.Sum256([]byte(key))
	found := -1
	for i := range digests {
		// Every key is compared, so the time taken says nothing of which matched.
		if subtle.ConstantTimeCompare(d[:], digests[i][:]) == 1 {
			found = i
		}
	}
	return found, found >= 0
}

// bearer is the token of an "Authorization: Bearer TOKEN" header, or "".
func bearer(header string) string {
	const prefix = "Bearer "
	if len(header) > len(prefix) && strings.EqualFold(header[:len(prefix)], prefix) {
		return strings.TrimSpace(header[len(prefix):])
	}
	return ""
}

// limiter bounds concurrent requests per key (a string id); 0 means unbounded.
type limiter struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

func newLimiter(max int) *limiter { return &limiter{max: max, n: map[string]int{}} }

// acquire takes a slot for id, or reports that id is at its limit.
func (l *limiter) acquire(id string) bool {
	if l.max <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[id] >= l.max {
		return false
	}
	l.n[id]++
	return true
}

func (l *limiter) release(id string) {
	if l.max <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[id]--; l.n[id] <= 0 {
		delete(l.n, id)
	}
}
