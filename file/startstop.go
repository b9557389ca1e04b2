package file

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// Start prepares the volume for its VM, as Qubes' FileVolume.start:
//   - volatile: a fresh empty sparse image of the configured size;
//   - origin with snapshots disabled: the VM gets the image itself; the
//     cow and the revision are deleted (they could never be used again);
//   - origin: a cow is made if missing and the origin device over the
//     image and the cow is set up (or found, after a crash or a double
//     start: the VM resumes what it wrote, which is in the image already);
//   - snapshot: its own cow is made anew (a stale device of an earlier run
//     is removed first) and the snapshot device over its source's image
//     and cow is set up; a source running with snapshots disabled is
//     storage.ErrRunning.
//
// The running marker is written first, so that a crash at any point
// leaves a volume that a Stop cleans up. A volume being exported cannot
// start (storage.ErrInUse, as Qubes' "file pool cannot start a VM with an
// exported volume").
func (v *volume) Start(ctx context.Context) error {
	return v.do(ctx, "start", func() error {
		v.mu.Lock()
		exported := v.exports > 0
		v.mu.Unlock()
		if exported {
			return fmt.Errorf("file pool cannot start a VM with an exported volume: %w", storage.ErrInUse)
		}
		c := v.conf()
		switch {
		case c.Kind() == storage.Volatile:
			return v.startVolatile(c)
		case c.SnapshotsDisabled():
			return v.startDisabled()
		case c.Kind() == storage.Origin:
			return v.startOrigin(ctx, c)
		default:
			return v.startSnapshot(ctx, c)
		}
	})
}

func (v *volume) startVolatile(c storage.VolumeConfig) error {
	if c.Size <= 0 {
		return fmt.Errorf("%w: volatile volume size must be > 0", storage.ErrInvalidConfig)
	}
	if err := v.markRunning(""); err != nil {
		return err
	}
	return v.p.createSparse(v.img, c.Size, cowMode)
}

func (v *volume) startDisabled() error {
	if !exists(v.img) {
		return fmt.Errorf("%w: missing image file %q", storage.ErrNotFound, v.img)
	}
	for _, path := range []string{v.cow, v.old} {
		if err := v.p.remove(path); err != nil {
			return err
		}
	}
	return v.markRunning("")
}

func (v *volume) startOrigin(ctx context.Context, c storage.VolumeConfig) error {
	if !exists(v.img) {
		return fmt.Errorf("%w: missing image file %q", storage.ErrNotFound, v.img)
	}
	dev, err := originPath(v.img)
	if err != nil {
		return err
	}
	if err := v.markRunning(dev); err != nil {
		return err
	}
	v.p.dmMu.Lock()
	defer v.p.dmMu.Unlock()
	if !exists(v.cow) {
		if err := v.p.createSparse(v.cow, c.Size, cowMode); err != nil {
			return err
		}
	}
	got, err := v.p.layer.setupOrigin(ctx, v.img, v.cow)
	if err == nil && got != dev {
		err = fmt.Errorf("the block layer made %s, not %s", got, dev)
	}
	if err != nil {
		return errors.Join(err, v.p.remove(v.marker))
	}
	return nil
}

func (v *volume) startSnapshot(ctx context.Context, c storage.VolumeConfig) error {
	if sv := v.p.lookup(c.Source); sv != nil && sv.conf().SnapshotsDisabled() && sv.running() {
		return fmt.Errorf("source volume %s is running with snapshots disabled: %w", c.Source, storage.ErrRunning)
	}
	src := v.path()
	if !exists(src) {
		return fmt.Errorf("%w: missing image file %q of source %s", storage.ErrNotFound, src, c.Source)
	}
	v.p.dmMu.Lock()
	defer v.p.dmMu.Unlock()
	// A stale device of an earlier run (a crash, a double start) is
	// removed: a snapshot always starts fresh.
	if err := v.destroyDevice(ctx); err != nil {
		return err
	}
	if err := v.p.remove(v.cow); err != nil {
		return err
	}
	size, err := v.size()
	if err != nil {
		return err
	}
	if err := v.p.createSparse(v.cow, size, cowMode); err != nil {
		return err
	}
	if !exists(v.sourceCow()) {
		if err := v.p.createSparse(v.sourceCow(), size, cowMode); err != nil {
			return err
		}
	}
	dev, err := v.devicePath()
	if err != nil {
		return err
	}
	if err := v.markRunning(dev); err != nil {
		return err
	}
	got, err := v.p.layer.setupSnapshot(ctx, src, v.sourceCow(), v.cow)
	if err == nil && got != dev {
		err = fmt.Errorf("the block layer made %s, not %s", got, dev)
	}
	if err != nil {
		return errors.Join(err, v.p.remove(v.marker))
	}
	return nil
}

