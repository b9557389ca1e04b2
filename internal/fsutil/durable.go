package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// TempSep separates a file's name from the random suffix of its temporary
// files: "private.img~123456". Qubes' file-reflink driver uses the same
// convention and removes such files.
const TempSep = "~"

// IsTemp reports whether name (a base name or path) is a temporary file.
func IsTemp(name string) bool { return strings.Contains(filepath.Base(name), TempSep) }

// CreateTemp creates a new file named dst~<random> beside dst, mode 0600,
// for a content that will be renamed over dst.
func CreateTemp(dst string) (*os.File, error) {
	return os.CreateTemp(filepath.Dir(dst), filepath.Base(dst)+TempSep+"*")
}

// SyncDir fsyncs a directory, making the names created, renamed or
// removed in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return &os.PathError{Op: "fsync", Path: dir, Err: err}
	}
	return nil
}

// SyncFile fsyncs the file at path.
func SyncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return &os.PathError{Op: "fsync", Path: path, Err: err}
	}
	return nil
}

// Rename renames oldpath to newpath and fsyncs the directories involved.
func Rename(oldpath, newpath string) error {
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	return syncDirs(filepath.Dir(oldpath), filepath.Dir(newpath))
}

// Link makes newpath a hard link to oldpath and fsyncs its directory.
func Link(oldpath, newpath string) error {
	if err := os.Link(oldpath, newpath); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(newpath))
}

// Remove removes path and fsyncs its directory. A missing file is not an
// error; removed tells whether there was one.
func Remove(path string) (removed bool, err error) {
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	return true, SyncDir(filepath.Dir(path))
}

// Mkdir creates the directory path (not its parents) and fsyncs the
// parent. An existing directory is not an error; created tells whether it
// was made.
func Mkdir(path string) (created bool, err error) {
	if err := os.Mkdir(path, 0o777); err != nil { // the umask decides, as for Qubes
		if errors.Is(err, fs.ErrExist) {
			if st, serr := os.Stat(path); serr == nil && st.IsDir() {
				return false, nil
			}
		}
		return false, err
	}
	return true, SyncDir(filepath.Dir(path))
}

// RemoveEmptyDir removes the directory path if it is empty and fsyncs its
// parent. A missing or non-empty directory is not an error.
func RemoveEmptyDir(path string) (removed bool, err error) {
	if err := os.Remove(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
			return false, nil
		}
		return false, err
	}
	return true, SyncDir(filepath.Dir(path))
}

// Truncate sets the size of the existing file at path and fsyncs it.
func Truncate(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return &os.PathError{Op: "fsync", Path: path, Err: err}
	}
	return f.Close()
}

func syncDirs(a, b string) error {
	if err := SyncDir(a); err != nil {
		return err
	}
	if b != a {
		return SyncDir(b)
	}
	return nil
}
