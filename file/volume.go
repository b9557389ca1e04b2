package file

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmpool/vmpool/internal/filepool"
	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// runDir is the directory below dir_path that holds a marker for each
// running volume: Qubes keeps the same fact outside the pool
// (/var/run/qubes/volume-running-<pool:vid>), and its file driver's own
// files cannot tell a running volume from a stopped one (the cow exists
// either way). A marker holds the path of the volume's block device.
const runDir = ".vmpool-running"

// volume is a file volume. Its operations are serialised by sem. Of cfg,
// only RevisionsToKeep, RW, Ephemeral and Source change, in Reconfigure,
// which holds sem and mu; the size changes under mu alone.
type volume struct {
	p   *filePool
	sem filepool.VolumeLock

	mu      sync.Mutex
	cfg     storage.VolumeConfig // cfg.Size is not used: see sz
	sz      int64
	exports int // Export calls not yet ended

	// Paths: base is dir/vid. img is the volume's own image (a snapshot
	// runs on its source's).
	base, img, cow, old, importPath, marker string

	removed bool // guarded by sem
}

func newVolume(p *filePool, cfg storage.VolumeConfig) *volume {
	base := filepath.Join(p.dir, filepath.FromSlash(cfg.VID))
	cow := base + "-cow.img"
	return &volume{
		p:          p,
		sem:        filepool.NewVolumeLock(),
		cfg:        cfg,
		sz:         cfg.Size,
		base:       base,
		img:        base + ".img",
		cow:        cow,
		old:        cow + ".old",
		importPath: base + "-import.img",
		marker:     filepath.Join(p.dir, runDir, markerName(cfg.VID)),
	}
}

// markerName escapes a vid as Qubes names its running markers: "-"
// becomes "--" and "/" becomes "-".
func markerName(vid string) string {
	return strings.ReplaceAll(strings.ReplaceAll(vid, "-", "--"), "/", "-")
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

func (v *volume) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return &storage.Error{Op: op, Pool: v.p.name, VID: v.cfg.VID, Err: err}
}

