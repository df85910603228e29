//go:build unix

package model

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// releaseMapped tells the kernel it may drop the whole pages of b when b
// lies inside one of the read-only file mappings in mapped. Those pages are
// clean and file-backed: reading them again just faults them back in.
// Anything else is left alone (on anonymous memory MADV_DONTNEED would zero
// the data).
func releaseMapped(b []byte, mapped [][]byte) {
	if len(b) == 0 || !inside(b, mapped) {
		return
	}
	page := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	end := start + uintptr(len(b))
	lo, hi := (start+page-1)&^(page-1), end&^(page-1)
	if hi <= lo {
		return
	}
	_ = unix.Madvise(b[lo-start:hi-start], unix.MADV_DONTNEED)
}

func inside(b []byte, regions [][]byte) bool {
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	for _, r := range regions {
		rs := uintptr(unsafe.Pointer(unsafe.SliceData(r)))
		if start >= rs && start+uintptr(len(b)) <= rs+uintptr(len(r)) {
			return true
		}
	}
	return false
}
