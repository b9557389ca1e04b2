package lvm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vmpool/vmpool/storage"
)

// volume is an lvm_thin volume. Its operations are serialised by sem. Of
// cfg, only RevisionsToKeep, RW, Ephemeral and Source change, in
// Reconfigure, under sem and mu; the size changes under mu.
type volume struct {
	p   *thinPool
	sem chan struct{}

	mu  sync.Mutex
	cfg storage.VolumeConfig // cfg.Size is not used: see sz
	sz  int64
	// disabledRunning tells that an origin with snapshots disabled
	// (revisions_to_keep -1) runs: it runs on its committed LV, so
	// nothing on disk says so (as in Qubes).
	disabledRunning bool

	lv, snap, imp string // LV names: vm-NAME-VOL, -snap, -import

	removed bool // guarded by sem
}

func newVolume(p *thinPool, cfg storage.VolumeConfig, vid storage.LVMVID) *volume {
	lv := vid.LV()
	return &volume{p: p, sem: make(chan struct{}, 1), cfg: cfg, sz: cfg.Size,
		lv: lv, snap: lv + snapSuffix, imp: lv + importSuffix}
}

func (v *volume) lock(ctx context.Context) error {
	select {
	case v.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (v *volume) unlock() { <-v.sem }

func (v *volume) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return &storage.Error{Op: op, Pool: v.p.name, VID: v.cfg.VID, Err: err}
}

// do runs fn as operation op under the pool's in-flight count and the
// volume's lock, with the pool's report, and wraps its error.
func (v *volume) do(ctx context.Context, op string, fn func(r report) error) error {
	if err := ctx.Err(); err != nil {
		return v.wrap(op, err)
	}
	if err := v.p.begin(); err != nil {
		return v.wrap(op, err)
	}
	defer v.p.end()
	if err := v.lock(ctx); err != nil {
		return v.wrap(op, err)
	}
	defer v.unlock()
	if v.removed {
		return v.wrap(op, fmt.Errorf("volume was removed: %w", storage.ErrNotFound))
	}
	r, err := v.p.cached(ctx)
	if err != nil {
		return v.wrap(op, err)
	}
	return v.wrap(op, fn(r))
}

// run executes one plan as a batch of its own.
func (v *volume) run(ctx context.Context, pl *plan) error {
	return v.p.execute(ctx, []*plan{pl})[0]
}

func (v *volume) conf() storage.VolumeConfig {
	v.mu.Lock()
	defer v.mu.Unlock()
	c := v.cfg
	c.Size = v.sz
	if c.RevisionsToKeep != nil {
		n := *c.RevisionsToKeep
		c.RevisionsToKeep = &n
	}
	if c.Ephemeral != nil {
		b := *c.Ephemeral
		c.Ephemeral = &b
	}
	return c
}

func (v *volume) setSize(n int64) {
	v.mu.Lock()
	v.sz = n
	v.mu.Unlock()
}

func (v *volume) keep() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return *v.cfg.RevisionsToKeep
}

func (v *volume) setDisabledRunning(b bool) {
	v.mu.Lock()
	v.disabledRunning = b
	v.mu.Unlock()
}

// diskSize is the size of a save_on_stop volume's running or committed
// LV, else the configured size (Qubes' ThinVolume.size).
func (v *volume) diskSize(r report) int64 {
	if v.cfg.SnapOnStart || v.cfg.SaveOnStop {
		if l, ok := r[v.snap]; ok {
			return l.Size
		}
	}
	if v.cfg.SaveOnStop {
		if l, ok := r[currentLV(r, v.lv)]; ok {
			return l.Size
		}
	}
	if !v.cfg.SnapOnStart && !v.cfg.SaveOnStop {
		if l, ok := r[v.lv]; ok {
			return l.Size
		}
	}
	return v.conf().Size
}

// sourceLV returns the committed LV of a snapshot's source.
func (v *volume) sourceLV(r report) (string, error) {
	s, err := storage.ParseLVMVID(v.conf().Source)
	if err != nil {
		return "", err
	}
	cur := currentLV(r, s.LV())
	if _, ok := r[cur]; !ok {
		return "", fmt.Errorf("volume %s/%s missing: %w", v.p.vg, cur, storage.ErrNotFound)
	}
	return cur, nil
}

