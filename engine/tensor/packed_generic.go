//go:build !amd64 || purego

package tensor

func packedISAs() []bool     { return nil }
func usePackedISA(vnni bool) {}
