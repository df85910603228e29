//go:build novulkan

package vk

// This binary was built with -tags novulkan: a fully static executable for
// images without a C library, and so without a way to open libvulkan.so.1.
// Load fails with ErrNoLoader and says so; nothing below it is ever called.

// Built says whether this binary has the Vulkan backend.
const Built = false

func dlopen(string) (uintptr, error) { return 0, errNotBuilt }

func bindFunc(any, uintptr, string) { panic(errNotBuilt) }

func newCallback(any) uintptr { panic(errNotBuilt) }

func callN(uintptr, ...uintptr) uintptr { panic(errNotBuilt) }
