package reflink

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// The pool's file operations: each is logged with op, src, dst, bytes and
// duration.

func (p *reflinkPool) logOp(op, src, dst string, bytes int64, start time.Time, err error) {
	logOp(p.log, op, src, dst, bytes, start, err)
}

func logOp(log zerolog.Logger, op, src, dst string, bytes int64, start time.Time, err error) {
	ev := log.Info()
	if err != nil {
		ev = log.Error().Err(err)
	}
	ev = ev.Str("op", op).Str("src", src)
	if dst != "" {
		ev = ev.Str("dst", dst)
	}
	ev.Int64("bytes", bytes).Dur("duration", time.Since(start)).Msg(op)
}

// rename renames durably (the directory is fsynced).
func (p *reflinkPool) rename(src, dst string) error {
	start := time.Now()
	err := fsutil.Rename(src, dst)
	p.logOp("rename", src, dst, 0, start, err)
	return err
}

// renameNoSync renames without fsyncing the directory; the caller fsyncs
// it once for a batch of changes.
func (p *reflinkPool) renameNoSync(src, dst string) error {
	start := time.Now()
	err := os.Rename(src, dst)
	p.logOp("rename", src, dst, 0, start, err)
	return err
}

// linkNoSync hard-links src to dst without fsyncing the directory.
func (p *reflinkPool) linkNoSync(src, dst string) error {
	start := time.Now()
	err := os.Link(src, dst)
	p.logOp("link", src, dst, 0, start, err)
	return err
}

// link hard-links src to dst durably, creating dst's directory if needed.
func (p *reflinkPool) link(src, dst string) error {
	if _, err := p.mkdir(filepath.Dir(dst)); err != nil {
		return err
	}
	start := time.Now()
	err := fsutil.Link(src, dst)
	p.logOp("link", src, dst, 0, start, err)
	return err
}

// remove deletes path now (a missing file is fine) and fsyncs its
// directory.
func (p *reflinkPool) remove(path string) error {
	start := time.Now()
	removed, err := fsutil.Remove(path)
	if removed || err != nil {
		p.logOp("remove", path, "", 0, start, err)
	}
	return err
}

// discard renames path to a "~" name and leaves its deletion to the
// worker: a rename costs microseconds, while deleting a clone costs most of
// what making it cost. A missing file is fine. The directory is not
// fsynced: if the rename is lost in a crash, the file is discarded again.
func (p *reflinkPool) discard(path string) error {
	// A missing file is checked first: on a read-only filesystem the
	// rename would fail with EROFS and blame a file that does not exist.
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	tmp := fmt.Sprintf("%s%s%016x", path, fsutil.TempSep, rand.Uint64())
	start := time.Now()
	err := os.Rename(path, tmp)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	p.logOp("discard", path, tmp, 0, start, err)
	if err != nil {
		return err
	}
	p.worker.remove(tmp)
	return nil
}

// copy makes dst a new inode with src's data: FICLONE, or a sparse copy
// when the clone is refused (storage.ErrReflinkUnsupported is never
// returned here; the fallback is silent, as in Qubes, but logged).
func (p *reflinkPool) copy(ctx context.Context, src, dst string, opt fsutil.CopyOptions) error {
	if _, err := p.mkdir(filepath.Dir(dst)); err != nil {
		return err
	}
	opt.NoClone = opt.NoClone || p.noReflink.Load()
	if opt.Progress == nil {
		opt.Progress = storage.ProgressFrom(ctx)
	}
	start := time.Now()
	res, err := fsutil.CopyFile(ctx, src, dst, opt)
	if fsutil.NoReflink(res.CloneErr) {
		p.noReflink.Store(true)
	}
	op := "sparse-copy"
	if res.Reflinked {
		op = "reflink"
	} else if opt.Size == 0 {
		op = "create-empty"
	}
	log := p.log
	if ctx.Value(backgroundKey{}) != nil {
		log = p.worker.log
	}
	ev := log.Info()
	if err != nil {
		ev = log.Error().Err(err)
	}
	if res.CloneErr != nil {
		ev = ev.AnErr("clone_error", res.CloneErr)
	}
	ev.Str("op", op).Str("src", src).Str("dst", dst).Str("tmp", res.Temp).
		Int64("bytes", res.Bytes).Dur("duration", time.Since(start)).Msg(op)
	return err
}

// createSparse makes dst a new empty sparse file of size bytes, creating
// its directory if needed.
func (p *reflinkPool) createSparse(dst string, size int64) error {
	if _, err := p.mkdir(filepath.Dir(dst)); err != nil {
		return err
	}
	start := time.Now()
	tmp, err := fsutil.CreateSparse(dst, size)
	p.log.Info().Err(err).Str("op", "create-sparse").Str("src", tmp).Str("dst", dst).
		Int64("bytes", size).Dur("duration", time.Since(start)).Msg("create-sparse")
	return err
}

// mkdir creates a directory (not its parents) if missing.
func (p *reflinkPool) mkdir(path string) (bool, error) {
	created, err := fsutil.Mkdir(path)
	if created || err != nil {
		p.logOp("mkdir", path, "", 0, time.Now(), err)
	}
	return created, err
}

// removeEmptyDir removes a directory if it is empty.
func (p *reflinkPool) removeEmptyDir(path string) {
	removed, err := fsutil.RemoveEmptyDir(path)
	if removed || err != nil {
		p.logOp("rmdir", path, "", 0, time.Now(), err)
	}
}
