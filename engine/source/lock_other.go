//go:build !unix

package source

import "context"

// lockFile does not lock on systems without flock: the atomic rename of
// verified files still keeps the cache whole, at the cost of duplicate
// downloads when pulls overlap.
func lockFile(ctx context.Context, path string, waiting func()) (func(), error) {
	return func() {}, ctx.Err()
}

func freeSpace(string) (int64, bool) { return 0, false }
