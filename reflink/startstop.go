package reflink

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// Start prepares the dirty image: an origin renames its precache (or
// clones its clean image if the precache is missing or stale), a snapshot
// hard-links its source's clean image and clones it, a volatile volume gets
// an empty sparse image. As in Qubes (is_dirty is save_on_stop and a dirty
// image), only a save_on_stop volume resumes a dirty image that exists
// already (a crash, a double start); a snapshot or volatile volume discards
// it and starts fresh.
func (v *volume) Start(ctx context.Context) error {
	return v.do(ctx, "start", func() error { return v.start(ctx) })
}

func (v *volume) start(ctx context.Context) error {
	if err := v.handOverTemps(); err != nil {
		return err
	}
	v.p.crashPoint("start-temps-handed-over")
	if v.cfg.SnapshotsDisabled() {
		revs, err := listRevisions(v.clean)
		if err != nil {
			return err
		}
		if err := v.pruneRevisions(revs, 0); err != nil {
			return err
		}
		v.cancelPrecache()
		if err := v.p.discard(v.precache); err != nil {
			return err
		}
		if exists(v.dirty) {
			return nil
		}
		return v.p.rename(v.clean, v.dirty)
	}
	if v.isDirty() {
		return nil
	}
	switch v.cfg.Kind() {
	case storage.Snapshot, storage.SnapshotCommit:
		return v.startSnapshot(ctx)
	case storage.Origin:
		return v.startOrigin(ctx)
	default:
		if err := v.p.discard(v.dirty); err != nil {
			return err
		}
		return v.p.createSparse(v.dirty, v.conf().Size)
	}
}

func (v *volume) startSnapshot(ctx context.Context) error {
	src := v.sourceClean()
	if sv := v.p.lookup(v.cfg.Source); sv != nil && sv.conf().SnapshotsDisabled() && exists(sv.dirty) {
		return fmt.Errorf("source volume %s is running with snapshots disabled: %w", v.cfg.Source, storage.ErrRunning)
	}
	if !exists(src) {
		return fmt.Errorf("%w: missing image file %q of source %s", storage.ErrNotFound, src, v.cfg.Source)
	}
	// A stale running image (a crash, a double start) is discarded: the
	// worker deletes it, off the start path.
	for _, path := range []string{v.dirty, v.clean} {
		if err := v.p.discard(path); err != nil {
			return err
		}
	}
	if err := v.p.link(src, v.clean); err != nil {
		return err
	}
	v.p.crashPoint("snapshot-linked")
	return v.p.copy(ctx, v.clean, v.dirty, fsutil.CopyOptions{Size: -1})
}

func (v *volume) startOrigin(ctx context.Context) error {
	st, err := os.Stat(v.clean)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("%w: %w", storage.ErrNotFound, err)
		}
		return err
	}
	// A precache clone still queued is not needed any more: this start
	// clones the clean image itself, as Qubes does when the precache is
	// missing (one clone either way). One the worker finished is used.
	v.cancelPrecache()
	if pst, err := os.Stat(v.precache); err == nil {
		if samePrecache(st, pst) {
			return v.p.rename(v.precache, v.dirty)
		}
		v.p.log.Warn().Str("vid", v.cfg.VID).Str("src", v.precache).Msg("removed stale precache")
		if err := v.p.discard(v.precache); err != nil {
			return err
		}
	}
	v.p.crashPoint("origin-before-copy")
	return v.p.copy(ctx, v.clean, v.dirty, fsutil.CopyOptions{Size: -1})
}

// Stop commits a dirty origin (with snapshots disabled: renames it back),
// discards the images of a snapshot or volatile volume, and does nothing
// for a stopped volume.
func (v *volume) Stop(ctx context.Context) error {
	return v.do(ctx, "stop", func() error { return v.stop(ctx, true) })
}

// Abort discards what Start made without committing: an origin's dirty
// image is dropped (with snapshots disabled it goes back to being the
// clean image, since it is the data); snapshot and volatile volumes stop
// as usual.
func (v *volume) Abort(ctx context.Context) error {
	return v.do(ctx, "abort", func() error { return v.stop(ctx, false) })
}

func (v *volume) stop(ctx context.Context, commit bool) error {
	if v.cfg.SaveOnStop {
		if !exists(v.dirty) {
			return nil
		}
		if v.cfg.SnapshotsDisabled() {
			return v.p.rename(v.dirty, v.clean)
		}
		if commit {
			return v.commit(v.dirty)
		}
		if err := v.p.discard(v.dirty); err != nil {
			return err
		}
		v.schedulePrecache()
		return nil
	}
	if !v.cfg.SnapOnStart {
		size, err := v.size()
		if err != nil {
			return err
		}
		v.setSize(size) // keep a resize made while running, as Qubes does
	}
	if err := v.p.discard(v.dirty); err != nil {
		return err
	}
	return v.p.discard(v.clean)
}
