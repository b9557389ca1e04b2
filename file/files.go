package file

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// The pool's file operations: each is durable (the file and its directory
// are fsynced) and logged with op, src, dst, bytes and duration.

func (p *filePool) logOp(op, src, dst string, bytes int64, start time.Time, err error) {
	ev := p.log.Info()
	if err != nil {
		ev = p.log.Error().Err(err)
	}
	ev = ev.Str("op", op).Str("src", src)
	if dst != "" {
		ev = ev.Str("dst", dst)
	}
	ev.Int64("bytes", bytes).Dur("duration", time.Since(start)).Msg(op)
}

// rename renames durably (the directory is fsynced).
func (p *filePool) rename(src, dst string) error {
	start := time.Now()
	err := fsutil.Rename(src, dst)
	p.logOp("rename", src, dst, 0, start, err)
	return err
}

// remove deletes path (a missing file is fine) and fsyncs its directory.
func (p *filePool) remove(path string) error {
	start := time.Now()
	removed, err := fsutil.Remove(path)
	if removed || err != nil {
		p.logOp("remove", path, "", 0, start, err)
	}
	return err
}

// Modes of the files the driver makes: Qubes' create gives a volume's
// image 0664 (create_sparse_file's permissions); the files it makes
// without (cows, imports, a volatile image made anew at start, a copy by
// cp) get what open(2) gives with the usual umask 022.
const (
	imageMode = 0o664
	cowMode   = 0o644
)

// createSparse makes dst a new empty sparse file of size bytes and the
// given mode, durably (temporary file, fsync, rename, directory fsync),
// creating its directory if needed. An existing dst is replaced.
func (p *filePool) createSparse(dst string, size int64, mode os.FileMode) (err error) {
	if err := p.mkdirs(filepath.Dir(dst)); err != nil {
		return err
	}
	start := time.Now()
	tmp, err := fsutil.CreateTemp(dst)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
		p.logOp("create-sparse", tmp.Name(), dst, size, start, err)
	}()
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if err := tmp.Truncate(size); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return fsutil.Rename(tmp.Name(), dst)
}

// copy makes dst a new inode with src's data by a sparse copy (holes and
// all-zero blocks are skipped), reporting progress to
// storage.ProgressFrom(ctx). src may be another pool's export: a file on
// another filesystem, a block device or a FIFO.
func (p *filePool) copy(ctx context.Context, src, dst string) error {
	if err := p.mkdirs(filepath.Dir(dst)); err != nil {
		return err
	}
	start := time.Now()
	res, err := fsutil.CopyFile(ctx, src, dst, fsutil.CopyOptions{Size: -1, NoClone: true, Progress: storage.ProgressFrom(ctx)})
	if err == nil {
		err = os.Chmod(dst, cowMode)
	}
	ev := p.log.Info()
	if err != nil {
		ev = p.log.Error().Err(err)
	}
	ev.Str("op", "sparse-copy").Str("src", src).Str("dst", dst).Str("tmp", res.Temp).
		Int64("bytes", res.Bytes).Dur("duration", time.Since(start)).Msg("sparse-copy")
	return err
}

// mkdirs creates a volume's directory and its parent (appvms/ or
// vm-templates/) inside the pool if missing, as Qubes' os.makedirs does.
func (p *filePool) mkdirs(dir string) error {
	if parent := filepath.Dir(dir); parent != p.dir && parent != filepath.Dir(p.dir) {
		if _, err := p.mkdir(parent); err != nil {
			return err
		}
	}
	_, err := p.mkdir(dir)
	return err
}

// mkdir creates a directory (not its parents) if missing.
func (p *filePool) mkdir(path string) (bool, error) {
	created, err := fsutil.Mkdir(path)
	if created || err != nil {
		p.logOp("mkdir", path, "", 0, time.Now(), err)
	}
	return created, err
}

// removeEmptyDir removes a directory if it is empty.
func (p *filePool) removeEmptyDir(path string) {
	removed, err := fsutil.RemoveEmptyDir(path)
	if removed || err != nil {
		p.logOp("rmdir", path, "", 0, time.Now(), err)
	}
}

// fileSize returns the size of the file at path.
func fileSize(path string) (int64, error) {
	st, err := os.Lstat(path)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
