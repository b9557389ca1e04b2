package storage

import (
	"errors"
	"strings"
)

// Sentinel errors. Drivers wrap them (usually inside an [*Error]) so that
// callers can test them with [errors.Is].
var (
	// ErrNotFound: the pool, volume, image, revision or driver does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the pool or volume already exists.
	ErrExists = errors.New("already exists")
	// ErrDirty: the volume is not cleanly stopped (revert, export of a
	// running volume whose clean image is in use).
	ErrDirty = errors.New("volume is not cleanly stopped")
	// ErrUnsupported: the driver lacks this capability (for example more
	// than one revision on the file driver).
	ErrUnsupported = errors.New("not supported by this driver")
	// ErrInvalidConfig: a malformed name, vid, size, revision id or
	// parameter. Nothing was changed.
	ErrInvalidConfig = errors.New("invalid configuration")
	// ErrReflinkUnsupported: the pool's filesystem cannot make reflinks and
	// setup_check was not turned off.
	ErrReflinkUnsupported = errors.New("filesystem does not support reflinks; pass setup_check=no to accept slow copies and wasted disk space")
	// ErrShrink: a resize would shrink the volume and the caller did not
	// force it.
	ErrShrink = errors.New("shrinking a volume needs force; data beyond the new size is lost")
	// ErrReadOnly: the operation needs a read-write volume.
	ErrReadOnly = errors.New("volume is read-only")
	// ErrRunning: the operation needs a stopped volume (or, for a pool, no
	// running volume).
	ErrRunning = errors.New("volume is running")
	// ErrInUse: the pool is still used by volumes, or locked by another
	// process.
	ErrInUse = errors.New("in use")
	// ErrClosed: the pool or manager was closed.
	ErrClosed = errors.New("closed")
	// ErrUnsafePath: a path inside a pool is a symlink, or not the kind of
	// file it should be (a directory where an image belongs). Drivers never
	// follow such a path, so that nothing outside the pool is read,
	// written, truncated or removed; the operation is refused and nothing
	// changes.
	ErrUnsafePath = errors.New("unsafe path in pool (a symlink or not the expected file type); vmpool never follows it")
)

// Error describes a failed operation on a pool or volume. Err is the cause;
// it usually wraps one of the sentinel errors.
type Error struct {
	Op   string // the operation, e.g. "start", "revert", "setup"
	Pool string // the pool's name
	VID  string // the volume's vid; empty for pool operations
	Err  error
}

// Error formats the error as "pool P: op vid: cause".
func (e *Error) Error() string {
	var b strings.Builder
	if e.Pool != "" {
		b.WriteString("pool ")
		b.WriteString(e.Pool)
		b.WriteString(": ")
	}
	b.WriteString(e.Op)
	if e.VID != "" {
		b.WriteString(" ")
		b.WriteString(e.VID)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }
