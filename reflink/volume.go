package reflink

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/vmpool/vmpool/internal/filepool"
	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// volume is a file-reflink volume. Its operations are serialised by sem.
// Of cfg, only RevisionsToKeep, RW, Ephemeral and Source change, in
// Reconfigure, which holds sem and mu; the size changes under mu alone.
// Code holding sem reads cfg directly; code that does not (Config,
// Verify, IsOutdated, Export, another volume) reads those four fields
// with conf, and the others (VID, Name, SnapOnStart, SaveOnStop), which
// never change, directly.
type volume struct {
	p   *reflinkPool
	sem filepool.VolumeLock

	mu  sync.Mutex
	cfg storage.VolumeConfig // cfg.Size is not used: see sz
	sz  int64

	// Paths: base is dir/vid.
	base, clean, dirty, precache, importPath string

	// Guarded by sem.
	pre     *precacheJob // the queued or running precache clone, if any
	initPre *precacheJob // the one InitVolume queued
	removed bool
}

func newVolume(p *reflinkPool, cfg storage.VolumeConfig) *volume {
	base := filepath.Join(p.dir, filepath.FromSlash(cfg.VID))
	return &volume{
		p:          p,
		sem:        filepool.NewVolumeLock(),
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
func (v *volume) lock(ctx context.Context) error { return v.sem.Lock(ctx) }

func (v *volume) unlock() { v.sem.Unlock() }

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
	if err := v.checkPaths(); err != nil {
		return v.wrap(op, err)
	}
	return v.wrap(op, fn())
}

// checkPaths refuses (storage.ErrUnsafePath) a volume whose directories
// (vm-templates/ or appvms/, the VM's) are symlinks or not directories, or
// whose images (clean, dirty, precache, import; a snapshot's source image
// and its directories) are symlinks or not regular files: nothing the
// driver does may follow a link out of the pool; revisions are checked by
// listing them. Missing paths are fine.
func (v *volume) checkPaths() error {
	vmDir := filepath.Dir(v.base)
	if err := checkDirs(filepath.Dir(vmDir), vmDir); err != nil {
		return err
	}
	if err := checkFiles(v.clean, v.dirty, v.precache, v.importPath); err != nil {
		return err
	}
	if _, err := listRevisions(v.clean); err != nil { // refuses a revision that is no regular file
		return err
	}
	if c := v.conf(); c.SnapOnStart {
		src := v.sourceClean()
		if err := checkDirs(filepath.Dir(filepath.Dir(src)), filepath.Dir(src)); err != nil {
			return err
		}
		return checkFiles(src)
	}
	return nil
}

// checkDirs returns storage.ErrUnsafePath for a path that exists and is
// not a directory (a symlink to one included).
func checkDirs(paths ...string) error { return filepool.CheckDirs(paths...) }

// checkFiles returns storage.ErrUnsafePath for a path that exists and is
// not a regular file.
func checkFiles(paths ...string) error { return filepool.CheckFiles(paths...) }

func (v *volume) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return &storage.Error{Op: op, Pool: v.p.name, VID: v.cfg.VID, Err: err}
}

// conf returns a copy of the configuration with the current configured
// size; the copy shares no pointer with the volume.
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

// diskSize returns the size of a save_on_stop volume's dirty or clean
// image, whichever exists as a regular file, else the configured size.
func (v *volume) diskSize() int64 {
	if v.cfg.SaveOnStop {
		for _, path := range []string{v.dirty, v.clean} {
			if st, err := os.Lstat(path); err == nil && st.Mode().IsRegular() {
				return st.Size()
			}
		}
	}
	return v.cfg.Size
}

func (v *volume) setSize(size int64) {
	v.mu.Lock()
	v.sz = size
	v.mu.Unlock()
}

func (v *volume) keep() int { return *v.cfg.RevisionsToKeep }

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
	return v.p.ephemeralVolatile.Load()
}

// BlockDevice is always the dirty image, as in Qubes.
func (v *volume) BlockDevice() storage.BlockDevice {
	c := v.conf()
	return storage.BlockDevice{Path: v.dirty, Name: c.Name, RW: c.RW, DevType: "disk"}
}

// sourceClean returns the clean image of the snapshot source.
func (v *volume) sourceClean() string {
	return filepath.Join(v.p.dir, filepath.FromSlash(v.conf().Source)) + ".img"
}

