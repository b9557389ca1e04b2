// Package filepool holds what the two file drivers (file and file-reflink)
// share about a pool that is a directory tree: the pool directory's lock
// and owner record, the check that its directory is there (an unmounted
// mount point is not), the rule that nothing inside a pool is a symlink,
// and Qubes' parsing of the pool parameters both drivers take.
package filepool

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/ownerfile"
	"github.com/vmpool/vmpool/storage"
)

// Lock takes the pool directory's flock, waiting for another process until
// ctx ends; a lock held by this process or not had in time wraps
// storage.ErrInUse and names the holder.
func Lock(ctx context.Context, dir string) (*fsutil.Lock, error) {
	l, err := fsutil.LockPath(ctx, dir)
	if errors.Is(err, fsutil.ErrLocked) {
		return nil, fmt.Errorf("%w: %w", storage.ErrInUse, err)
	}
	return l, err
}

// CheckOwner refuses (storage.ErrInUse) a directory recorded for another
// owner than owner, unless adopt is set. A directory that records no owner
// (a pool set up before owners were recorded, or by Qubes) is claimed for
// owner now, so that a second keeper cannot take it over unasked; a
// failure to write the record (a read-only filesystem) is logged. The zero
// owner checks and records nothing.
func CheckOwner(dir string, owner storage.PoolOwner, adopt bool, log zerolog.Logger) error {
	if adopt || owner.ID == "" {
		return nil
	}
	rec, err := ownerfile.Read(dir)
	if err != nil {
		return err
	}
	if rec == nil {
		if err := ownerfile.Record(dir, owner); err != nil {
			log.Warn().Err(err).Str("dir", dir).Msg("record the pool's owner")
		}
		return nil
	}
	return ownerfile.Check(dir, owner)
}

// CheckDir returns an error wrapping storage.ErrNotFound when the pool's
// directory is missing or holds neither appvms/ nor vm-templates/ (an
// unmounted mount point: the directory is there, empty), and
// storage.ErrUnsafePath when it is not a directory.
func CheckDir(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("the pool's directory %s is missing (not mounted?): %w", dir, storage.ErrNotFound)
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("the pool's directory %s is a %s: %w", dir, FileKind(st.Mode()), storage.ErrUnsafePath)
	}
	for _, prefix := range storage.FileVIDDirs() {
		if _, err := os.Lstat(filepath.Join(dir, prefix)); err == nil {
			return nil
		}
	}
	return fmt.Errorf("the pool's directory %s has neither appvms/ nor vm-templates/ (not mounted?): %w", dir, storage.ErrNotFound)
}

// CheckDirs returns storage.ErrUnsafePath for a path that exists and is
// not a directory (a symlink to one included).
func CheckDirs(paths ...string) error { return CheckKind(fs.FileMode.IsDir, "a directory", paths) }

// CheckFiles returns storage.ErrUnsafePath for a path that exists and is
// not a regular file.
func CheckFiles(paths ...string) error {
	return CheckKind(fs.FileMode.IsRegular, "a regular file", paths)
}

// CheckKind returns storage.ErrUnsafePath for the first of paths that
// exists (as itself: symlinks are not followed) and whose mode is not ok.
func CheckKind(ok func(fs.FileMode) bool, want string, paths []string) error {
	for _, path := range paths {
		st, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if !ok(st.Mode()) {
			return fmt.Errorf("%s is a %s, not %s: %w", path, FileKind(st.Mode()), want, storage.ErrUnsafePath)
		}
	}
	return nil
}

// FileKind names the type of a file mode for an error message.
func FileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsDir():
		return "directory"
	case m&fs.ModeDevice != 0:
		return "device"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m.IsRegular():
		return "regular file"
	}
	return "special file"
}

// ParseBool parses as Qubes' storage parse_bool (pool parameters read
// from qubes.xml): True/1/on and False/0/off/empty, case-sensitive.
func ParseBool(s string) (bool, error) {
	switch s {
	case "True", "1", "on":
		return true, nil
	case "False", "0", "off", "":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (True/1/on or False/0/off)", s)
}

// PyBool formats b as Python does: "True", "False".
func PyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}