// isDirty: a save_on_stop volume whose -snap exists (Qubes' is_dirty).
func (v *volume) isDirty(r report) bool {
	_, ok := r[v.snap]
	return v.cfg.SaveOnStop && ok
}

func (v *volume) isRunning(r report) bool {
	switch v.cfg.Kind() {
	case storage.Volatile:
		_, ok := r[v.lv]
		return ok
	case storage.Origin:
		v.mu.Lock()
		dr := v.disabledRunning
		v.mu.Unlock()
		if dr {
			return true
		}
	}
	_, ok := r[v.snap]
	return ok
}

// Config implements storage.Volume.
func (v *volume) Config() storage.VolumeConfig { return v.conf() }

// Ephemeral applies the pool's ephemeral_volatile to writable volatile
// volumes.
func (v *volume) Ephemeral() bool {
	c := v.conf()
	if c.Ephemeral != nil {
		return *c.Ephemeral
	}
	if c.SnapOnStart || c.SaveOnStop || !c.RW {
		return false
	}
	return v.p.ephemeralVolatile.Load()
}

// BlockDevice is the /dev/mapper node of the -snap LV of a snapshot or
// origin (the committed LV itself with snapshots disabled) and of a
// volatile volume's LV, as Qubes' block_device.
func (v *volume) BlockDevice() storage.BlockDevice {
	c := v.conf()
	lv := v.lv
	if (c.SnapOnStart || c.SaveOnStop) && !c.SnapshotsDisabled() {
		lv = v.snap
	}
	return storage.BlockDevice{Path: mapperPath(v.p.vg, lv), Name: c.Name, RW: c.RW, DevType: "disk"}
}

// EncryptedName implements storage.EncryptedNamer: the name Qubes'
// lvm_thin gives an ephemeral volume's dm-crypt mapping
// (ThinVolume.encrypted_volume_path): the vid's volume group and LV with
// "-" doubled, joined by "-", then "@crypt", whatever the VM.
func (v *volume) EncryptedName(string) string {
	return strings.ReplaceAll(v.p.vg, "-", "--") + "-" + strings.ReplaceAll(v.lv, "-", "--") + "@crypt"
}

// Batch returns the volume's pool, which starts and stops its volumes in
// batches (see storage.Set).
func (v *volume) Batch() storage.Batch { return v.p }

// Create makes an origin's thin LV of the configured size; it refuses
// (ErrExists) when the vid has LVs already. A snapshot's or volatile
// volume's leftover running LV is removed.
func (v *volume) Create(ctx context.Context) error {
	return v.do(ctx, "create", func(r report) error {
		c := v.conf()
		switch c.Kind() {
		case storage.Origin:
			if c.Size <= 0 {
				return fmt.Errorf("%w: volume %q: an origin needs a size", storage.ErrInvalidConfig, c.Name)
			}
			if have := v.ownLVs(r); len(have) > 0 {
				return fmt.Errorf("logical volumes %s exist already; remove the volume first: %w", lvList(have), storage.ErrExists)
			}
			return v.run(ctx, &plan{v: v, cmds: [][]string{v.p.cmdCreate(v.lv, c.Size)},
				check: func(r report) error { return v.want(r, v.lv) },
				undo:  func(r report) [][]string { return nil },
			})
		case storage.Snapshot:
			return v.run(ctx, v.removePlan(r, v.snap))
		default:
			return v.run(ctx, v.removePlan(r, v.lv))
		}
	})
}

// ownLVs returns the names of the volume's LVs in r: committed, running,
// import and revisions.
func (v *volume) ownLVs(r report) []string {
	var out []string
	for _, name := range []string{v.lv, v.snap, v.imp} {
		if _, ok := r[name]; ok {
			out = append(out, name)
		}
	}
	for _, rev := range revisionsOf(r, v.lv) {
		out = append(out, rev.lv)
	}
	return out
}

