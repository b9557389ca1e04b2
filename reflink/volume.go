package reflink

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// volume is a file-reflink volume. Its operations are serialised by sem.
// cfg never changes after InitVolume, except the size, which sizeMu guards
// so that Config need not wait for an operation.
type volume struct {
	p   *Pool
	sem chan struct{}
	cfg storage.VolumeConfig // cfg.Size is not used: see size

	sizeMu sync.Mutex
	sz     int64

	// Paths: base is dir/vid.
	base, clean, dirty, precache, importPath string

	// Guarded by sem.
	pre     *precacheJob // the queued or running precache clone, if any
	removed bool
}

func newVolume(p *Pool, cfg storage.VolumeConfig) *volume {
	base := filepath.Join(p.dir, filepath.FromSlash(cfg.VID))
	return &volume{
		p:          p,
		sem:        make(chan struct{}, 1),
		cfg:        cfg,
		sz:         cfg.Size,
		base:       base,
		clean:      base + ".img",
		dirty:      base + "-dirty.img",
		precache:   base + "-precache.img",
		importPath: base + "-import.img",
	}
}

// lock takes the volume's lock, or gives up when ctx ends.
func (v *volume) lock(ctx context.Context) error {
	select {
	case v.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (v *volume) unlock() { <-v.sem }

// do runs fn as operation op under the pool's in-flight count and the
// volume's lock, and wraps its error.
func (v *volume) do(ctx context.Context, op string, fn func() error) error {
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
	return v.wrap(op, fn())
}

func (v *volume) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return &storage.Error{Op: op, Pool: v.p.name, VID: v.cfg.VID, Err: err}
}

// conf returns a copy of the configuration with the current configured
// size; the copy shares no pointer with the volume.
func (v *volume) conf() storage.VolumeConfig {
	c := v.cfg
	if c.RevisionsToKeep != nil {
		n := *c.RevisionsToKeep
		c.RevisionsToKeep = &n
	}
	if c.Ephemeral != nil {
		b := *c.Ephemeral
		c.Ephemeral = &b
	}
	v.sizeMu.Lock()
	c.Size = v.sz
	v.sizeMu.Unlock()
	return c
}

func (v *volume) setSize(size int64) {
	v.sizeMu.Lock()
	v.sz = size
	v.sizeMu.Unlock()
}

func (v *volume) keep() int { return *v.cfg.RevisionsToKeep }

// keepsPrecache tells whether commits of this volume prepare a precache
// (as Qubes' _update_precache: every committing volume unless snapshots
// are disabled).
func (v *volume) keepsPrecache() bool { return v.cfg.SaveOnStop && !v.cfg.SnapshotsDisabled() }

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// Config returns the volume's configuration.
func (v *volume) Config() storage.VolumeConfig { return v.conf() }

// Ephemeral applies the pool's ephemeral_volatile default to writable
// volatile volumes.
func (v *volume) Ephemeral() bool {
	c := v.conf()
	if c.Ephemeral != nil {
		return *c.Ephemeral
	}
	if c.SnapOnStart || c.SaveOnStop || !c.RW {
		return false
	}
	return v.p.ephemeralVolatile
}

// BlockDevice is always the dirty image, as in Qubes.
func (v *volume) BlockDevice() storage.BlockDevice {
	c := v.conf()
	return storage.BlockDevice{Path: v.dirty, Name: c.Name, RW: c.RW, DevType: "disk"}
}

// sourceClean returns the clean image of the snapshot source.
func (v *volume) sourceClean() string {
	return filepath.Join(v.p.dir, filepath.FromSlash(v.cfg.Source)) + ".img"
}

// ownTemps returns this volume's "~" files: temporaries of its images and
// revisions, and discarded files not yet deleted.
func (v *volume) ownTemps() ([]string, error) {
	dir := filepath.Dir(v.base)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	cleanName := filepath.Base(v.clean)
	var out []string
	for _, e := range entries {
		name, _, ok := strings.Cut(e.Name(), fsutil.TempSep)
		if !ok {
			continue
		}
		switch {
		case name == cleanName, name == filepath.Base(v.dirty), name == filepath.Base(v.precache),
			name == filepath.Base(v.importPath), strings.HasPrefix(name, cleanName+"."), strings.HasPrefix(name, cleanName+"@"):
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}

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
// unless the volume runs or an up-to-date precache exists. It runs in the
// background, so failures are logged, not returned. Needs sem.
func (v *volume) makePrecache(ctx context.Context) {
	if v.removed || !v.keepsPrecache() || exists(v.dirty) {
		return
	}
	st, err := os.Stat(v.clean)
	if err != nil {
		return
	}
	if pst, err := os.Stat(v.precache); err == nil {
		if samePrecache(st, pst) {
			return
		}
		if err := v.p.discard(v.precache); err != nil {
			v.p.log.Warn().Err(err).Str("vid", v.cfg.VID).Msg("discard stale precache")
			return
		}
	}
	if err := v.p.copy(ctx, v.clean, v.precache, fsutil.CopyOptions{Size: -1, KeepMtime: true}); err != nil {
		v.p.log.Warn().Err(err).Str("vid", v.cfg.VID).Msg("prepare precache")
	}
}

// samePrecache reports whether a precache matches its clean image, by
// mtime and size as in Qubes' _remove_stale_precache.
func samePrecache(clean, pre os.FileInfo) bool {
	return clean.ModTime().Equal(pre.ModTime()) && clean.Size() == pre.Size()
}

// handOverTemps gives this volume's "~" files and a pending import to the
// worker: Qubes deletes them at start (_remove_incomplete_images), vmpool
// does so off the start path. Needs sem.
func (v *volume) handOverTemps() error {
	temps, err := v.ownTemps()
	if err != nil {
		return err
	}
	for _, t := range temps {
		v.p.worker.remove(t)
	}
	return v.p.discard(v.importPath)
}

// removeAllImages deletes every image, revision and "~" file of the
// volume now. Needs sem.
func (v *volume) removeAllImages() error {
	v.cancelPrecache()
	temps, err := v.ownTemps()
	if err != nil {
		return err
	}
	revs, err := listRevisions(v.clean)
	if err != nil {
		return err
	}
	for _, r := range revs {
		temps = append(temps, r.path)
	}
	for _, path := range append(temps, v.importPath, v.clean, v.precache, v.dirty) {
		if err := v.p.remove(path); err != nil {
			return err
		}
	}
	return nil
}

// Create removes whatever images of this vid exist and, for an origin,
// makes an empty sparse clean image of the configured size.
func (v *volume) Create(ctx context.Context) error {
	return v.do(ctx, "create", func() error {
		if err := v.removeAllImages(); err != nil {
			return err
		}
		if v.cfg.Kind() != storage.Origin {
			return nil
		}
		if err := v.p.createSparse(v.clean, v.conf().Size); err != nil {
			return err
		}
		v.schedulePrecache()
		return nil
	})
}

// Remove deletes all images and revisions, forgets the volume and removes
// its VM directory if it is empty.
func (v *volume) Remove(ctx context.Context) error {
	return v.do(ctx, "remove", func() error {
		if err := v.removeAllImages(); err != nil {
			return err
		}
		v.removed = true
		v.p.forget(v.cfg.VID)
		v.p.removeEmptyDir(filepath.Dir(v.base))
		return nil
	})
}

// Verify checks that the image Start needs exists: the source's clean image
// for a snapshot, the own clean (or, while running with snapshots
// disabled, dirty) image for an origin.
func (v *volume) Verify(ctx context.Context) error {
	if err := v.p.begin(); err != nil {
		return v.wrap("verify", err)
	}
	defer v.p.end()
	var img string
	switch {
	case v.cfg.SnapOnStart:
		img = v.sourceClean()
	case v.cfg.SaveOnStop:
		img = v.clean
		if v.cfg.SnapshotsDisabled() && exists(v.dirty) {
			img = v.dirty
		}
	default:
		return nil
	}
	if !exists(img) {
		return v.wrap("verify", fmt.Errorf("%w: missing image file %q", storage.ErrNotFound, img))
	}
	return nil
}

// Start prepares the dirty image: an origin renames its precache (or
// clones its clean image if the precache is missing or stale), a snapshot
// hard-links its source's clean image and clones it, a volatile volume gets
// an empty sparse image. A dirty image that exists already (a crash, a
// double start) is kept.
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
	if exists(v.dirty) {
		return nil
	}
	switch v.cfg.Kind() {
	case storage.Snapshot, storage.SnapshotCommit:
		return v.startSnapshot(ctx)
	case storage.Origin:
		return v.startOrigin(ctx)
	default:
		return v.p.createSparse(v.dirty, v.conf().Size)
	}
}

func (v *volume) startSnapshot(ctx context.Context) error {
	src := v.sourceClean()
	if sv := v.p.lookup(v.cfg.Source); sv != nil && sv.cfg.SnapshotsDisabled() && exists(sv.dirty) {
		return fmt.Errorf("source volume %s is running with snapshots disabled: %w", v.cfg.Source, storage.ErrRunning)
	}
	if !exists(src) {
		return fmt.Errorf("%w: missing image file %q of source %s", storage.ErrNotFound, src, v.cfg.Source)
	}
	if err := v.p.discard(v.clean); err != nil {
		return err
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
			err = fmt.Errorf("%w: %v", storage.ErrNotFound, err)
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

// commit makes the image at path the clean image: path is fsynced, the old
// clean image is kept as a revision by a durable hard link (unless
// revisions_to_keep is 0), revisions beyond revisions_to_keep are
// discarded, and path replaces the clean image. Needs sem.
func (v *volume) commit(path string) error {
	if err := fsutil.SyncFile(path); err != nil {
		return err
	}
	v.p.crashPoint("commit-synced")
	revs, err := listRevisions(v.clean)
	if err != nil {
		return err
	}
	if revs, err = v.addRevision(revs); err != nil {
		return err
	}
	if err := v.pruneRevisions(revs, v.keep()); err != nil {
		return err
	}
	v.p.crashPoint("commit-pruned")
	return v.replaceClean(path)
}

// replaceClean renames the image at path over the clean image: the
// precache of the old one is discarded, the directory fsynced once, the
// configured size follows the new image, and a new precache is queued.
// Needs sem.
func (v *volume) replaceClean(path string) error {
	v.cancelPrecache()
	if err := v.p.discard(v.precache); err != nil {
		return err
	}
	v.p.crashPoint("precache-discarded")
	if err := v.p.renameNoSync(path, v.clean); err != nil {
		return err
	}
	v.p.crashPoint("clean-replaced")
	if err := fsutil.SyncDir(filepath.Dir(v.clean)); err != nil {
		return err
	}
	if st, err := os.Stat(v.clean); err == nil {
		v.setSize(st.Size())
	}
	v.schedulePrecache()
	return nil
}

// addRevision keeps the current clean image as the next revision, by hard
// link, unless revisions_to_keep is 0 or there is no clean image. If the
// newest revision already is the clean image's inode (a commit repeated
// after a crash), none is added. The link is made durable before the
// caller replaces the clean image, so a crash never loses the old state.
// revs are the current revisions; it returns them with the new one.
func (v *volume) addRevision(revs []revision) ([]revision, error) {
	if v.keep() == 0 {
		return revs, nil
	}
	st, err := os.Stat(v.clean)
	if errors.Is(err, fs.ErrNotExist) {
		return revs, nil
	}
	if err != nil {
		return revs, err
	}
	if n := len(revs); n > 0 {
		if rst, err := os.Stat(revs[n-1].path); err == nil && os.SameFile(st, rst) {
			return revs, nil
		}
	}
	n, t := nextRevision(revs), st.ModTime().Truncate(time.Second)
	dst := revisionPath(v.clean, n, t)
	if err := v.p.linkNoSync(v.clean, dst); err != nil {
		return revs, err
	}
	v.p.crashPoint("revision-linked")
	if err := fsutil.SyncDir(filepath.Dir(v.clean)); err != nil {
		return revs, err
	}
	r := revision{Revision: storage.Revision{ID: strconv.Itoa(n), Time: t.UTC()}, path: dst, n: n}
	return append(revs, r), nil
}

// pruneRevisions discards those of revs that Qubes'
// _prune_revisions(keep) deletes. Needs sem.
func (v *volume) pruneRevisions(revs []revision, keep int) error {
	for _, r := range toPrune(revs, keep) {
		if err := v.p.discard(r.path); err != nil {
			return err
		}
	}
	return nil
}

// IsRunning reports whether the dirty image exists.
func (v *volume) IsRunning(ctx context.Context) (bool, error) { return exists(v.dirty), nil }

// IsDirty reports whether a save_on_stop volume has a dirty image.
func (v *volume) IsDirty(ctx context.Context) (bool, error) {
	return v.cfg.SaveOnStop && exists(v.dirty), nil
}

// IsOutdated reports whether a running snapshot's clean image (a hard
// link to its source's clean image at start) is no longer the source's
// clean image. A stopped volume is never outdated (Qubes' Storage reports
// no outdated volumes for a halted VM; its volume method alone would call
// a stopped snapshot-then-commit volume outdated).
func (v *volume) IsOutdated(ctx context.Context) (bool, error) {
	if !v.cfg.SnapOnStart || !exists(v.dirty) {
		return false, nil
	}
	src, err1 := os.Stat(v.sourceClean())
	own, err2 := os.Stat(v.clean)
	if err1 != nil || err2 != nil {
		return false, nil
	}
	return !os.SameFile(src, own), nil
}

// size returns the size of the dirty image, else the clean image, else
// the configured size.
func (v *volume) size() (int64, error) {
	for _, path := range []string{v.dirty, v.clean} {
		st, err := os.Stat(path)
		if err == nil {
			return st.Size(), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
	}
	return v.conf().Size, nil
}

// Size returns the size of the dirty image, else of the clean image, else
// the configured size.
func (v *volume) Size(ctx context.Context) (int64, error) {
	n, err := v.size()
	return n, v.wrap("size", err)
}

// Usage returns the bytes allocated to the dirty image, else the clean
// image, else 0.
func (v *volume) Usage(ctx context.Context) (int64, error) {
	for _, path := range []string{v.dirty, v.clean} {
		st, err := os.Stat(path)
		if err == nil {
			return fsutil.Allocated(st), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return 0, v.wrap("usage", err)
		}
	}
	return 0, nil
}

// Revisions lists the revisions, seed-era ones first, then by number.
func (v *volume) Revisions(ctx context.Context) ([]storage.Revision, error) {
	revs, err := listRevisions(v.clean)
	if err != nil {
		return nil, v.wrap("revisions", err)
	}
	out := make([]storage.Revision, len(revs))
	for i, r := range revs {
		out[i] = r.Revision
	}
	return out, nil
}

// Revert makes revision id (the newest for "") the clean image; the
// current clean image is kept as a new revision first (no pruning).
func (v *volume) Revert(ctx context.Context, id string) error {
	if id != "" {
		if err := storage.ValidateRevisionID(id); err != nil {
			return v.wrap("revert", err)
		}
	}
	return v.do(ctx, "revert", func() error {
		if v.cfg.SaveOnStop && exists(v.dirty) {
			return fmt.Errorf("cannot revert: %s is not cleanly stopped: %w", v.cfg.VID, storage.ErrDirty)
		}
		revs, err := listRevisions(v.clean)
		if err != nil {
			return err
		}
		var target *revision
		for i := range revs {
			if id == "" || revs[i].ID == id {
				target = &revs[i]
			}
		}
		if target == nil {
			if id == "" {
				return fmt.Errorf("no revision to revert to: %w", storage.ErrNotFound)
			}
			return fmt.Errorf("revision %q: %w", id, storage.ErrNotFound)
		}
		if _, err := v.addRevision(revs); err != nil {
			return err
		}
		return v.replaceClean(target.path)
	})
}

// Resize changes the size of a writable volume. A running image grows in
// place and its loop devices are told; a stopped origin gets a new clean
// inode (clone and truncate), never a change in place. Shrinking needs
// opts.Force.
func (v *volume) Resize(ctx context.Context, size int64, opts storage.ResizeOptions) error {
	if size < 0 {
		return v.wrap("resize", fmt.Errorf("%w: negative size %d", storage.ErrInvalidConfig, size))
	}
	return v.do(ctx, "resize", func() error {
		if !v.cfg.RW {
			return fmt.Errorf("cannot resize: %s: %w", v.cfg.VID, storage.ErrReadOnly)
		}
		cur, err := v.size()
		if err != nil {
			return err
		}
		if size < cur && !opts.Force {
			return fmt.Errorf("%d bytes to %d bytes: %w", cur, size, storage.ErrShrink)
		}
		if exists(v.dirty) {
			if err := fsutil.Truncate(v.dirty, size); err != nil {
				return err
			}
			devs, err := fsutil.UpdateLoopCapacity(v.dirty)
			v.p.log.Info().Err(err).Str("op", "loop-capacity").Str("src", v.dirty).Strs("devices", devs).Msg("loop-capacity")
			if err != nil {
				return err
			}
		} else if v.cfg.Kind() == storage.Origin {
			v.cancelPrecache()
			if err := v.p.copy(ctx, v.clean, v.clean, fsutil.CopyOptions{Size: size}); err != nil {
				return err
			}
			v.p.crashPoint("resize-copied")
			if err := v.p.discard(v.precache); err != nil {
				return err
			}
			v.schedulePrecache()
		}
		v.setSize(size)
		return nil
	})
}

// Export returns the clean image of a save_on_stop volume.
func (v *volume) Export(ctx context.Context) (string, error) {
	if !v.cfg.SaveOnStop {
		return "", v.wrap("export", fmt.Errorf("cannot export: %s is not save_on_stop: %w", v.cfg.VID, storage.ErrUnsupported))
	}
	if !exists(v.clean) {
		if v.cfg.SnapshotsDisabled() && exists(v.dirty) {
			return "", v.wrap("export", fmt.Errorf("it runs with snapshots disabled: %w", storage.ErrDirty))
		}
		return "", v.wrap("export", fmt.Errorf("%w: missing image file %q", storage.ErrNotFound, v.clean))
	}
	return v.clean, nil
}

// ExportEnd does nothing: the clean image is never changed in place.
func (v *volume) ExportEnd(ctx context.Context, path string) error { return nil }

// ImportData makes an empty sparse import image of size bytes and returns
// its path. The volume must be save_on_stop and not running.
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
		return fmt.Errorf("cannot import: %s is not save_on_stop: %w", v.cfg.VID, storage.ErrUnsupported)
	}
	if exists(v.dirty) {
		return fmt.Errorf("cannot import data to running volume %s, stop it first: %w", v.cfg.VID, storage.ErrDirty)
	}
	return nil
}

// ImportDataEnd commits the import image (success) or discards it.
func (v *volume) ImportDataEnd(ctx context.Context, success bool) error {
	return v.do(ctx, "import data end", func() error {
		if !exists(v.importPath) {
			return fmt.Errorf("no import in progress on %s: %w", v.cfg.VID, storage.ErrNotFound)
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
			return v.wrap("import volume", fmt.Errorf("volume %s must be stopped before importing its data: %w", sc.VID, storage.ErrRunning))
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
