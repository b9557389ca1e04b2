package lvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vmpool/vmpool/storage"
)

// Export activates the committed LV (ignoring its activation-skip flag)
// and returns its /dev/mapper node, as Qubes' export.
func (v *volume) Export(ctx context.Context) (string, error) {
	var path string
	err := v.do(ctx, "export", func(r report) error {
		if !v.cfg.SaveOnStop {
			return fmt.Errorf("cannot export %s: it is not save_on_stop: %w", v.cfg.VID, storage.ErrUnsupported)
		}
		cur := currentLV(r, v.lv)
		if _, ok := r[cur]; !ok {
			return fmt.Errorf("volume %s/%s missing: %w", v.p.vg, cur, storage.ErrNotFound)
		}
		if err := v.activate(ctx, r, cur); err != nil {
			return err
		}
		path = mapperPath(v.p.vg, cur)
		return nil
	})
	return path, err
}

// activate activates lv if the report says it is not active.
func (v *volume) activate(ctx context.Context, r report, lv string) error {
	if r[lv].active() {
		return nil
	}
	return v.run(ctx, &plan{v: v, cmds: [][]string{v.p.cmdActivate(lv)}, check: func(r report) error {
		if !r[lv].active() {
			return fmt.Errorf("logical volume %s/%s is not active", v.p.vg, lv)
		}
		return nil
	}})
}

// ExportEnd does nothing: the LV stays active, as in Qubes.
func (v *volume) ExportEnd(ctx context.Context, path string) error { return nil }

// checkImport refuses an import into a volume that does not save
// (ErrUnsupported), a running one (ErrRunning, as Qubes' "Cannot import
// data to dirty volume") and one with an import in progress (ErrInUse).
func (v *volume) checkImport(r report) error {
	if !v.cfg.SaveOnStop {
		return fmt.Errorf("cannot import into %s: it is not save_on_stop: %w", v.cfg.VID, storage.ErrUnsupported)
	}
	if v.isDirty(r) || v.isRunning(r) {
		return fmt.Errorf("cannot import data to dirty volume %s, stop the qube first: %w", v.cfg.VID, storage.ErrRunning)
	}
	if _, ok := r[v.imp]; ok {
		return fmt.Errorf("import operation in progress on %s: %w", v.cfg.VID, storage.ErrInUse)
	}
	return nil
}

// createImport makes the -import LV of size bytes.
func (v *volume) createImport(ctx context.Context, size int64) error {
	return v.run(ctx, &plan{v: v, cmds: [][]string{v.p.cmdCreate(v.imp, size)}, check: func(r report) error {
		if !r[v.imp].active() {
			return fmt.Errorf("logical volume %s/%s is missing or not active", v.p.vg, v.imp)
		}
		return nil
	}, undo: func(r report) [][]string {
		if _, ok := r[v.imp]; ok {
			return [][]string{v.p.cmdRemove(v.imp)}
		}
		return nil
	}})
}

// ImportData makes the -import LV of size bytes and returns its /dev/VG/LV
// path, as Qubes' import_data.
func (v *volume) ImportData(ctx context.Context, size int64) (string, error) {
	var path string
	err := v.do(ctx, "import data", func(r report) error {
		if err := v.checkImport(r); err != nil {
			return err
		}
		if size <= 0 {
			return fmt.Errorf("%w: import size %d", storage.ErrInvalidConfig, size)
		}
		if err := v.createImport(ctx, size); err != nil {
			return err
		}
		path = devPath(v.p.vg, v.imp)
		return nil
	})
	return path, err
}

// ImportDataEnd commits the -import LV (success) or removes it.
func (v *volume) ImportDataEnd(ctx context.Context, success bool) error {
	return v.do(ctx, "import data end", func(r report) error {
		if _, ok := r[v.imp]; !ok {
			return fmt.Errorf("%w on %s: %w", errNoImport, v.cfg.VID, storage.ErrNotFound)
		}
		if !success {
			return v.run(ctx, v.removePlan(r, v.imp))
		}
		return v.run(ctx, v.commitPlan(r, v.imp, false))
	})
}

// ImportVolume replaces the committed state with src's: a thin snapshot of
// src's committed LV when src is in the same pool's thin pool, else a
// sparse copy of src's export into -import, then committed (Qubes'
// import_volume). A src that does not save is nothing to import, as in
// Qubes.
func (v *volume) ImportVolume(ctx context.Context, src storage.Volume) error {
	return v.do(ctx, "import volume", func(r report) error {
		if !src.Config().SaveOnStop {
			return nil
		}
		if err := v.checkImport(r); err != nil {
			return err
		}
		if src.Config().SnapshotsDisabled() {
			running, err := src.IsRunning(ctx)
			if err != nil {
				return err
			}
			if running {
				return fmt.Errorf("volume %s must be stopped before importing its data: %w", src.Config().VID, storage.ErrRunning)
			}
		}
		if sv, ok := src.(*volume); ok && sv.p.vg == v.p.vg && sv.p.thin == v.p.thin {
			cur := currentLV(r, sv.lv)
			if _, ok := r[cur]; !ok {
				return fmt.Errorf("source volume %s/%s missing: %w", v.p.vg, cur, storage.ErrNotFound)
			}
			return v.run(ctx, v.commitPlan(r, cur, true))
		}
		size, err := src.Size(ctx)
		if err != nil {
			return fmt.Errorf("size of the source %s: %w", src.Config().VID, err)
		}
		if err := v.createImport(ctx, size); err != nil {
			return err
		}
		if err := v.copyFrom(ctx, src, size); err != nil {
			r, _ := v.p.cached(ctx)
			if uerr := v.run(context.WithoutCancel(ctx), v.removePlan(r, v.imp)); uerr != nil {
				v.p.log.Error().Err(uerr).Str("vid", v.cfg.VID).Msg("remove the import after a failed copy")
			}
			return fmt.Errorf("failed to import volume %s: %w", src.Config().VID, err)
		}
		r, err = v.p.cached(ctx)
		if err != nil {
			return err
		}
		return v.run(ctx, v.commitPlan(r, v.imp, false))
	})
}

// copyBlock is the unit of the sparse copy, as Qubes' dd bs=128K.
const copyBlock = 128 << 10

// copyFrom copies src's export into the -import LV, skipping blocks of
// zeros (the new thin LV reads as zeros: dd conv=sparse), fsyncs it and
// reports progress. A write error (the thin pool ran out of space and
// errors when full) ends the copy.
func (v *volume) copyFrom(ctx context.Context, src storage.Volume, size int64) (err error) {
	path, err := src.Export(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if eerr := src.ExportEnd(context.WithoutCancel(ctx), path); eerr != nil && err == nil {
			err = eerr
		}
	}()
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(devPath(v.p.vg, v.imp), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer out.Close()
	progress := storage.ProgressFrom(ctx)
	buf := make([]byte, copyBlock)
	zero := make([]byte, copyBlock)
	var off int64
	progress(0, size)
	for off < size {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := in.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		off += int64(n)
		progress(off, size)
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	return out.Sync()
}
