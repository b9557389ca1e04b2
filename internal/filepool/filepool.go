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
	"sort"
	"strings"

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

// DirPath checks a pool's parameters against the driver's (unknown ones
// are storage.ErrInvalidConfig, naming what driver accepts) and returns
// its dir_path, required, made absolute.
func DirPath(driver string, params map[string]string, accepted []storage.Parameter) (string, error) {
	known := make(map[string]bool)
	var names []string
	for _, prm := range accepted {
		known[prm.Name] = true
		names = append(names, prm.Name)
	}
	var unknown []string
	for k := range params {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return "", fmt.Errorf("%w: unknown parameters %s (%s accepts %s)",
			storage.ErrInvalidConfig, strings.Join(unknown, ", "), driver, strings.Join(names, ", "))
	}
	dir, ok := params["dir_path"]
	if !ok || dir == "" {
		return "", fmt.Errorf("%w: missing required parameter dir_path", storage.ErrInvalidConfig)
	}
	if strings.ContainsRune(dir, 0) {
		return "", fmt.Errorf("%w: dir_path contains NUL", storage.ErrInvalidConfig)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("%w: dir_path %q: %w", storage.ErrInvalidConfig, dir, err)
	}
	return abs, nil
}

// Usage reports the size and use of the filesystem holding dir (statvfs),
// as Qubes' file pools do; with dir missing, Unavailable and no figures,
// as Qubes' usage_details gives {} then.
func Usage(dir string) (storage.PoolUsage, error) {
	size, used, err := fsutil.Usage(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return storage.PoolUsage{Unavailable: true}, nil
	}
	if err != nil {
		return storage.PoolUsage{}, err
	}
	return storage.PoolUsage{DataSize: size, DataUsage: used}, nil
}

// CheckVolumeConfig checks the configuration of a volume of a file pool
// named pool and fills in what it may: the vid must be appvms/VM/NAME or
// vm-templates/VM/NAME, NAME equal to cfg.Name (filled in from the vid
// when empty), cfg.Pool the pool (filled in when empty), cfg valid
// (storage.VolumeConfig.Validate) and a source a vid other than the
// volume's own. Errors wrap storage.ErrInvalidConfig.
func CheckVolumeConfig(cfg *storage.VolumeConfig, pool string) error {
	vid, err := storage.ParseFileVID(cfg.VID)
	if err != nil {
		return err
	}
	if cfg.Name == "" {
		cfg.Name = vid.Volume
	}
	if cfg.Name != vid.Volume {
		return fmt.Errorf("%w: volume name %q does not match vid %q", storage.ErrInvalidConfig, cfg.Name, cfg.VID)
	}
	if cfg.Pool == "" {
		cfg.Pool = pool
	}
	if cfg.Pool != pool {
		return fmt.Errorf("%w: volume belongs to pool %q, not %q", storage.ErrInvalidConfig, cfg.Pool, pool)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Source != "" {
		return CheckSource(cfg.Source, cfg.VID)
	}
	return nil
}

// CheckSource checks the source of a snap_on_start volume vid: a vid of
// the file drivers other than vid. Errors wrap storage.ErrInvalidConfig.
func CheckSource(source, vid string) error {
	if _, err := storage.ParseFileVID(source); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if source == vid {
		return fmt.Errorf("%w: volume is its own source", storage.ErrInvalidConfig)
	}
	return nil
}

// VolumeLock serialises the operations on one volume; its Lock gives up
// when a context ends.
type VolumeLock struct{ sem chan struct{} }

// NewVolumeLock returns an unlocked VolumeLock.
func NewVolumeLock() VolumeLock { return VolumeLock{sem: make(chan struct{}, 1)} }

// Lock takes the lock, or returns ctx's error when ctx ends first.
func (l VolumeLock) Lock(ctx context.Context) error {
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Unlock releases the lock.
func (l VolumeLock) Unlock() { <-l.sem }

// MakeTree creates the VM directories of the pool at dir (appvms/ and
// vm-templates/) with mkdir, which logs what it made, refusing one that
// is a symlink or not a directory (storage.ErrUnsafePath), and records
// owner in dir: the end of both file drivers' Setup.
func MakeTree(dir string, owner storage.PoolOwner, mkdir func(path string) (created bool, err error)) error {
	for _, prefix := range storage.FileVIDDirs() {
		path := filepath.Join(dir, prefix)
		if err := CheckDirs(path); err != nil {
			return err
		}
		if _, err := mkdir(path); err != nil {
			return err
		}
	}
	return ownerfile.Record(dir, owner)
}
