package reflink

import (
	"context"
	"os"

	"github.com/vmpool/vmpool/internal/fsutil"
)

// keepsPrecache tells whether commits of this volume prepare a precache
// (as Qubes' _update_precache: every committing volume unless snapshots
// are disabled).
func (v *volume) keepsPrecache() bool { return v.cfg.SaveOnStop && !v.cfg.SnapshotsDisabled() }

// cancelPrecache stops a queued precache job; one that already ran has
// left its file, which the caller discards if needed. Needs sem.
func (v *volume) cancelPrecache() {
	if v.pre != nil {
		v.pre.cancelled.Store(true)
		v.pre = nil
	}
}

// schedulePrecache queues a new precache clone for after the current
// operation. Needs sem.
func (v *volume) schedulePrecache() {
	v.cancelPrecache()
	if v.keepsPrecache() {
		v.pre = v.newPrecacheJob()
		v.p.worker.precache(v.pre)
	}
}

func (v *volume) newPrecacheJob() *precacheJob { return &precacheJob{v: v} }

// makePrecache clones the clean image to the precache with the same mtime,
// unless the volume runs or an up-to-date precache exists, and reports
// whether it made one. It runs in the
// background, so failures are logged, not returned. Needs sem.
func (v *volume) makePrecache(ctx context.Context) (made bool) {
	if v.removed || !v.keepsPrecache() || exists(v.dirty) {
		return false
	}
	if err := v.checkPaths(); err != nil {
		v.p.log.Warn().Err(err).Str("vid", v.cfg.VID).Msg("no precache")
		return false
	}
	st, err := os.Stat(v.clean)
	if err != nil {
		return false
	}
	if pst, err := os.Stat(v.precache); err == nil {
		if samePrecache(st, pst) {
			return false
		}
		if err := v.p.discard(v.precache); err != nil {
			v.p.log.Warn().Err(err).Str("vid", v.cfg.VID).Msg("discard stale precache")
			return false
		}
	}
	if err := v.p.copy(ctx, v.clean, v.precache, fsutil.CopyOptions{Size: -1, KeepMtime: true}); err != nil {
		v.p.log.Warn().Err(err).Str("vid", v.cfg.VID).Msg("prepare precache")
		return false
	}
	return true
}

// samePrecache reports whether a precache matches its clean image, by
// mtime and size as in Qubes' _remove_stale_precache.
func samePrecache(clean, pre os.FileInfo) bool {
	return clean.ModTime().Equal(pre.ModTime()) && clean.Size() == pre.Size()
}