// want checks that each of lvs exists.
func (v *volume) want(r report, lvs ...string) error {
	for _, lv := range lvs {
		if _, ok := r[lv]; !ok {
			return missing(v.p.vg, lv)
		}
	}
	return nil
}

// gone checks that none of lvs exists.
func (v *volume) gone(r report, lvs ...string) error {
	for _, lv := range lvs {
		if _, ok := r[lv]; ok {
			return fmt.Errorf("logical volume %s/%s is still there after the command", v.p.vg, lv)
		}
	}
	return nil
}

// removePlan removes those of lvs that exist, after discarding their
// data.
func (v *volume) removePlan(r report, lvs ...string) *plan {
	var have []string
	for _, lv := range lvs {
		if _, ok := r[lv]; ok {
			have = append(have, lv)
		}
	}
	pl := &plan{v: v, discard: have, check: func(r report) error { return v.gone(r, have...) }}
	for _, lv := range have {
		pl.cmds = append(pl.cmds, v.p.cmdRemove(lv))
	}
	return pl
}

// Remove deletes all the volume's LVs (running, import, revisions,
// committed) and forgets it in its pool.
func (v *volume) Remove(ctx context.Context) error {
	return v.do(ctx, "remove", func(r report) error {
		if err := v.run(ctx, v.removePlan(r, v.ownLVs(r)...)); err != nil {
			return err
		}
		v.removed = true
		v.setDisabledRunning(false)
		v.p.mu.Lock()
		if v.p.volumes[v.cfg.VID] == v {
			delete(v.p.volumes, v.cfg.VID)
		}
		v.p.mu.Unlock()
		return nil
	})
}

// Verify checks that the LV a start needs exists: a snapshot's source's,
// an origin's own (Qubes' verify: "volume VG/LV missing").
func (v *volume) Verify(ctx context.Context) error {
	return v.do(ctx, "verify", func(r report) error { return v.verify(r) })
}

func (v *volume) verify(r report) error {
	switch {
	case v.cfg.SnapOnStart:
		_, err := v.sourceLV(r)
		return err
	case v.cfg.SaveOnStop:
		cur := currentLV(r, v.lv)
		if _, ok := r[cur]; !ok {
			return fmt.Errorf("volume %s/%s missing: %w", v.p.vg, cur, storage.ErrNotFound)
		}
	}
	return nil
}

// IsRunning implements storage.Volume.
func (v *volume) IsRunning(ctx context.Context) (bool, error) {
	var b bool
	err := v.read(ctx, "is running", func(r report) { b = v.isRunning(r) })
	return b, err
}

// IsDirty implements storage.Volume.
func (v *volume) IsDirty(ctx context.Context) (bool, error) {
	var b bool
	err := v.read(ctx, "is dirty", func(r report) { b = v.isDirty(r) })
	return b, err
}

// IsOutdated: a running snapshot whose -snap's origin is no longer its
// source's committed LV (Qubes' is_outdated).
func (v *volume) IsOutdated(ctx context.Context) (bool, error) {
	var b bool
	err := v.read(ctx, "is outdated", func(r report) {
		if !v.cfg.SnapOnStart {
			return
		}
		l, ok := r[v.snap]
		if !ok {
			return
		}
		s, err := storage.ParseLVMVID(v.conf().Source)
		b = err == nil && l.Origin != currentLV(r, s.LV())
	})
	return b, err
}

// read runs fn with the pool's report, without the volume's lock.
func (v *volume) read(ctx context.Context, op string, fn func(r report)) error {
	if err := v.p.begin(); err != nil {
		return v.wrap(op, err)
	}
	defer v.p.end()
	r, err := v.p.cached(ctx)
	if err != nil {
		return v.wrap(op, err)
	}
	fn(r)
	return nil
}

// Size is the size of the running LV, else the committed one, else the
// configured size (Qubes' ThinVolume.size).
func (v *volume) Size(ctx context.Context) (int64, error) {
	var n int64
	err := v.read(ctx, "size", func(r report) { n = v.diskSize(r) })
	return n, err
}

