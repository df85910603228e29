//go:build !unix

package model

func releaseMapped([]byte, [][]byte) {}
