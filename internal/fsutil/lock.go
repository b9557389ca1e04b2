package fsutil

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLocked is returned by LockPath when another open file description
// holds the lock: held by this process, at once; held by another, when ctx
// ends.
var ErrLocked = errors.New("locked")

// A Lock is an exclusive flock on a file or directory.
type Lock struct{ f *os.File }

// LockPath takes an exclusive flock on path (a directory or an existing
// file), waiting until it is free or ctx ends; then the error wraps
// ErrLocked and names the holder (its pid and command, from /proc/locks).
// A lock this process holds already is ErrLocked at once: waiting for it
// would wait for ever. The lock lasts until Unlock or the process ends.
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
		pid, holder := lockHolder(f)
		if pid == os.Getpid() {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w by this process", path, ErrLocked)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("lock %s: %w by %s (%w)", path, ErrLocked, holder, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// Unlock releases the lock.
func (l *Lock) Unlock() error { return l.f.Close() }

// lockHolder returns the pid of the process holding the flock on f's
// inode and a description of it ("pid 123 (vmpoolctl)"), read from
// /proc/locks; 0 and "another process" when it cannot tell.
func lockHolder(f *os.File) (int, string) {
	const unknown = "another process"
	st, err := f.Stat()
	if err != nil {
		return 0, unknown
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, unknown
	}
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(sys.Dev), unix.Minor(sys.Dev), sys.Ino)
	locks, err := os.Open("/proc/locks")
	if err != nil {
		return 0, unknown
	}
	defer locks.Close()
	sc := bufio.NewScanner(locks)
	for sc.Scan() {
		// "1: FLOCK  ADVISORY  WRITE 10439 fe:00:246947 0 EOF"; waiters
		// have "->" after the number and are skipped.
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != want {
			continue
		}
		pid, err := strconv.Atoi(fields[4])
		if err != nil {
			continue
		}
		desc := "pid " + fields[4]
		if comm, err := os.ReadFile("/proc/" + fields[4] + "/comm"); err == nil {
			desc += " (" + strings.TrimSpace(string(comm)) + ")"
		}
		return pid, desc
	}
	return 0, unknown
}
