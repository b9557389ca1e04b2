package fsutil

import (
	"context"
	"os"
	"path/filepath"
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
	// Bytes is the data the sparse copy read: src's data regions (0 for a
	// reflink). All-zero blocks among them were not written.
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
	size := int64(0) // tmp's
	if opt.Size != 0 {
		if !opt.NoClone {
			res.CloneErr = Clone(tmp, in)
			res.Reflinked = res.CloneErr == nil
			if res.CloneErr != nil && !CloneRefused(res.CloneErr) {
				return res, res.CloneErr
			}
			size = st.Size()
		}
		if !res.Reflinked {
			if size, res.Bytes, err = sparseCopy(ctx, tmp, in, -1, opt.Progress); err != nil {
				return res, err
			}
		}
	}
	if opt.Size >= 0 && opt.Size != size {
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