// Usage is what the volume's LV in use has allocated: a running volume's
// (-snap, a volatile volume's LV), else the committed one (Qubes reports
// the committed LV's even while it runs). An active LV's figure is exact,
// from its thin target's mapped sectors (dmsetup status); an inactive
// one's is lv_size × data_percent from a fresh report, as Qubes computes
// it (to 0.01% of the size).
func (v *volume) Usage(ctx context.Context) (int64, error) {
	if err := v.p.begin(); err != nil {
		return 0, v.wrap("usage", err)
	}
	defer v.p.end()
	r, err := v.p.refresh(ctx)
	if err != nil {
		return 0, v.wrap("usage", err)
	}
	lv := currentLV(r, v.lv)
	if _, ok := r[v.snap]; ok && (v.cfg.SnapOnStart || v.cfg.SaveOnStop) {
		lv = v.snap
	}
	l, ok := r[lv]
	if !ok {
		return 0, nil
	}
	if l.active() {
		name := strings.TrimPrefix(mapperPath(v.p.vg, lv), "/dev/mapper/")
		if out, err := v.p.run.Run(ctx, "dmsetup", "status", "--", name); err == nil {
			if n, ok := parseThinStatus(out); ok {
				return n, nil
			}
		}
	}
	return l.Usage, nil
}

// parseThinStatus reads the bytes a thin device has mapped from its
// dmsetup status line, "START LENGTH thin MAPPED_SECTORS HIGHEST".
func parseThinStatus(out []byte) (int64, bool) {
	f := strings.Fields(string(out))
	if len(f) < 4 || f[2] != "thin" {
		return 0, false
	}
	n, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil || n < 0 || n > 1<<54 {
		return 0, false
	}
	return n * 512, true
}

// Revisions lists the -<epoch>-back LVs, oldest first.
func (v *volume) Revisions(ctx context.Context) ([]storage.Revision, error) {
	var out []storage.Revision
	err := v.read(ctx, "revisions", func(r report) {
		if !v.cfg.SaveOnStop {
			return
		}
		for _, rev := range revisionsOf(r, v.lv) {
			out = append(out, storage.Revision{ID: rev.id, Time: rev.time()})
		}
	})
	return out, err
}

// Reconfigure applies ch; what needs a stopped volume is ErrRunning while
// it runs.
func (v *volume) Reconfigure(ctx context.Context, ch storage.VolumeChange) error {
	return v.do(ctx, "reconfigure", func(r report) error {
		old := v.conf()
		next, err := old.Apply(ch)
		if err != nil {
			return err
		}
		if next.Source != old.Source {
			if err := v.p.checkSource(next.VID, next.Source); err != nil {
				return err
			}
		}
		if v.isRunning(r) {
			switch {
			case old.TogglesSnapshots(next):
				return fmt.Errorf("revisions_to_keep %d to %d enables or disables snapshots: %w", *old.RevisionsToKeep, *next.RevisionsToKeep, storage.ErrRunning)
			case next.RW != old.RW:
				return fmt.Errorf("rw: %w", storage.ErrRunning)
			case next.Source != old.Source:
				return fmt.Errorf("source: %w", storage.ErrRunning)
			}
		}
		v.mu.Lock()
		v.cfg.RevisionsToKeep, v.cfg.RW, v.cfg.Ephemeral, v.cfg.Source = next.RevisionsToKeep, next.RW, next.Ephemeral, next.Source
		v.mu.Unlock()
		return nil
	})
}

