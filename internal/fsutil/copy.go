package fsutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// CopyOptions modify CopyFile.
type CopyOptions struct {
	// Size, when not negative, truncates or extends the copy to Size bytes
	// (an extension is a hole). Size 0 makes an empty file without reading
	// src's data.
	Size int64
	// KeepMtime gives the copy src's modification time (and the same access
	// time), as a file-reflink precache needs.
	KeepMtime bool
	// NoClone skips FICLONE and makes a sparse copy.
	NoClone bool
	// Progress, if set, receives the sparse copy's progress: done of total
	// bytes, total -1 while unknown (a FIFO's size is known at its end).
	Progress func(done, total int64)
	// Edit, if set, is called with the copy under its temporary name once
	// it holds src's data and its size, before it is fsynced and renamed
	// over dst; an error fails the copy (dst stays as it was).
	Edit func(tmp *os.File) error
}

// CopyResult says how CopyFile made its copy.
type CopyResult struct {
	// Reflinked is true when the copy shares src's extents.
	Reflinked bool
	// CloneErr is why FICLONE was refused (nil if it was not tried or
	// succeeded).
	CloneErr error
	// Bytes is the data the sparse copy read: the data regions of a regular
	// file, all of a block device or FIFO (0 for a reflink). All-zero
	// blocks among them were not written.
	Bytes int64
	// Temp is the temporary name the copy was written under.
	Temp string
}

// ErrFileType is returned, wrapped, by CopyFile for a source it cannot
// copy: a directory, a character device, a socket.
var ErrFileType = errors.New("not a regular file, block device or FIFO")

// CopyFile makes dst a new inode with src's data: it writes a temporary
// file beside dst, reflinks src into it (or, when FICLONE is refused, makes
// a sparse copy), resizes it, fsyncs it, renames it over dst and fsyncs the
// directory. A failure leaves dst as it was and no temporary file. src and
// dst may be the same path.
//
// src may also be a block device or a FIFO, as an import reads them: it
// is then read to its end, without FICLONE, and its all-zero blocks become
// holes; the copy's size is what was read (a block device must give the
// size BLKGETSIZE64 reports, else the copy fails). Opening a FIFO waits
// for its writer.
func CopyFile(ctx context.Context, src, dst string, opt CopyOptions) (res CopyResult, err error) {
	if st, err := os.Stat(src); err != nil {
		return res, err
	} else if err := checkSource(src, st); err != nil {
		return res, err // before an open that may have effects
	}
	in, err := os.Open(src)
	if err != nil {
		return res, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return res, err
	}
	if err := checkSource(src, st); err != nil {
		return res, err
	}
	regular := st.Mode().IsRegular()
	limit := int64(-1)
	if st.Mode()&os.ModeDevice != 0 {
		if limit, err = blockDeviceSize(in); err != nil {
			return res, err
		}
	}
	tmp, err := CreateTemp(dst)
	if err != nil {
		return res, err
	}
	res.Temp = tmp.Name()
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	size := int64(0) // tmp's
	if opt.Size != 0 {
		if regular && !opt.NoClone {
			res.CloneErr = Clone(tmp, in)
			res.Reflinked = res.CloneErr == nil
			if res.CloneErr != nil && !CloneRefused(res.CloneErr) {
				return res, res.CloneErr
			}
			size = st.Size()
		}
		if !res.Reflinked {
			if size, res.Bytes, err = sparseCopy(ctx, tmp, in, limit, opt.Progress); err != nil {
				return res, err
			}
			if limit >= 0 && size != limit {
				return res, fmt.Errorf("copy %s: read %d bytes of %d: %w", src, size, limit, io.ErrUnexpectedEOF)
			}
		}
	}
	if opt.Size >= 0 && opt.Size != size {
		if err := tmp.Truncate(opt.Size); err != nil {
			return res, err
		}
	}
	if opt.Edit != nil {
		if err := opt.Edit(tmp); err != nil {
			return res, err
		}
	}
	if opt.KeepMtime {
		mtime := st.ModTime()
		if err := os.Chtimes(tmp.Name(), mtime, mtime); err != nil {
			return res, err
		}
	}
	if err := tmp.Sync(); err != nil {
		return res, &os.PathError{Op: "fsync", Path: tmp.Name(), Err: err}
	}
	if err := tmp.Close(); err != nil {
		return res, err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return res, err
	}
	return res, SyncDir(filepath.Dir(dst))
}

// checkSource returns an ErrFileType error unless st, the file info of
// src, is a regular file, a block device or a FIFO.
func checkSource(src string, st os.FileInfo) error {
	mode := st.Mode()
	var what string
	switch {
	case mode.IsRegular(), mode&os.ModeNamedPipe != 0,
		mode&os.ModeDevice != 0 && mode&os.ModeCharDevice == 0:
		return nil
	case mode.IsDir():
		what = "directory"
	case mode&os.ModeCharDevice != 0:
		what = "character device"
	case mode&os.ModeSocket != 0:
		what = "socket"
	default:
		what = "irregular file"
	}
	return fmt.Errorf("copy %s: a %s is %w", src, what, ErrFileType)
}

// blockDeviceSize returns the size of the block device f (BLKGETSIZE64).
func blockDeviceSize(f *os.File) (int64, error) {
	var size uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); errno != 0 {
		return 0, &os.PathError{Op: "ioctl BLKGETSIZE64", Path: f.Name(), Err: errno}
	}
	return int64(size), nil
}

// CreateSparse makes dst a new empty file of size bytes (a single hole),
// durably: temporary file, fsync, rename, directory fsync.
func CreateSparse(dst string, size int64) (temp string, err error) {
	tmp, err := CreateTemp(dst)
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Truncate(size); err != nil {
		return tmp.Name(), err
	}
	if err := tmp.Sync(); err != nil {
		return tmp.Name(), err
	}
	if err := tmp.Close(); err != nil {
		return tmp.Name(), err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return tmp.Name(), err
	}
	return tmp.Name(), SyncDir(filepath.Dir(dst))
}
