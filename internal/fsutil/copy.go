package fsutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

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
	// Progress, if set, receives the sparse copy's progress.
	Progress func(done, total int64)
}

// CopyResult says how CopyFile made its copy.
type CopyResult struct {
	// Reflinked is true when the copy shares src's extents.
	Reflinked bool
	// CloneErr is why FICLONE was refused (nil if it was not tried or
	// succeeded).
	CloneErr error
	// Bytes is the data the sparse copy read and wrote (0 for a reflink).
	Bytes int64
	// Temp is the temporary name the copy was written under.
	Temp string
}

// CopyFile makes dst a new inode with src's data: it writes a temporary
// file beside dst, reflinks src into it (or, when FICLONE is refused, makes
// a sparse copy), resizes it, fsyncs it, renames it over dst and fsyncs the
// directory. A failure leaves dst as it was and no temporary file. src and
// dst may be the same path.
func CopyFile(ctx context.Context, src, dst string, opt CopyOptions) (res CopyResult, err error) {
	in, err := os.Open(src)
	if err != nil {
		return res, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return res, err
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
	if opt.Size != 0 {
		if !opt.NoClone {
			res.CloneErr = Clone(tmp, in)
			res.Reflinked = res.CloneErr == nil
			if res.CloneErr != nil && !CloneRefused(res.CloneErr) {
				return res, res.CloneErr
			}
		}
		if !res.Reflinked {
			if res.Bytes, err = SparseCopy(ctx, tmp, in, opt.Progress); err != nil {
				return res, err
			}
		}
	}
	if opt.Size >= 0 && opt.Size != st.Size() {
		if err := tmp.Truncate(opt.Size); err != nil {
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

// copyChunk bounds one copy_file_range call, so that cancellation is seen
// promptly.
const copyChunk = 8 << 20

// SparseCopy copies the data of src into dst, which must be empty: dst
// gets src's size, and src's holes (found with SEEK_DATA/SEEK_HOLE) stay
// holes, so the time taken grows with the allocated data, not the apparent
// size. Data is moved with copy_file_range, or read/write where the kernel
// refuses it. ctx is checked between chunks; progress gets the offset
// reached and the size. It returns the bytes copied.
func SparseCopy(ctx context.Context, dst, src *os.File, progress func(done, total int64)) (int64, error) {
	st, err := src.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	if err := dst.Truncate(size); err != nil {
		return 0, err
	}
	if progress == nil {
		progress = func(int64, int64) {}
	}
	var copied int64
	useCFR := true
	start := time.Now()
	for off := int64(0); off < size; {
		data, err := unix.Seek(int(src.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil {
			return copied, &os.PathError{Op: "seek data", Path: src.Name(), Err: err}
		}
		hole, err := unix.Seek(int(src.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return copied, &os.PathError{Op: "seek hole", Path: src.Name(), Err: err}
		}
		for pos := data; pos < hole; {
			if err := ctx.Err(); err != nil {
				return copied, fmt.Errorf("copy %s after %d bytes in %v: %w", src.Name(), copied, time.Since(start), err)
			}
			n := min(hole-pos, copyChunk)
			var w int64
			if useCFR {
				w, err = copyRange(dst, src, pos, n)
				if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) ||
					errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
					useCFR = false
					continue
				}
			} else {
				w, err = readWrite(dst, src, pos, n)
			}
			if err != nil {
				return copied, err
			}
			pos += w
			copied += w
			progress(pos, size)
		}
		off = hole
	}
	progress(size, size)
	return copied, nil
}

func copyRange(dst, src *os.File, pos, n int64) (int64, error) {
	roff, woff := pos, pos
	w, err := unix.CopyFileRange(int(src.Fd()), &roff, int(dst.Fd()), &woff, int(n), 0)
	if err != nil {
		return 0, &os.PathError{Op: "copy_file_range", Path: src.Name() + " -> " + dst.Name(), Err: err}
	}
	if w == 0 {
		return 0, fmt.Errorf("copy_file_range %s: %w", src.Name(), io.ErrUnexpectedEOF)
	}
	return int64(w), nil
}

func readWrite(dst, src *os.File, pos, n int64) (int64, error) {
	buf := make([]byte, min(n, 1<<20))
	r, err := src.ReadAt(buf, pos)
	if r == 0 && err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	w, err := dst.WriteAt(buf[:r], pos)
	return int64(w), err
}
