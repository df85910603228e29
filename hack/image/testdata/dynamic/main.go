// Command dynamic opens a shared library through purego, which links it
// against the C library even with CGO_ENABLED=0: the image builder must
// refuse it (TestBinariesAreStatic).
package main

import (
	"fmt"

	"github.com/ebitengine/purego"
)

func main() {
	_, err := purego.Dlopen("libc.so.6", purego.RTLD_NOW)
	fmt.Println(err)
}
