package safetensors

import (
	"fmt"

	"github.com/moe-operator/moe-operator/engine/internal/mmap"
)

// Open maps the file at path read-only and parses its header. Tensor data
// stays in the page cache: resident memory grows only as tensors are touched.
func Open(path string) (*File, error) {
	data, release, err := mmap.File(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	if len(data) < 8 {
		_ = release()
		return nil, fmt.Errorf("%s: %w: %d bytes", path, ErrTruncated, len(data))
	}
	f, err := Parse(data)
	if err != nil {
		_ = release()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.Path = path
	f.unmap = release
	return f, nil
}
