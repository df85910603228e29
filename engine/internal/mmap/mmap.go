// Package mmap maps model files read-only. Tensor data then stays in the page
// cache: resident memory grows only as tensors are touched, and the kernel can
// drop the pages again under pressure since the file backs them.
package mmap

// File reads the whole file at path: mapped where the platform supports it
// (Unix), read into memory elsewhere. It returns the bytes and the function
// that releases them. An empty file gives empty data and no error; callers
// judge the size.
func File(path string) (data []byte, release func() error, err error) {
	return mapFile(path)
}
