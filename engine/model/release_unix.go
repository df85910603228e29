//go:build unix

package model

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/moe-operator/moe-operator/engine/tensor"
)

// releaseIfPacked tells the kernel it may drop the pages of a packed
// matrix's original (file-mapped) bytes. The pages are clean and
// file-backed, so reading them again later just faults them back in.
func releaseIfPacked(m *tensor.Matrix) {
	if !m.Packed() || len(m.Data) == 0 {
		return
	}
	page := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(unsafe.SliceData(m.Data)))
	end := start + uintptr(len(m.Data))
	lo, hi := (start+page-1)&^(page-1), end&^(page-1)
	if hi <= lo {
		return
	}
	_ = unix.Madvise(m.Data[lo-start:hi-start], unix.MADV_DONTNEED)
}