// checkPaths refuses (storage.ErrUnsafePath) a volume whose directories
// are symlinks or not directories, or whose files (image, cow, revision,
// import, running marker; a snapshot's source image and cow) are symlinks
// or not regular files. Missing paths are fine.
func (v *volume) checkPaths() error {
	vmDir := filepath.Dir(v.base)
	if err := filepool.CheckDirs(filepath.Dir(vmDir), vmDir, filepath.Dir(v.marker)); err != nil {
		return err
	}
	if err := filepool.CheckFiles(v.img, v.cow, v.old, v.importPath, v.marker); err != nil {
		return err
	}
	if c := v.conf(); c.SnapOnStart {
		src := v.sourceBase()
		if err := filepool.CheckDirs(filepath.Dir(filepath.Dir(src)), filepath.Dir(src)); err != nil {
			return err
		}
		return filepool.CheckFiles(src+".img", src+"-cow.img")
	}
	return nil
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

func (v *volume) setSize(size int64) {
	v.mu.Lock()
	v.sz = size
	v.mu.Unlock()
}

// sourceBase returns dir/source of a snapshot volume.
func (v *volume) sourceBase() string {
	return filepath.Join(v.p.dir, filepath.FromSlash(v.conf().Source))
}

// path is the image the volume's VM runs on: a snapshot's source image,
// else its own (Qubes' FileVolume.path).
func (v *volume) path() string {
	if v.cfg.SnapOnStart {
		return v.sourceBase() + ".img"
	}
	return v.img
}

// sourceCow is the cow of a snapshot's source.
func (v *volume) sourceCow() string { return v.sourceBase() + "-cow.img" }

// usesDM tells whether the volume runs on a device-mapper device: an
// origin with snapshots and a snapshot volume; volatile volumes and
// origins with snapshots disabled hand the VM their image.
func (v *volume) usesDM(c storage.VolumeConfig) bool {
	return c.Kind() == storage.Snapshot || c.Kind() == storage.Origin && !c.SnapshotsDisabled()
}

// diskSize returns the size of a save_on_stop volume's image if it exists
// as a regular file, else the configured size.
func (v *volume) diskSize() int64 {
	if v.cfg.SaveOnStop {
		if st, err := os.Lstat(v.img); err == nil && st.Mode().IsRegular() {
			return st.Size()
		}
	}
	return v.cfg.Size
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// running reports whether the volume's running marker exists.
func (v *volume) running() bool { return exists(v.marker) }

// runningDevice returns the block device recorded in the running marker,
// or "" (not running, or no device-mapper device).
func (v *volume) runningDevice() string {
	b, err := os.ReadFile(v.marker)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// markRunning writes the running marker durably, recording dev.
func (v *volume) markRunning(dev string) error {
	if _, err := v.p.mkdir(filepath.Dir(v.marker)); err != nil {
		return err
	}
	tmp, err := fsutil.CreateTemp(v.marker)
	if err != nil {
		return err
	}
	_, err = tmp.WriteString(dev + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = v.p.rename(tmp.Name(), v.marker)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
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

// BlockDevice describes the device the VM gets, as Qubes' file.py: the
// image itself for a volatile volume and an origin with snapshots
// disabled, /dev/mapper/origin-<dev:ino of the image> for an origin,
// /dev/mapper/snapshot-<image>-<source cow>-<cow> for a snapshot (each
// <dev:ino> the hexadecimal device and decimal inode number of the file).
// A running volume's is the device its start made; there is no block
// script.
func (v *volume) BlockDevice() storage.BlockDevice {
	c := v.conf()
	bd := storage.BlockDevice{Name: c.Name, RW: c.RW, DevType: "disk"}
	if !v.usesDM(c) {
		bd.Path = v.path()
		return bd
	}
	if dev := v.runningDevice(); dev != "" {
		bd.Path = dev
		return bd
	}
	bd.Path, _ = v.devicePath()
	return bd
}

// devicePath computes the device-mapper path of the volume from its
// files, as Qubes' _block_device_path.
func (v *volume) devicePath() (string, error) {
	if v.cfg.SnapOnStart {
		return snapshotPath(v.path(), v.sourceCow(), v.cow)
	}
	return originPath(v.img)
}

// Create makes the volume's image: an empty sparse <vid>.img of the
// configured size and mode 0664, except for a snapshot, which runs on its
// source's. It refuses (storage.ErrExists) a save_on_stop volume whose
// vid has an image, a revision or a running marker: Qubes' create fails on
// an existing image too (IOError), and vmpool never replaces data; Remove
// deletes it. A snapshot or volatile volume is stopped first (its device
// removed) and its leftovers are deleted.
func (v *volume) Create(ctx context.Context) error {
	return v.do(ctx, "create", func() error {
		if err := filepool.CheckDir(v.p.dir); err != nil {
			return err
		}
		c := v.conf()
		if c.Size <= 0 && !c.SnapOnStart {
			return fmt.Errorf("%w: volume size must be > 0", storage.ErrInvalidConfig)
		}
		if c.SaveOnStop {
			for _, path := range []string{v.img, v.old, v.marker} {
				if exists(path) {
					return fmt.Errorf("%s exists: the vid has data, which create never replaces (remove the volume, or replace it explicitly): %w", path, storage.ErrExists)
				}
			}
		} else if err := v.stop(ctx, false); err != nil {
			return err
		}
		for _, path := range []string{v.importPath, v.cow, v.old} {
			if err := v.p.remove(path); err != nil {
				return err
			}
		}
		if c.SnapOnStart {
			return nil
		}
		return v.p.createSparse(v.img, c.Size, imageMode)
	})
}

// Remove stops the volume without a commit (its devices are removed),
// deletes its image (not a snapshot's source's), cow, revision and import
// files, forgets the volume and removes its VM directory if it is empty.
// With the pool's directory missing it fails (storage.ErrNotFound) and
// forgets nothing.
func (v *volume) Remove(ctx context.Context) error {
	return v.do(ctx, "remove", func() error {
		if err := filepool.CheckDir(v.p.dir); err != nil {
			return err
		}
		if err := v.stop(ctx, false); err != nil {
			return err
		}
		paths := []string{v.importPath, v.cow, v.old}
		if !v.cfg.SnapOnStart {
			paths = append(paths, v.img)
		}
		for _, path := range paths {
			if err := v.p.remove(path); err != nil {
				return err
			}
		}
		v.removed = true
		v.p.forget(v.cfg.VID)
		v.p.removeEmptyDir(filepath.Dir(v.base))
		return nil
	})
}

// Verify checks that the image Start needs exists (Qubes: "Missing image
// file"): the source's image for a snapshot, the own image for an origin.
func (v *volume) Verify(ctx context.Context) error {
	if err := v.p.begin(); err != nil {
		return v.wrap("verify", err)
	}
	defer v.p.end()
	if err := v.checkPaths(); err != nil {
		return v.wrap("verify", err)
	}
	if !v.cfg.SnapOnStart && !v.cfg.SaveOnStop {
		return nil
	}
	if img := v.path(); !exists(img) {
		return v.wrap("verify", fmt.Errorf("%w: missing image file %q", storage.ErrNotFound, img))
	}
	return nil
}

// IsRunning reports whether the volume's running marker exists.
func (v *volume) IsRunning(ctx context.Context) (bool, error) { return v.running(), nil }

// IsDirty is Qubes' is_dirty: a save_on_stop volume whose cow holds more
// than the empty exception store the kernel writes when it activates the
// snapshot (see cowDirty), which is after the VM wrote to it.
func (v *volume) IsDirty(ctx context.Context) (bool, error) {
	if !v.cfg.SaveOnStop {
		return false, nil
	}
	if err := v.checkPaths(); err != nil {
		return false, v.wrap("is dirty", err)
	}
	dirty, err := cowDirty(v.cow)
	return dirty, v.wrap("is dirty", err)
}

// IsOutdated is always false, as Qubes' file.py says.
func (v *volume) IsOutdated(ctx context.Context) (bool, error) { return false, nil }

// size is the size of the image the volume runs on (a snapshot's source
// image), else the configured size (Qubes' FileVolume.size).
func (v *volume) size() (int64, error) {
	st, err := os.Stat(v.path())
	if err == nil {
		return st.Size(), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	return v.conf().Size, nil
}

// Size returns the size of the image the volume runs on, else the
// configured size.
func (v *volume) Size(ctx context.Context) (int64, error) {
	if err := v.checkPaths(); err != nil {
		return 0, v.wrap("size", err)
	}
	n, err := v.size()
	return n, v.wrap("size", err)
}

// Usage returns the bytes allocated as Qubes counts them: the cow of an
// origin or snapshot, plus the own image of an origin or volatile volume.
func (v *volume) Usage(ctx context.Context) (int64, error) {
	if err := v.checkPaths(); err != nil {
		return 0, v.wrap("usage", err)
	}
	var paths []string
	if v.cfg.SaveOnStop || v.cfg.SnapOnStart {
		paths = append(paths, v.cow)
	}
	if !v.cfg.SnapOnStart {
		paths = append(paths, v.img)
	}
	var n int64
	for _, path := range paths {
		st, err := os.Lstat(path)
		if err == nil {
			n += fsutil.Allocated(st)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return 0, v.wrap("usage", err)
		}
	}
	return n, nil
}

// Revisions returns the one revision a file volume can have, "old" (its
// previous cow, <vid>-cow.img.old), timed by its ctime as in Qubes.
func (v *volume) Revisions(ctx context.Context) ([]storage.Revision, error) {
	if err := v.checkPaths(); err != nil {
		return nil, v.wrap("revisions", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(v.old, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, v.wrap("revisions", &os.PathError{Op: "lstat", Path: v.old, Err: err})
	}
	return []storage.Revision{{ID: revisionID, Time: time.Unix(st.Ctim.Sec, 0).UTC()}}, nil
}

// revisionID is the id of a file volume's revision.
const revisionID = "old"

// Revert is not implemented by the file driver (Qubes' neither):
// storage.ErrUnsupported. A malformed id is storage.ErrInvalidConfig.
func (v *volume) Revert(ctx context.Context, id string) error {
	if id != "" {
		if err := storage.ValidateRevisionID(id); err != nil {
			return v.wrap("revert", err)
		}
	}
	return v.wrap("revert", fmt.Errorf("the file driver cannot revert (migrate the pool to file-reflink for revert): %w", storage.ErrUnsupported))
}

// Reconfigure applies ch: revisions_to_keep (-1 to 1; to or from -1 only
// while stopped), rw and a snapshot's source (only while stopped), the
// explicit ephemeral flag. A volume that is not save_on_stop keeps
// revisions_to_keep 0, as Qubes forces it.
func (v *volume) Reconfigure(ctx context.Context, ch storage.VolumeChange) error {
	return v.do(ctx, "reconfigure", func() error {
		old := v.conf()
		next, err := old.Apply(ch)
		if err != nil {
			return err
		}
		if n := *next.RevisionsToKeep; n > maxRevisions {
			return fmt.Errorf("revisions_to_keep %d: the file driver keeps at most %d revision: %w", n, maxRevisions, storage.ErrUnsupported)
		}
		if !next.SaveOnStop {
			zero := 0
			next.RevisionsToKeep = &zero
		}
		if next.Source != old.Source {
			if err := filepool.CheckSource(next.Source, next.VID); err != nil {
				return err
			}
		}
		if v.running() {
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