// Resize grows (or, with Force, shrinks) the LV the volume uses now: the
// -snap of a running snapshot or origin, a running volatile volume's LV,
// an import in progress, a stopped origin's committed LV (Qubes'
// resize). A stopped snapshot or volatile volume only changes its
// configured size, which the next start of a volatile volume uses.
func (v *volume) Resize(ctx context.Context, size int64, opts storage.ResizeOptions) error {
	return v.do(ctx, "resize", func(r report) error {
		c := v.conf()
		if !c.RW {
			return storage.ErrReadOnly
		}
		if size <= 0 {
			return fmt.Errorf("%w: size %d", storage.ErrInvalidConfig, size)
		}
		cur := v.diskSize(r)
		if size < cur && !opts.Force {
			return fmt.Errorf("%d to %d bytes: %w", cur, size, storage.ErrShrink)
		}
		if size == cur && size == c.Size {
			return nil
		}
		var target string
		_, snap := r[v.snap]
		_, imp := r[v.imp]
		switch {
		case (v.isDirty(r) || c.SnapOnStart) && snap:
			target = v.snap
		case c.Kind() == storage.Volatile:
			if _, ok := r[v.lv]; ok {
				target = v.lv
			}
		case c.SaveOnStop && imp:
			target = v.imp
		case c.SaveOnStop:
			target = currentLV(r, v.lv)
		}
		if target != "" && r[target].Size != size {
			err := v.run(ctx, &plan{v: v, cmds: [][]string{v.p.cmdResize(target, size)},
				check: func(r report) error {
					if l, ok := r[target]; !ok || l.Size < size {
						return fmt.Errorf("logical volume %s/%s did not change its size to %d", v.p.vg, target, size)
					}
					return nil
				}})
			if err != nil {
				return err
			}
		}
		v.setSize(size)
		return nil
	})
}

// Start starts the volume; see the Batch's Start.
func (v *volume) Start(ctx context.Context) error {
	return v.p.Start(ctx, []storage.Volume{v})[0]
}

// Stop stops the volume; see the Batch's Stop.
func (v *volume) Stop(ctx context.Context) error {
	return v.p.Stop(ctx, []storage.Volume{v}, false)[0]
}

// Abort discards the running LV without a commit.
func (v *volume) Abort(ctx context.Context) error {
	return v.p.Stop(ctx, []storage.Volume{v}, true)[0]
}

// startPlan is what Start does, as Qubes' start: an origin that is dirty
// resumes its -snap (activated if it is not); one with snapshots disabled
// prunes its revisions and runs on its committed LV; a snapshot or a clean
// origin gets a fresh -snap, a thin snapshot of its source's or its own
// committed LV; a volatile volume gets a fresh thin LV. An import in
// progress refuses the start (Qubes' abort_if_import_in_progress).
func (v *volume) startPlan(r report) *plan {
	c := v.conf()
	if _, ok := r[v.imp]; ok && c.SaveOnStop {
		return &plan{v: v, err: fmt.Errorf("import operation in progress on %s: %w", c.VID, storage.ErrInUse)}
	}
	if err := v.verify(r); err != nil {
		return &plan{v: v, err: err}
	}
	if c.SnapOnStart {
		if err := v.p.checkNotRunningDisabled(c.Source); err != nil {
			return &plan{v: v, err: err}
		}
	}
	switch {
	case c.SnapshotsDisabled():
		revs := revisionsOf(r, v.lv)
		var names []string
		for _, rev := range revs {
			names = append(names, rev.lv)
		}
		pl := v.removePlan(r, names...)
		cur := currentLV(r, v.lv)
		if !r[cur].active() {
			pl.cmds = append(pl.cmds, v.p.cmdActivate(cur))
		}
		gone := pl.check
		pl.check = func(r report) error {
			if err := gone(r); err != nil {
				return err
			}
			if !r[cur].active() {
				return fmt.Errorf("logical volume %s/%s is not active", v.p.vg, cur)
			}
			return nil
		}
		pl.done = func(report) { v.setDisabledRunning(true) }
		return pl
	case v.isDirty(r):
		pl := &plan{v: v, check: func(r report) error {
			if !r[v.snap].active() {
				return fmt.Errorf("logical volume %s/%s is not active", v.p.vg, v.snap)
			}
			return nil
		}}
		if !r[v.snap].active() {
			pl.cmds = [][]string{v.p.cmdActivate(v.snap)}
		}
		return pl
	case c.SnapOnStart || c.SaveOnStop:
		origin := currentLV(r, v.lv)
		if c.SnapOnStart {
			origin, _ = v.sourceLV(r) // verify found it
		}
		pl := v.removePlan(r, v.snap)
		old := r[v.snap].UUID
		pl.cmds = append(pl.cmds, v.p.cmdClone(origin, v.snap))
		pl.check = func(r report) error {
			l, ok := r[v.snap]
			switch {
			case !ok:
				return missing(v.p.vg, v.snap)
			case l.UUID == old || l.Origin != origin:
				return fmt.Errorf("logical volume %s/%s is not a new snapshot of %s", v.p.vg, v.snap, origin)
			case !l.active():
				return fmt.Errorf("logical volume %s/%s is not active", v.p.vg, v.snap)
			}
			return nil
		}
		pl.undo = func(r report) [][]string {
			if _, ok := r[v.snap]; ok {
				return [][]string{v.p.cmdRemove(v.snap)}
			}
			return nil
		}
		return pl
	default:
		pl := v.removePlan(r, v.lv)
		old := r[v.lv].UUID
		pl.cmds = append(pl.cmds, v.p.cmdCreate(v.lv, c.Size))
		pl.check = func(r report) error {
			l, ok := r[v.lv]
			switch {
			case !ok:
				return missing(v.p.vg, v.lv)
			case l.UUID == old:
				return fmt.Errorf("logical volume %s/%s was not made again", v.p.vg, v.lv)
			case !l.active():
				return fmt.Errorf("logical volume %s/%s is not active", v.p.vg, v.lv)
			}
			return nil
		}
		pl.undo = func(r report) [][]string {
			if _, ok := r[v.lv]; ok {
				return [][]string{v.p.cmdRemove(v.lv)}
			}
			return nil
		}
		return pl
	}
}

