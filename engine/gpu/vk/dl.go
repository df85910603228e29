//go:build !novulkan

package vk

import "github.com/ebitengine/purego"

// The dynamic-library calls of the package, through purego. They make the
// binary dynamically linked against the C library (purego imports dlopen
// from it) even with CGO_ENABLED=0; a binary for an image without a C
// library is built with -tags novulkan instead (dl_novulkan.go).

// Built says whether this binary has the Vulkan backend.
const Built = true

func dlopen(name string) (uintptr, error) {
	return purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
}

// bindFunc points the Go function variable fptr at sym in lib; it panics
// when lib lacks sym.
func bindFunc(fptr any, lib uintptr, sym string) { purego.RegisterLibFunc(fptr, lib, sym) }

func newCallback(fn any) uintptr { return purego.NewCallback(fn) }

func callN(fn uintptr, args ...uintptr) uintptr {
	r, _, _ := purego.SyscallN(fn, args...)
	return r
}
