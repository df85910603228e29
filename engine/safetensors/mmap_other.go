//go:build !unix

package safetensors

import (
	"fmt"
	"os"
)

// Open reads the file at path and parses it. (Memory mapping is only
// implemented for Unix systems.)
func Open(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.Path = path
	return f, nil
}
