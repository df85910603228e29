//go:build unix

package source

import (
	"context"
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// lockFile takes an exclusive advisory lock (flock) on path, creating it,
// and returns the function that releases it. While another process (or
// another pull in this one) holds the lock it polls, calling waiting once,
// until ctx ends. Filesystems without flock support (some network
// filesystems) proceed unlocked: the atomic rename of verified files still
// keeps the cache whole, at the cost of duplicate downloads.
func lockFile(ctx context.Context, path string, waiting func()) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	notified := false
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		case errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.ENOLCK) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS):
			return func() { f.Close() }, nil
		default:
			f.Close()
			return nil, err
		}
		if !notified && waiting != nil {
			waiting()
			notified = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freeSpace returns the bytes available to unprivileged users on dir's
// filesystem.
func freeSpace(dir string) (int64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true
}
