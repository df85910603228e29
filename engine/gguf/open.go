package gguf

import (
	"fmt"

	"github.com/moe-operator/moe-operator/engine/internal/mmap"
)

// Open maps the file at path read-only and parses it. Tensor data stays in
// the page cache: resident memory grows only as the tensors are touched.
func Open(path string) (*File, error) {
	data, release, err := mmap.File(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if len(data) == 0 {
		_ = release()
		return nil, fmt.Errorf("%w: %s is empty", ErrTruncated, path)
	}
	f, err := Parse(data)
	if err != nil {
		_ = release()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.unmap = release
	return f, nil
}
