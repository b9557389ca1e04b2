package file

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// Export returns the image of a stopped save_on_stop volume. A running
// volume's image is the one its VM writes to (storage.ErrRunning), and a
// dirty one holds uncommitted data (storage.ErrDirty), as Qubes' "file
// pool cannot export running volumes" and "... dirty volumes". While the
// export lasts (until ExportEnd) the volume cannot start.
func (v *volume) Export(ctx context.Context) (string, error) {
	if !v.cfg.SaveOnStop {
		return "", v.wrap("export", fmt.Errorf("not save_on_stop: %w", storage.ErrUnsupported))
	}
	if err := v.p.begin(); err != nil {
		return "", v.wrap("export", err)
	}
	defer v.p.end()
	if err := v.lock(ctx); err != nil {
		return "", v.wrap("export", err)
	}
	defer v.unlock()
	if err := v.checkPaths(); err != nil {
		return "", v.wrap("export", err)
	}
	if v.running() {
		return "", v.wrap("export", fmt.Errorf("file pool cannot export running volumes: %w", storage.ErrRunning))
	}
	if dirty, err := cowDirty(v.cow); err != nil {
		return "", v.wrap("export", err)
	} else if dirty {
		return "", v.wrap("export", fmt.Errorf("file pool cannot export dirty volumes: %w", storage.ErrDirty))
	}
	if !exists(v.img) {
		return "", v.wrap("export", fmt.Errorf("%w: missing image file %q", storage.ErrNotFound, v.img))
	}
	v.mu.Lock()
	v.exports++
	v.mu.Unlock()
	return v.img, nil
}

// ExportEnd ends an Export.
func (v *volume) ExportEnd(ctx context.Context, path string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.exports > 0 {
		v.exports--
	}
	return nil
}

// checkImport refuses an import into a volume that is not save_on_stop
// (storage.ErrUnsupported, Qubes: "Can not import into save_on_stop=False
// volume") or that runs (storage.ErrRunning: its VM writes to the image
// the import would replace).
func (v *volume) checkImport() error {
	if !v.cfg.SaveOnStop {
		return fmt.Errorf("can not import into a save_on_stop=False volume: %w", storage.ErrUnsupported)
	}
	if v.running() {
		return fmt.Errorf("its VM writes to the image an import would replace; stop it first: %w", storage.ErrRunning)
	}
	return nil
}

// ImportData makes an empty sparse <vid>-import.img of size bytes and
// returns its path; ImportDataEnd puts it in place. The volume must be a
// stopped save_on_stop volume.
func (v *volume) ImportData(ctx context.Context, size int64) (string, error) {
	if size < 0 {
		return "", v.wrap("import data", fmt.Errorf("%w: negative size %d", storage.ErrInvalidConfig, size))
	}
	err := v.do(ctx, "import data", func() error {
		if err := v.checkImport(); err != nil {
			return err
		}
		return v.p.createSparse(v.importPath, size, cowMode)
	})
	if err != nil {
		return "", err
	}
	return v.importPath, nil
}

// ImportDataEnd renames the import image over the volume's image
// (success), durably, or deletes it. As in Qubes, no revision is kept of
// the replaced image.
func (v *volume) ImportDataEnd(ctx context.Context, success bool) error {
	return v.do(ctx, "import data end", func() error {
		if !exists(v.importPath) {
			return fmt.Errorf("no import in progress: %w", storage.ErrNotFound)
		}
		return v.endImport(success)
	})
}

// endImport puts the import image in place or deletes it. Needs sem.
func (v *volume) endImport(success bool) error {
	if !success {
		return v.p.remove(v.importPath)
	}
	if err := fsutil.SyncFile(v.importPath); err != nil {
		return err
	}
	size, err := fileSize(v.importPath)
	if err != nil {
		return err
	}
	if err := v.p.rename(v.importPath, v.img); err != nil {
		return err
	}
	v.setSize(size)
	return nil
}

// ImportVolume copies src's data (its Export) into this volume with a
// sparse copy, under a temporary name renamed over the image at the end;
// the size follows src. A snapshot source is refused
// (storage.ErrUnsupported, as Qubes' "Can not import snapshot volume"), so
// is a source running with snapshots disabled (storage.ErrRunning). A
// volume that is not save_on_stop ignores the import, as in Qubes. The
// copy reports its progress to storage.ProgressFrom(ctx).
func (v *volume) ImportVolume(ctx context.Context, src storage.Volume) error {
	if src == nil {
		return v.wrap("import volume", fmt.Errorf("%w: no source volume", storage.ErrInvalidConfig))
	}
	if sv, ok := src.(*volume); ok && sv == v {
		return v.wrap("import volume", fmt.Errorf("%w: a volume cannot import itself", storage.ErrInvalidConfig))
	}
	sc := src.Config()
	if sc.SnapOnStart {
		return v.wrap("import volume", fmt.Errorf("can not import snapshot volume %s: %w", sc.VID, storage.ErrUnsupported))
	}
	if sc.SnapshotsDisabled() {
		if running, err := src.IsRunning(ctx); err != nil || running {
			return v.wrap("import volume", fmt.Errorf("source %s runs with snapshots disabled; stop it before importing its data: %w", sc.VID, storage.ErrRunning))
		}
	}
	return v.do(ctx, "import volume", func() error {
		if !v.cfg.SaveOnStop {
			return nil
		}
		if err := v.checkImport(); err != nil {
			return err
		}
		srcPath, err := src.Export(ctx)
		if err != nil {
			return err
		}
		err = v.p.copy(ctx, srcPath, v.importPath)
		if eerr := src.ExportEnd(ctx, srcPath); err == nil {
			err = eerr
		}
		if err != nil {
			return errors.Join(err, v.endImport(false))
		}
		return v.endImport(true)
	})
}

// Resize changes the size of a writable volume that is not a snapshot
// (Qubes: "Cannot resize volume based on a template", here
// storage.ErrUnsupported): the image is truncated in place, as Qubes
// does, and a running volume's loop devices and origin device are told.
// Shrinking needs opts.Force.
func (v *volume) Resize(ctx context.Context, size int64, opts storage.ResizeOptions) error {
	if size < 0 {
		return v.wrap("resize", fmt.Errorf("%w: negative size %d", storage.ErrInvalidConfig, size))
	}
	return v.do(ctx, "resize", func() error {
		if !v.cfg.RW {
			return storage.ErrReadOnly
		}
		if v.cfg.SnapOnStart {
			return fmt.Errorf("cannot resize a volume based on a template; resize the template instead: %w", storage.ErrUnsupported)
		}
		cur, err := v.size()
		if err != nil {
			return err
		}
		if size < cur && !opts.Force {
			return fmt.Errorf("%d bytes to %d bytes: %w", cur, size, storage.ErrShrink)
		}
		if exists(v.img) {
			if err := fsutil.Truncate(v.img, size); err != nil {
				return err
			}
			if v.running() {
				if err := v.resizeDevices(ctx, size); err != nil {
					return err
				}
			}
		}
		v.setSize(size)
		return nil
	})
}

// resizeDevices tells a running volume's devices its image's new size.
func (v *volume) resizeDevices(ctx context.Context, size int64) error {
	if dev := v.runningDevice(); dev != "" {
		v.p.dmMu.Lock()
		defer v.p.dmMu.Unlock()
		return v.p.layer.resize(ctx, dev, v.img, size)
	}
	devs, err := fsutil.UpdateLoopCapacity(v.img)
	v.p.log.Info().Err(err).Str("op", "loop-capacity").Str("src", v.img).Strs("devices", devs).Msg("loop-capacity")
	return err
}
