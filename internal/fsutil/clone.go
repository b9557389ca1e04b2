package fsutil

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Clone makes dst share src's extents (the FICLONE ioctl behind
// cp --reflink). dst's old content is replaced; its size becomes src's.
func Clone(dst, src *os.File) error {
	if err := unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())); err != nil {
		return &os.PathError{Op: "ficlone", Path: src.Name() + " -> " + dst.Name(), Err: err}
	}
	return nil
}

// CloneRefused reports whether err from Clone means the clone cannot be
// made here and a plain copy should be made instead: EOPNOTSUPP (no reflink
// on this filesystem), EXDEV (another filesystem), EINVAL and EBADF, the
// errnos Qubes falls back on. Any other errno is a real failure.
func CloneRefused(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) ||
		errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBADF)
}

// NoReflink reports whether err from Clone means the filesystem cannot make
// reflinks at all (EOPNOTSUPP), so callers may stop trying. The other
// fallback errnos depend on the pair of files.
func NoReflink(err error) bool { return errors.Is(err, unix.EOPNOTSUPP) }

// ReflinkSupported reports whether files in dir can be reflinked: it clones
// a three-byte anonymous file (O_TMPFILE) into another, as Qubes'
// is_supported does. Errors other than the fallback errnos are returned.
func ReflinkSupported(dir string) (bool, error) {
	src, err := os.OpenFile(dir, unix.O_TMPFILE|os.O_RDWR, 0o600)
	if err != nil {
		return false, fmt.Errorf("reflink check in %s: %w", dir, err)
	}
	defer src.Close()
	dst, err := os.OpenFile(dir, unix.O_TMPFILE|os.O_RDWR, 0o600)
	if err != nil {
		return false, fmt.Errorf("reflink check in %s: %w", dir, err)
	}
	defer dst.Close()
	if _, err := src.Write([]byte("foo")); err != nil { // an empty file proves nothing
		return false, fmt.Errorf("reflink check in %s: %w", dir, err)
	}
	switch err := Clone(dst, src); {
	case err == nil:
		return true, nil
	case CloneRefused(err):
		return false, nil
	default:
		return false, fmt.Errorf("reflink check in %s: %w", dir, err)
	}
}