// destroyDevice removes the device of the volume's current or last run,
// if any. Needs dmMu.
func (v *volume) destroyDevice(ctx context.Context) error {
	dev := v.runningDevice()
	if dev == "" && v.usesDM(v.conf()) {
		dev, _ = v.devicePath() // a marker lost with its device: best effort
	}
	if dev == "" {
		return nil
	}
	return v.p.layer.destroy(ctx, dev)
}

// Stop ends a run, as Qubes' FileVolume.stop: the device is removed; a
// writable origin commits (its cow becomes the revision <vid>-cow.img.old,
// or is deleted with revisions_to_keep 0, and a new empty cow is made), a
// read-only origin and a snapshot delete their cow, a volatile volume its
// image. Stopping a stopped volume does nothing.
func (v *volume) Stop(ctx context.Context) error {
	return v.do(ctx, "stop", func() error { return v.stop(ctx, true) })
}

// Abort undoes a Start that its VM never used: the device is removed and
// nothing is committed (no revision is made or replaced); an origin keeps
// its cow, so a cow with data stays dirty. Snapshot and volatile volumes
// stop as usual.
func (v *volume) Abort(ctx context.Context) error {
	return v.do(ctx, "abort", func() error { return v.stop(ctx, false) })
}

// stop is Stop (commit) or Abort. Needs sem.
func (v *volume) stop(ctx context.Context, commit bool) error {
	if !v.running() {
		return nil
	}
	c := v.conf()
	if v.usesDM(c) {
		v.p.dmMu.Lock()
		defer v.p.dmMu.Unlock()
		if err := v.destroyDevice(ctx); err != nil {
			return err
		}
	}
	switch c.Kind() {
	case storage.Origin:
		if c.SnapshotsDisabled() || !commit {
			return v.p.remove(v.marker)
		}
		if !c.RW {
			return errors.Join(v.p.remove(v.cow), v.p.remove(v.marker))
		}
		return v.commit(c)
	case storage.Snapshot:
		if err := v.p.remove(v.cow); err != nil {
			return err
		}
		return v.p.remove(v.marker)
	default:
		// Keep a resize made while it ran, as Qubes' size property does.
		size, err := v.size()
		if err != nil {
			return err
		}
		v.setSize(size)
		if err := v.p.remove(v.img); err != nil {
			return err
		}
		return v.p.remove(v.marker)
	}
}

// commit keeps the cow as the revision (revisions_to_keep 1) or deletes
// it and the revision (0), then ends the run and makes a new empty cow.
// The marker goes before the new cow is made: a crash in between leaves a
// stopped volume without a cow, which the next start makes, never a
// running one whose next stop would make the empty cow the revision.
// Needs sem and dmMu.
func (v *volume) commit(c storage.VolumeConfig) error {
	if exists(v.cow) {
		if *c.RevisionsToKeep > 0 {
			if err := fsutil.SyncFile(v.cow); err != nil {
				return err
			}
			if err := v.p.rename(v.cow, v.old); err != nil {
				return err
			}
		} else if err := errors.Join(v.p.remove(v.cow), v.p.remove(v.old)); err != nil {
			return err
		}
	}
	if err := fsutil.SyncFile(v.img); err != nil {
		return err
	}
	if err := v.p.remove(v.marker); err != nil {
		return err
	}
	size, err := v.size()
	if err != nil {
		return err
	}
	v.setSize(size)
	return v.p.createSparse(v.cow, size, cowMode)
}