// stopPlan is what Stop (abort: Abort) does, as Qubes' stop: an origin
// commits its -snap (unless abort, which removes it), a snapshot removes
// its -snap, a volatile volume its LV. Stopping a stopped volume does
// nothing.
func (v *volume) stopPlan(r report, abort bool) *plan {
	c := v.conf()
	switch {
	case c.Kind() == storage.Origin && c.SnapshotsDisabled():
		return &plan{v: v, check: func(report) error { return nil }, done: func(report) { v.setDisabledRunning(false) }}
	case c.Kind() == storage.Origin && !abort:
		if _, ok := r[v.snap]; !ok {
			return &plan{v: v, check: func(report) error { return nil }, done: func(report) { v.setDisabledRunning(false) }}
		}
		return v.commitPlan(r, v.snap, false)
	case c.SnapOnStart || c.SaveOnStop:
		return v.removePlan(r, v.snap)
	default:
		return v.removePlan(r, v.lv)
	}
}

// commitPlan makes LV from the new committed state, as Qubes' _commit:
// the committed LV, if it exists, is renamed to a new revision
// (-<epoch>-back), then from is renamed (keep: cloned, for an import from
// a volume of the same pool) to the committed LV's name, and the
// revisions beyond revisions_to_keep are pruned (discarded, then
// removed) afterwards. A commit whose second step fails renames the
// revision back, so the volume is as it was.
func (v *volume) commitPlan(r report, from string, keep bool) *plan {
	pl := &plan{v: v}
	var back string
	if _, ok := r[v.lv]; ok {
		back = revisionName(r, v.lv, v.p.now())
		pl.cmds = append(pl.cmds, v.p.cmdRename(v.lv, back))
	}
	fromUUID, oldUUID := r[from].UUID, r[v.lv].UUID
	if keep {
		pl.cmds = append(pl.cmds, v.p.cmdClone(from, v.lv))
	} else {
		pl.cmds = append(pl.cmds, v.p.cmdRename(from, v.lv))
	}
	pl.check = func(r report) error {
		l, ok := r[v.lv]
		switch {
		case !ok:
			return missing(v.p.vg, v.lv)
		case !keep && l.UUID != fromUUID:
			return fmt.Errorf("logical volume %s/%s is not the committed %s", v.p.vg, v.lv, from)
		case keep && (l.Origin != from || l.UUID == oldUUID):
			return fmt.Errorf("logical volume %s/%s is not a snapshot of %s", v.p.vg, v.lv, from)
		}
		if back != "" {
			return v.want(r, back)
		}
		return nil
	}
	pl.undo = func(r report) [][]string {
		_, haveBack := r[back]
		_, haveLV := r[v.lv]
		if back != "" && haveBack && !haveLV {
			return [][]string{v.p.cmdRename(back, v.lv)}
		}
		return nil
	}
	pl.done = func(r report) {
		v.setSize(r[v.lv].Size)
		v.setDisabledRunning(false)
	}
	pl.then = func(r report) *plan { return v.prunePlan(r) }
	return pl
}