// ownTemps returns this volume's "~" files: temporaries of its images and
// revisions, and discarded files not yet deleted.
func (v *volume) ownTemps() ([]string, error) {
	dir := filepath.Dir(v.base)
	if err := checkDirs(filepath.Dir(dir), dir); err != nil {
		return nil, err
	}
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

// queueTemps gives this volume's "~" files to the worker. InitVolume
// calls it (the first Open after a crash), and so does Start.
func (v *volume) queueTemps() error {
	temps, err := v.ownTemps()
	if err != nil {
		return err
	}
	for _, t := range temps {
		v.p.worker.remove(t)
	}
	return nil
}

// handOverTemps gives this volume's "~" files and a pending import to the
// worker: Qubes deletes them at start (_remove_incomplete_images), vmpool
// does so off the start path. Needs sem.
func (v *volume) handOverTemps() error {
	if err := v.queueTemps(); err != nil {
		return err
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

// Create makes an origin's empty sparse clean image of the configured
// size. It refuses (storage.ErrExists) a save_on_stop volume whose vid has
// committed data, running data or revisions on disk: Qubes' create would
// delete them, vmpool never does (a second state or a caller that lost its
// configuration would wipe a VM's disk); Remove deletes them. Leftovers of
// a snapshot or volatile volume and "~" files are removed.
func (v *volume) Create(ctx context.Context) error {
	return v.do(ctx, "create", func() error {
		if err := v.p.checkDir(); err != nil {
			return err
		}
		if v.cfg.SaveOnStop {
			if err := v.checkNoData(); err != nil {
				return err
			}
		}
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

// checkNoData returns an error wrapping storage.ErrExists when the
// volume's clean or dirty image or a revision exists. Needs sem.
func (v *volume) checkNoData() error {
	for _, path := range []string{v.clean, v.dirty} {
		if exists(path) {
			return fmt.Errorf("%s exists: the vid has data, which create never replaces (remove the volume, or replace it explicitly): %w", path, storage.ErrExists)
		}
	}
	revs, err := listRevisions(v.clean)
	if err != nil {
		return err
	}
	if len(revs) > 0 {
		return fmt.Errorf("the vid has %d revisions (%s...), which create never replaces (remove the volume, or replace it explicitly): %w", len(revs), revs[0].path, storage.ErrExists)
	}
	return nil
}

// Remove deletes all images and revisions, forgets the volume and removes
// its VM directory if it is empty. With the pool's directory missing it
// fails (storage.ErrNotFound) and forgets nothing.
func (v *volume) Remove(ctx context.Context) error {
	return v.do(ctx, "remove", func() error {
		// Without the pool's directory (an unmounted mount point) there is
		// nothing to remove now, and forgetting the volume would orphan its
		// images when the directory comes back.
		if err := v.p.checkDir(); err != nil {
			return err
		}
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
	if err := v.checkPaths(); err != nil {
		return v.wrap("verify", err)
	}
	var img string
	switch {
	case v.cfg.SnapOnStart:
		img = v.sourceClean()
	case v.cfg.SaveOnStop:
		img = v.clean
		if v.conf().SnapshotsDisabled() && exists(v.dirty) {
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

// IsRunning reports whether the dirty image exists.
func (v *volume) IsRunning(ctx context.Context) (bool, error) { return exists(v.dirty), nil }

// IsDirty reports whether a save_on_stop volume has a dirty image.
func (v *volume) IsDirty(ctx context.Context) (bool, error) { return v.isDirty(), nil }

// isDirty is Qubes' is_dirty: a save_on_stop volume with a dirty image,
// whose data a start resumes and a stop commits.
func (v *volume) isDirty() bool { return v.cfg.SaveOnStop && exists(v.dirty) }

// IsOutdated reports whether a running snapshot's clean image (a hard
// link to its source's clean image at start) is no longer the source's
// clean image. A stopped volume is never outdated (Qubes' Storage reports
// no outdated volumes for a halted VM; its volume method alone would call
// a stopped snapshot-then-commit volume outdated).
func (v *volume) IsOutdated(ctx context.Context) (bool, error) {
	if !v.cfg.SnapOnStart || !exists(v.dirty) {
		return false, nil
	}
	if err := v.checkPaths(); err != nil {
		return false, v.wrap("is outdated", err)
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
	if err := v.checkPaths(); err != nil {
		return 0, v.wrap("size", err)
	}
	n, err := v.size()
	return n, v.wrap("size", err)
}

// Usage returns the bytes allocated to the dirty image, else the clean
// image, else 0.
func (v *volume) Usage(ctx context.Context) (int64, error) {
	if err := v.checkPaths(); err != nil {
		return 0, v.wrap("usage", err)
	}
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
			return storage.ErrReadOnly
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

// Reconfigure applies ch: revisions_to_keep (to or from -1 only while
// stopped), rw and a snapshot's source (only while stopped) and the
// explicit ephemeral flag. A volume whose snapshots are enabled again gets
// its precache prepared; a lower revisions_to_keep prunes at the next
// commit, as in Qubes.
func (v *volume) Reconfigure(ctx context.Context, ch storage.VolumeChange) error {
	return v.do(ctx, "reconfigure", func() error {
		old := v.conf()
		next, err := old.Apply(ch)
		if err != nil {
			return err
		}
		if next.Source != old.Source {
			if err := filepool.CheckSource(next.Source, next.VID); err != nil {
				return err
			}
		}
		if exists(v.dirty) {
			switch {
			case old.TogglesSnapshots(next):
				return fmt.Errorf("revisions_to_keep %d to %d enables or disables snapshots: %w", *old.RevisionsToKeep, *next.RevisionsToKeep, storage.ErrRunning)
			case next.RW != old.RW:
				return fmt.Errorf("rw: %w", storage.ErrRunning)
			case next.Source != old.Source:
				return fmt.Errorf("source: %w", storage.ErrRunning)
			}
		}
		// Only the fields that may change are written: readers without sem
		// read the others directly.
		v.mu.Lock()
		v.cfg.RevisionsToKeep, v.cfg.RW, v.cfg.Ephemeral, v.cfg.Source = next.RevisionsToKeep, next.RW, next.Ephemeral, next.Source
		v.mu.Unlock()
		if old.TogglesSnapshots(next) {
			v.schedulePrecache()
		}
		return nil
	})
}
