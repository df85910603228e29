package safetensors

import "fmt"

// File is a parsed safetensors file.
type File struct {
	Header
	// Path is the file's path when Open made the File.
	Path string

	data  []byte // the whole file
	unmap func() error
}

// Parse parses a safetensors file held in b. The File refers to b, which
// must not be modified while the File is in use.
func Parse(b []byte) (*File, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	return &File{Header: *h, data: b}, nil
}

// TensorData returns the named tensor's bytes: a sub-slice of the file.
func (f *File) TensorData(name string) ([]byte, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%w: tensor %q", ErrNotFound, name)
	}
	return f.data[f.DataOffset+t.Begin : f.DataOffset+t.End], nil
}

// Bytes is the whole file: the memory map Open made, or the slice Parse
// was given.
func (f *File) Bytes() []byte { return f.data }

// Close releases the file's memory map, if Open made one. Tensor data
// slices must not be used afterwards.
func (f *File) Close() error {
	if f.unmap == nil {
		return nil
	}
	err := f.unmap()
	f.unmap, f.data = nil, nil
	return err
}