// prunePlan removes the revisions beyond revisions_to_keep, oldest first
// (0: all), or nil when there are none to remove.
func (v *volume) prunePlan(r report) *plan {
	k := v.keep()
	if k < 0 {
		return nil
	}
	revs := revisionsOf(r, v.lv)
	if len(revs) <= k {
		return nil
	}
	var names []string
	for _, rev := range revs[:len(revs)-k] {
		names = append(names, rev.lv)
	}
	return v.removePlan(r, names...)
}

// Revert makes revision id (empty: the newest) the committed state, as
// Qubes' revert: the revisions stay as they are and the committed state
// it replaces is dropped. The revision is cloned to -import first, so a
// failure leaves the committed LV as it was.
func (v *volume) Revert(ctx context.Context, id string) error {
	return v.do(ctx, "revert", func(r report) error {
		if !v.cfg.SaveOnStop {
			return fmt.Errorf("a volume that does not save has no revision: %w", storage.ErrNotFound)
		}
		if v.isDirty(r) {
			return fmt.Errorf("cannot revert dirty volume %s, stop the qube first: %w", v.cfg.VID, storage.ErrDirty)
		}
		if _, ok := r[v.imp]; ok {
			return fmt.Errorf("import operation in progress on %s: %w", v.cfg.VID, storage.ErrInUse)
		}
		revs := revisionsOf(r, v.lv)
		if id != "" {
			if err := storage.ValidateRevisionID(id); err != nil {
				return err
			}
		}
		i := slices.IndexFunc(revs, func(rev revision) bool { return rev.id == id })
		if id == "" && len(revs) > 0 {
			i = len(revs) - 1
		}
		if i < 0 {
			if id == "" {
				return fmt.Errorf("volume has no revision: %w", storage.ErrNotFound)
			}
			return fmt.Errorf("revision %q: %w", id, storage.ErrNotFound)
		}
		rev := revs[i].lv
		// First the clone beside the committed LV: if it fails, nothing
		// changed.
		clone := &plan{v: v, cmds: [][]string{v.p.cmdClone(rev, v.imp)},
			check: func(r report) error {
				if l, ok := r[v.imp]; !ok || l.Origin != rev {
					return fmt.Errorf("logical volume %s/%s is not a snapshot of %s", v.p.vg, v.imp, rev)
				}
				return nil
			},
			undo: func(r report) [][]string {
				if _, ok := r[v.imp]; ok {
					return [][]string{v.p.cmdRemove(v.imp)}
				}
				return nil
			}}
		if err := v.run(ctx, clone); err != nil {
			return err
		}
		r, err := v.p.cached(ctx)
		if err != nil {
			return err
		}
		// Then the swap. A failed removal fails the rename too (the name
		// is taken), and the clone is removed; a failed rename is retried
		// once (written without "--"), so the committed LV is not
		// left missing.
		cloneUUID := r[v.imp].UUID
		swap := &plan{v: v}
		if _, ok := r[v.lv]; ok {
			swap.cmds = append(swap.cmds, v.p.cmdRemove(v.lv))
		}
		swap.cmds = append(swap.cmds, v.p.cmdRename(v.imp, v.lv))
		swap.check = func(r report) error {
			if l, ok := r[v.lv]; !ok || l.UUID != cloneUUID {
				return fmt.Errorf("logical volume %s/%s is not the clone of %s", v.p.vg, v.lv, rev)
			}
			return v.gone(r, v.imp)
		}
		swap.undo = func(r report) [][]string {
			_, haveImp := r[v.imp]
			_, haveLV := r[v.lv]
			switch {
			case haveImp && haveLV:
				return [][]string{v.p.cmdRemove(v.imp)}
			case haveImp:
				return [][]string{{"lvrename", v.p.vgLV(v.imp), v.p.vgLV(v.lv)}}
			}
			return nil
		}
		swap.retry = true
		swap.done = func(r report) { v.setSize(r[v.lv].Size) }
		return v.run(ctx, swap)
	})
}

