package reflink

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// Export returns the clean image of a save_on_stop volume.
func (v *volume) Export(ctx context.Context) (string, error) {
	if !v.cfg.SaveOnStop {
		return "", v.wrap("export", fmt.Errorf("not save_on_stop: %w", storage.ErrUnsupported))
	}
	if err := v.checkPaths(); err != nil {
		return "", v.wrap("export", err)
	}
	if !exists(v.clean) {
		if v.conf().SnapshotsDisabled() && exists(v.dirty) {
			return "", v.wrap("export", fmt.Errorf("it runs with snapshots disabled: %w", storage.ErrDirty))
		}
		return "", v.wrap("export", fmt.Errorf("%w: missing image file %q", storage.ErrNotFound, v.clean))
	}
	return v.clean, nil
}

// ExportEnd does nothing: the clean image is never changed in place.
func (v *volume) ExportEnd(ctx context.Context, path string) error { return nil }

// ImportData makes an empty sparse import image of size bytes and returns
// its path. The volume must be save_on_stop; if it runs, the import
// becomes its committed image and the VM keeps its running image, as in
// Qubes (not with snapshots disabled: storage.ErrRunning).
func (v *volume) ImportData(ctx context.Context, size int64) (string, error) {
	if size < 0 {
		return "", v.wrap("import data", fmt.Errorf("%w: negative size %d", storage.ErrInvalidConfig, size))
	}
	err := v.do(ctx, "import data", func() error {
		if err := v.checkImport(); err != nil {
			return err
		}
		return v.p.createSparse(v.importPath, size)
	})
	if err != nil {
		return "", err
	}
	return v.importPath, nil
}

func (v *volume) checkImport() error {
	if !v.cfg.SaveOnStop {
		return fmt.Errorf("not save_on_stop: %w", storage.ErrUnsupported)
	}
	// A running volume takes the import as its committed image, as in
	// Qubes; only one running with snapshots disabled has none.
	if v.cfg.SnapshotsDisabled() && exists(v.dirty) {
		return fmt.Errorf("it runs with snapshots disabled, so it has no committed image to replace; stop it first: %w", storage.ErrRunning)
	}
	return nil
}

// ImportDataEnd commits the import image (success) or discards it.
func (v *volume) ImportDataEnd(ctx context.Context, success bool) error {
	return v.do(ctx, "import data end", func() error {
		if !exists(v.importPath) {
			return fmt.Errorf("no import in progress: %w", storage.ErrNotFound)
		}
		return v.endImport(success)
	})
}

func (v *volume) endImport(success bool) error {
	if success {
		return v.commit(v.importPath)
	}
	return v.p.discard(v.importPath)
}

// ImportVolume copies src's committed data into this volume (a reflink
// where src is on the same filesystem, a sparse copy otherwise) and commits
// it; the size follows src. A volume that is not save_on_stop ignores it,
// as in Qubes.
func (v *volume) ImportVolume(ctx context.Context, src storage.Volume) error {
	if src == nil {
		return v.wrap("import volume", fmt.Errorf("%w: no source volume", storage.ErrInvalidConfig))
	}
	if sv, ok := src.(*volume); ok && sv == v {
		return v.wrap("import volume", fmt.Errorf("%w: a volume cannot import itself", storage.ErrInvalidConfig))
	}
	if sc := src.Config(); sc.SnapshotsDisabled() {
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
		err = v.p.copy(ctx, srcPath, v.importPath, fsutil.CopyOptions{Size: -1})
		if eerr := src.ExportEnd(ctx, srcPath); err == nil {
			err = eerr
		}
		if err == nil {
			v.p.crashPoint("import-copied")
		}
		if err != nil {
			return errors.Join(err, v.endImport(false))
		}
		return v.endImport(true)
	})
}
