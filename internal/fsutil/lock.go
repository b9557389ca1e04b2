package fsutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLocked is returned by Lock when another open file description holds
// the lock until ctx ends.
var ErrLocked = errors.New("locked by another process")

// A Lock is an exclusive flock on a file or directory.
type Lock struct{ f *os.File }

// LockPath takes an exclusive flock on path (a directory or an existing
// file), waiting until it is free or ctx ends (then ErrLocked, wrapped).
// The lock lasts until Unlock or the process ends; a second LockPath on the
// same path, even in the same process, waits for it.
func LockPath(ctx context.Context, path string) (*Lock, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	wait := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return &Lock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, &os.PathError{Op: "flock", Path: path, Err: err}
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w (%w)", path, ErrLocked, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// Unlock releases the lock.
func (l *Lock) Unlock() error { return l.f.Close() }