// Start starts vols (volumes of this pool) in one batch: one lvm process
// for all of them, after blkdiscard of the stale running LVs it removes.
func (p *thinPool) Start(ctx context.Context, vols []storage.Volume) []error {
	return p.batch(ctx, "start", vols, func(v *volume, r report) *plan { return v.startPlan(r) })
}

// Stop stops (abort: aborts) vols in one batch: one lvm process for the
// commits and removals and, when revisions are to be pruned, one more
// after blkdiscard of the pruned revisions.
func (p *thinPool) Stop(ctx context.Context, vols []storage.Volume, abort bool) []error {
	op := "stop"
	if abort {
		op = "abort"
	}
	return p.batch(ctx, op, vols, func(v *volume, r report) *plan { return v.stopPlan(r, abort) })
}

// batch locks vols (in vid order), makes each one's plan from the report
// and executes them together.
func (p *thinPool) batch(ctx context.Context, op string, vols []storage.Volume, mk func(*volume, report) *plan) []error {
	errs := make([]error, len(vols))
	own := make([]*volume, len(vols))
	for i, sv := range vols {
		v, ok := sv.(*volume)
		if !ok || v.p != p {
			errs[i] = &storage.Error{Op: op, Pool: p.name, VID: sv.Config().VID, Err: fmt.Errorf("%w: volume is not of this pool", storage.ErrInvalidConfig)}
			continue
		}
		own[i] = v
	}
	fail := func(err error) []error {
		for i, v := range own {
			if v != nil {
				errs[i] = v.wrap(op, err)
			}
		}
		return errs
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	if err := p.begin(); err != nil {
		return fail(err)
	}
	defer p.end()
	order := make([]int, 0, len(own))
	for i, v := range own {
		if v != nil && !slices.ContainsFunc(order, func(j int) bool { return own[j] == v }) {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(a, b int) int {
		if own[a].cfg.VID < own[b].cfg.VID {
			return -1
		}
		return 1
	})
	var locked []*volume
	defer func() {
		for _, v := range locked {
			v.unlock()
		}
	}()
	for _, i := range order {
		if err := own[i].lock(ctx); err != nil {
			return fail(err)
		}
		locked = append(locked, own[i])
	}
	r, err := p.cached(ctx)
	if err != nil {
		return fail(err)
	}
	plans := make([]*plan, len(vols))
	for _, i := range order {
		v := own[i]
		if v.removed {
			errs[i] = v.wrap(op, fmt.Errorf("volume was removed: %w", storage.ErrNotFound))
			continue
		}
		plans[i] = mk(v, r)
	}
	for i, err := range p.execute(ctx, plans) {
		if err != nil {
			errs[i] = own[i].wrap(op, err)
		}
	}
	return errs
}

var errNoImport = errors.New("no import operation in progress")

// checkNotRunningDisabled refuses (ErrRunning) a registered volume vid
// that runs with snapshots disabled: it runs on its committed LV, so
// neither a snapshot of it nor an import from it would be consistent
// (Qubes: "Volume <vid> is running").
func (p *thinPool) checkNotRunningDisabled(vid string) error {
	p.mu.Lock()
	src := p.volumes[vid]
	p.mu.Unlock()
	if src == nil {
		return nil
	}
	src.mu.Lock()
	busy := src.disabledRunning && src.cfg.SnapshotsDisabled()
	src.mu.Unlock()
	if busy {
		return fmt.Errorf("volume %s is running: %w", vid, storage.ErrRunning)
	}
	return nil
}
