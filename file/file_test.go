package file

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/internal/testenv"
	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

const mib = 1 << 20

func intp(n int) *int { return &n }

type testPool struct {
	*filePool
	layer *emuLayer
}

// newTestPool sets up a file pool in a fresh temporary directory on the
// emulated block layer.
func newTestPool(t *testing.T, params map[string]string) *testPool {
	t.Helper()
	return openTestPool(t, filepath.Join(t.TempDir(), "pool"), newEmuLayer(t), params, true)
}

func openTestPool(t *testing.T, dir string, layer *emuLayer, params map[string]string, setup bool) *testPool {
	t.Helper()
	all := map[string]string{"dir_path": dir}
	for k, v := range params {
		all[k] = v
	}
	p, err := Driver{}.open(context.Background(), storage.PoolConfig{Name: "test", Params: all, Logger: zerolog.Nop()}, layer)
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	if setup {
		require.NoError(t, p.Setup(context.Background()))
	}
	return &testPool{filePool: p, layer: layer}
}

func (tp *testPool) volume(t *testing.T, cfg storage.VolumeConfig) *volume {
	t.Helper()
	v, err := tp.InitVolume(cfg)
	require.NoError(t, err)
	return v.(*volume)
}

// appVM registers and creates the volumes of a template and an AppVM
// based on it, as Qubes' default_volume_config has them.
func (tp *testPool) appVM(t *testing.T) (tplRoot, root, private, volatile *volume) {
	t.Helper()
	ctx := t.Context()
	tplRoot = tp.volume(t, storage.VolumeConfig{VID: "vm-templates/tpl/root", Size: 8 * mib, RW: true, SaveOnStop: true})
	root = tp.volume(t, storage.VolumeConfig{VID: "appvms/work/root", Size: 8 * mib, RW: true, SnapOnStart: true, Source: "vm-templates/tpl/root"})
	private = tp.volume(t, storage.VolumeConfig{VID: "appvms/work/private", Size: 4 * mib, RW: true, SaveOnStop: true})
	volatile = tp.volume(t, storage.VolumeConfig{VID: "appvms/work/volatile", Size: 2 * mib, RW: true})
	for _, v := range []*volume{tplRoot, root, private, volatile} {
		require.NoError(t, v.Create(ctx))
	}
	return
}

// entry is a file of the pool's tree: its mode and whether it is sparse.
type entry struct {
	mode   fs.FileMode
	sparse bool // allocates less than its size
}

// tree lists the pool's files (relative paths; directories end in "/"),
// leaving out the owner record and the running markers.
func (tp *testPool) tree(t *testing.T) map[string]entry {
	t.Helper()
	out := make(map[string]entry)
	require.NoError(t, filepath.WalkDir(tp.dir, func(path string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		rel, _ := filepath.Rel(tp.dir, path)
		if rel == "." || rel == ".vmpool-owner" || strings.HasPrefix(rel, runDir) {
			return nil
		}
		st, err := os.Lstat(path)
		require.NoError(t, err)
		if d.IsDir() {
			rel += "/"
		}
		sys := st.Sys().(*syscall.Stat_t)
		out[rel] = entry{mode: st.Mode().Perm(), sparse: !d.IsDir() && sys.Blocks*512 < st.Size()}
		return nil
	}))
	return out
}

func names(tree map[string]entry) []string {
	var out []string
	for k := range tree {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestTree: the files are exactly Qubes' (file.py): <vid>.img 0664 for
// every volume but a snapshot; <vid>-cow.img for a running origin or
// snapshot, and the source's cow, made by a snapshot's start; at an
// origin's stop its cow becomes <vid>-cow.img.old and a new empty cow is
// made; volatile images and snapshot cows are gone at stop. All sparse.
func TestTree(t *testing.T) {
	tp := newTestPool(t, nil)
	ctx := t.Context()
	tplRoot, root, private, volatile := tp.appVM(t)
	assert.Equal(t, []string{"appvms/", "appvms/work/", "appvms/work/private.img", "appvms/work/volatile.img",
		"vm-templates/", "vm-templates/tpl/", "vm-templates/tpl/root.img"}, names(tp.tree(t)), "after create")
	for name, e := range tp.tree(t) {
		if strings.HasSuffix(name, ".img") {
			assert.Equal(t, fs.FileMode(0o664), e.mode, name)
			assert.True(t, e.sparse, name)
		}
	}
	set := storage.NewSet(root, private, volatile)
	require.NoError(t, set.Start(ctx))
	assert.Equal(t, []string{"appvms/", "appvms/work/", "appvms/work/private-cow.img", "appvms/work/private.img",
		"appvms/work/root-cow.img", "appvms/work/volatile.img",
		"vm-templates/", "vm-templates/tpl/", "vm-templates/tpl/root-cow.img", "vm-templates/tpl/root.img"}, names(tp.tree(t)), "running")
	for name, e := range tp.tree(t) {
		if !strings.HasSuffix(name, "/") {
			assert.True(t, e.sparse, "%s is sparse", name)
		}
	}
	require.NoError(t, set.Stop(ctx))
	assert.Equal(t, []string{"appvms/", "appvms/work/", "appvms/work/private-cow.img", "appvms/work/private-cow.img.old", "appvms/work/private.img",
		"vm-templates/", "vm-templates/tpl/", "vm-templates/tpl/root-cow.img", "vm-templates/tpl/root.img"}, names(tp.tree(t)),
		"stopped: the cow of the run is the revision, a new empty cow is made")
	assert.Empty(t, tp.layer.names(), "no device is left")
	require.NoError(t, tplRoot.Start(ctx))
	assert.NotContains(t, tp.tree(t), "vm-templates/tpl/root-cow.img.old")
	require.NoError(t, tplRoot.Stop(ctx))
	assert.Contains(t, tp.tree(t), "vm-templates/tpl/root-cow.img.old")
}

// TestBlockDevice: the device paths are Qubes' _block_device_path,
// <dev:ino> as create-snapshot computes it (stat --printf=%D:%i).
func TestBlockDevice(t *testing.T) {
	testenv.RequireCommand(t, "stat")
	tp := newTestPool(t, nil)
	ctx := t.Context()
	tplRoot, root, private, volatile := tp.appVM(t)
	statID := func(path string) string {
		out, err := exec.Command("stat", "--printf=%D:%i", "--", path).Output()
		require.NoError(t, err)
		return string(out)
	}
	require.NoError(t, storage.NewSet(root, private, volatile).Start(ctx))
	assert.Equal(t, "/dev/mapper/origin-"+statID(private.img), private.BlockDevice().Path)
	assert.Equal(t, "/dev/mapper/snapshot-"+statID(tplRoot.img)+"-"+statID(tplRoot.cow)+"-"+statID(root.cow), root.BlockDevice().Path)
	assert.Equal(t, volatile.img, volatile.BlockDevice().Path)
	assert.Empty(t, private.BlockDevice().Script)
	assert.ElementsMatch(t, []string{
		"origin-" + statID(private.img),
		"snapshot-" + statID(private.img) + "-" + statID(private.cow),
		"snapshot-" + statID(tplRoot.img) + "-" + statID(tplRoot.cow),
		"snapshot-" + statID(tplRoot.img) + "-" + statID(tplRoot.cow) + "-" + statID(root.cow),
	}, tp.layer.names())

	// A running snapshot keeps the device its start made when its source
	// commits (a new source cow).
	dev := root.BlockDevice().Path
	require.NoError(t, tplRoot.Start(ctx))
	require.NoError(t, tplRoot.Stop(ctx))
	assert.Equal(t, dev, root.BlockDevice().Path)
	require.NoError(t, root.Stop(ctx))
	assert.NotContains(t, tp.layer.names(), filepath.Base(dev), "the snapshot's device is removed")
}

// TestIsDirty: Qubes' is_dirty on the cow, byte for byte: no cow, an
// empty or all-hole cow and the exact empty exception store are clean; a
// changed header or data beyond it are dirty.
func TestIsDirty(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, size int64, at map[int64][]byte) string {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		require.NoError(t, err)
		defer f.Close()
		require.NoError(t, f.Truncate(size))
		for off, b := range at {
			_, err := f.WriteAt(b, off)
			require.NoError(t, err)
		}
		require.NoError(t, f.Sync())
		return path
	}
	header := emptySnapshot[:16]
	assert.Equal(t, []byte("SnAp\x01\x00\x00\x00\x01\x00\x00\x00\x00\x01\x00\x00"), header, "struct.pack('<4I', 0x70416e53, 1, 1, 256)")
	assert.Len(t, emptySnapshot, 262144)
	changed := append([]byte(nil), emptySnapshot...)
	changed[8] = 2
	for _, tc := range []struct {
		name  string
		path  string
		dirty bool
	}{
		{"missing", filepath.Join(dir, "missing"), false},
		{"zero length", write("empty", 0, nil), false},
		{"all hole", write("hole", 8*mib, nil), false},
		{"empty exception store", write("fresh", 8*mib, map[int64][]byte{0: emptySnapshot}), false},
		{"empty exception store, exact size", write("exact", int64(len(emptySnapshot)), map[int64][]byte{0: emptySnapshot}), false},
		{"other header", write("other", 8*mib, map[int64][]byte{0: changed}), true},
		{"header only, no zeros written", write("short", 8*mib, map[int64][]byte{0: header}), false},
		{"an exception", write("exception", 8*mib, map[int64][]byte{0: emptySnapshot, 4 * mib: []byte("data")}), true},
		{"data but no header", write("noheader", 8*mib, map[int64][]byte{4096: []byte("x")}), true},
	} {
		got, err := cowDirty(tc.path)
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.dirty, got, tc.name)
	}
	// A cow that is a symlink is not followed.
	target := write("target", 8*mib, map[int64][]byte{4 * mib: []byte("data")})
	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(target, link))
	_, err := cowDirty(link)
	assert.Error(t, err)

	// Through a volume: clean after start, dirty after a write, clean
	// after stop.
	tp := newTestPool(t, nil)
	ctx := t.Context()
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", Size: 8 * mib, RW: true, SaveOnStop: true})
	require.NoError(t, v.Create(ctx))
	require.NoError(t, v.Start(ctx))
	head := make([]byte, len(emptySnapshot))
	f, err := os.Open(v.cow)
	require.NoError(t, err)
	_, err = f.ReadAt(head, 0)
	f.Close()
	require.NoError(t, err)
	assert.Equal(t, emptySnapshot, head, "the emulation activates the cow as the kernel does")
	assert.False(t, must(v.IsDirty(ctx)))
	w, err := tp.layer.open(v.BlockDevice().Path, os.O_RDWR)
	require.NoError(t, err)
	w.Close()
	assert.True(t, must(v.IsDirty(ctx)))
	require.NoError(t, v.Stop(ctx))
	assert.False(t, must(v.IsDirty(ctx)))
}

func must[T any](x T, err error) T {
	if err != nil {
		panic(err)
	}
	return x
}

// TestRevisions: the one revision is "old", timed by the ctime of
// <vid>-cow.img.old; revisions_to_keep 0 keeps none.
func TestRevisions(t *testing.T) {
	tp := newTestPool(t, nil)
	ctx := t.Context()
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", Size: 8 * mib, RW: true, SaveOnStop: true})
	require.NoError(t, v.Create(ctx))
	for range 2 {
		require.NoError(t, v.Start(ctx))
		require.NoError(t, v.Stop(ctx))
	}
	revs := must(v.Revisions(ctx))
	require.Len(t, revs, 1)
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(v.old, &st))
	assert.Equal(t, storage.Revision{ID: "old", Time: time.Unix(st.Ctim.Sec, 0).UTC()}, revs[0])
	assert.ErrorIs(t, v.Revert(ctx, "old"), storage.ErrUnsupported)
	assert.ErrorIs(t, v.Revert(ctx, "../old"), storage.ErrInvalidConfig)

	require.NoError(t, v.Reconfigure(ctx, storage.VolumeChange{RevisionsToKeep: intp(0)}))
	require.NoError(t, v.Start(ctx))
	require.NoError(t, v.Stop(ctx))
	assert.Empty(t, must(v.Revisions(ctx)), "revisions_to_keep 0 deletes the revision at the commit")
	assert.False(t, exists(v.old))
	assert.True(t, exists(v.cow), "a new empty cow")
}

// TestRevisionsToKeepRefused: more than one revision is
// storage.ErrUnsupported at the pool's and the volume's configuration, as
// Qubes' NotImplementedError; -1 is accepted.
func TestRevisionsToKeepRefused(t *testing.T) {
	ctx := t.Context()
	_, err := pool.Open(ctx, DriverName, storage.PoolConfig{Name: "p", Params: map[string]string{"dir_path": t.TempDir(), "revisions_to_keep": "2"}})
	assert.ErrorIs(t, err, storage.ErrUnsupported)
	_, err = pool.Open(ctx, DriverName, storage.PoolConfig{Name: "p", Params: map[string]string{"dir_path": t.TempDir(), "revisions_to_keep": "-2"}})
	assert.ErrorIs(t, err, storage.ErrInvalidConfig)
	tp := newTestPool(t, map[string]string{"revisions_to_keep": "-1"})
	assert.ErrorIs(t, tp.SetParameter(ctx, "revisions_to_keep", "2"), storage.ErrUnsupported)
	assert.Equal(t, "-1", tp.Config()["revisions_to_keep"])
	_, err = tp.InitVolume(storage.VolumeConfig{VID: "appvms/a/private", Size: mib, RW: true, SaveOnStop: true, RevisionsToKeep: intp(2)})
	assert.ErrorIs(t, err, storage.ErrUnsupported)
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", Size: mib, RW: true, SaveOnStop: true})
	assert.Equal(t, -1, *v.Config().RevisionsToKeep, "the pool's default")
	assert.ErrorIs(t, v.Reconfigure(ctx, storage.VolumeChange{RevisionsToKeep: intp(2)}), storage.ErrUnsupported)
	snap := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/root", Size: mib, SnapOnStart: true, Source: "vm-templates/t/root"})
	assert.Equal(t, 0, *snap.Config().RevisionsToKeep, "a volume that does not save keeps no revision, as Qubes forces it")
}

// TestSnapshotCommitRefused: snap_on_start with save_on_stop is
// storage.ErrUnsupported (Qubes: NotImplementedError).
func TestSnapshotCommitRefused(t *testing.T) {
	tp := newTestPool(t, nil)
	_, err := tp.InitVolume(storage.VolumeConfig{VID: "appvms/a/root", Size: mib, RW: true, SnapOnStart: true, SaveOnStop: true, Source: "vm-templates/t/root"})
	assert.ErrorIs(t, err, storage.ErrUnsupported)
	assert.Empty(t, tp.Volumes())
}

// TestSnapshotsDisabled: with revisions_to_keep -1 the VM gets the image
// itself and there is no cow (Qubes' test_025_private_snapshots_disabled).
func TestSnapshotsDisabled(t *testing.T) {
	tp := newTestPool(t, nil)
	ctx := t.Context()
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", Size: mib, RW: true, SaveOnStop: true, RevisionsToKeep: intp(-1)})
	require.NoError(t, v.Create(ctx))
	require.NoError(t, v.Start(ctx))
	assert.Equal(t, v.img, v.BlockDevice().Path)
	assert.False(t, exists(v.cow))
	assert.True(t, must(v.IsRunning(ctx)))
	require.NoError(t, v.Stop(ctx))
	assert.False(t, exists(v.cow))
	assert.Empty(t, tp.layer.names())
}

// TestVolatileReset: each start of a volatile volume makes a new empty
// image; the stop deletes it.
func TestVolatileReset(t *testing.T) {
	tp := newTestPool(t, nil)
	ctx := t.Context()
	_, _, _, vol := tp.appVM(t)
	require.NoError(t, vol.Start(ctx))
	f, err := os.OpenFile(vol.img, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("garbage"), 4096)
	require.NoError(t, err)
	f.Close()
	var before syscall.Stat_t
	require.NoError(t, syscall.Stat(vol.img, &before))
	require.NoError(t, vol.Start(ctx), "a second start (a crash) resets the image")
	var after syscall.Stat_t
	require.NoError(t, syscall.Stat(vol.img, &after))
	assert.NotEqual(t, before.Ino, after.Ino, "a new image")
	assert.Zero(t, after.Blocks, "empty")
	assert.Equal(t, int64(2*mib), after.Size)
	require.NoError(t, vol.Stop(ctx))
	assert.False(t, exists(vol.img))
}

// TestCrashResume: after a crash (the pool is opened again, the devices
// survive), an origin's cow is kept with its exceptions: it is still
// dirty, the start resumes it and the stop commits it as the revision.
func TestCrashResume(t *testing.T) {
	tp := newTestPool(t, nil)
	ctx := t.Context()
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", Size: 8 * mib, RW: true, SaveOnStop: true})
	require.NoError(t, v.Create(ctx))
	require.NoError(t, v.Start(ctx))
	w, err := tp.layer.open(v.BlockDevice().Path, os.O_RDWR)
	require.NoError(t, err)
	_, err = w.WriteAt([]byte("written"), 0)
	require.NoError(t, err)
	w.Close()
	var cow syscall.Stat_t
	require.NoError(t, syscall.Stat(v.cow, &cow))
	conf := v.Config()
	require.NoError(t, tp.Close())

	tp2 := openTestPool(t, tp.dir, tp.layer, nil, false)
	v2 := tp2.volume(t, conf)
	assert.True(t, must(v2.IsRunning(ctx)))
	assert.True(t, must(v2.IsDirty(ctx)))
	require.NoError(t, v2.Start(ctx))
	var cow2 syscall.Stat_t
	require.NoError(t, syscall.Stat(v2.cow, &cow2))
	assert.Equal(t, cow.Ino, cow2.Ino, "the cow is kept")
	assert.True(t, must(v2.IsDirty(ctx)))
	require.NoError(t, v2.Stop(ctx))
	var old syscall.Stat_t
	require.NoError(t, syscall.Stat(v2.old, &old))
	assert.Equal(t, cow.Ino, old.Ino, "the resumed cow is the revision")
	assert.Empty(t, tp.layer.names())
	got := make([]byte, 7)
	f, err := os.Open(v2.img)
	require.NoError(t, err)
	_, err = f.ReadAt(got, 0)
	f.Close()
	require.NoError(t, err)
	assert.Equal(t, "written", string(got))
}

// TestSymlinkRefused: a VM directory, an image, a cow or a revision that
// is a symlink is never followed: storage.ErrUnsafePath, nothing changes.
func TestSymlinkRefused(t *testing.T) {
	ctx := t.Context()
	for _, name := range []string{"private.img", "private-cow.img", "private-cow.img.old", "private-import.img", "dir"} {
		t.Run(name, func(t *testing.T) {
			tp := newTestPool(t, nil)
			v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", Size: mib, RW: true, SaveOnStop: true})
			outside := filepath.Join(t.TempDir(), "outside")
			require.NoError(t, os.WriteFile(outside, []byte("keep"), 0o644))
			if name == "dir" {
				require.NoError(t, os.Symlink(filepath.Dir(outside), filepath.Join(tp.dir, "appvms", "a")))
			} else {
				require.NoError(t, os.MkdirAll(filepath.Join(tp.dir, "appvms", "a"), 0o755))
				require.NoError(t, os.Symlink(outside, filepath.Join(tp.dir, "appvms", "a", name)))
			}
			for op, err := range map[string]error{
				"create": v.Create(ctx),
				"start":  v.Start(ctx),
				"stop":   v.Stop(ctx),
				"resize": v.Resize(ctx, 2*mib, storage.ResizeOptions{}),
				"remove": v.Remove(ctx),
				"verify": v.Verify(ctx),
			} {
				assert.ErrorIs(t, err, storage.ErrUnsafePath, op)
			}
			_, err := v.IsDirty(ctx)
			assert.ErrorIs(t, err, storage.ErrUnsafePath)
			_, err = v.Export(ctx)
			assert.ErrorIs(t, err, storage.ErrUnsafePath)
			b, err := os.ReadFile(outside)
			require.NoError(t, err)
			assert.Equal(t, "keep", string(b))
			entries, err := os.ReadDir(filepath.Dir(outside))
			require.NoError(t, err)
			assert.Len(t, entries, 1, "nothing was made outside the pool")
		})
	}
}

// TestExportedCannotStart: a volume being exported cannot start (Qubes:
// "file pool cannot start a VM with an exported volume"); a running one
// cannot be exported.
func TestExportedCannotStart(t *testing.T) {
	tp := newTestPool(t, nil)
	ctx := t.Context()
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", Size: mib, RW: true, SaveOnStop: true})
	require.NoError(t, v.Create(ctx))
	path, err := v.Export(ctx)
	require.NoError(t, err)
	assert.Equal(t, v.img, path)
	assert.ErrorIs(t, v.Start(ctx), storage.ErrInUse)
	require.NoError(t, v.ExportEnd(ctx, path))
	require.NoError(t, v.Start(ctx))
	_, err = v.Export(ctx)
	assert.ErrorIs(t, err, storage.ErrRunning)
	require.NoError(t, v.Stop(ctx))
}

// TestResizeRunning: a running origin's image grows and the block layer
// is told (Qubes' test_007_resize_running); a snapshot cannot be resized.
func TestResizeRunning(t *testing.T) {
	tp := newTestPool(t, nil)
	ctx := t.Context()
	_, root, private, _ := tp.appVM(t)
	require.NoError(t, private.Start(ctx))
	require.NoError(t, private.Resize(ctx, 6*mib, storage.ResizeOptions{}))
	st, err := os.Stat(private.img)
	require.NoError(t, err)
	assert.Equal(t, int64(6*mib), st.Size())
	assert.Equal(t, 1, tp.layer.calls["resize"])
	assert.ErrorIs(t, private.Resize(ctx, 5*mib, storage.ResizeOptions{}), storage.ErrShrink)
	require.NoError(t, private.Stop(ctx))
	require.NoError(t, private.Stop(ctx), "a double stop")
	assert.ErrorIs(t, root.Resize(ctx, 16*mib, storage.ResizeOptions{}), storage.ErrUnsupported)
}

// TestImportVolumeRefusesSnapshot: a snapshot volume is no import source
// (Qubes: "Can not import snapshot volume").
func TestImportVolumeRefusesSnapshot(t *testing.T) {
	tp := newTestPool(t, nil)
	ctx := t.Context()
	_, root, private, _ := tp.appVM(t)
	assert.ErrorIs(t, private.ImportVolume(ctx, root), storage.ErrUnsupported)
}

// TestImportVolumeAcrossFilesystems: import_volume from a pool on another
// filesystem is a sparse copy (its holes stay holes) that reports its
// progress, and the size follows the source.
func TestImportVolumeAcrossFilesystems(t *testing.T) {
	mnt := loopfs.Mount(t, loopfs.Ext4, 64<<20)
	ctx := t.Context()
	src := newTestPool(t, nil)
	dst := openTestPool(t, filepath.Join(mnt, "pool"), newEmuLayer(t), nil, true)
	from := src.volume(t, storage.VolumeConfig{VID: "appvms/a/private", Size: 16 * mib, RW: true, SaveOnStop: true})
	require.NoError(t, from.Create(ctx))
	data := bytes.Repeat([]byte("vmpool"), 1000)
	for _, off := range []int64{mib, 12 * mib} {
		f, err := os.OpenFile(from.img, os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt(data, off)
		require.NoError(t, err)
		f.Close()
	}
	to := dst.volume(t, storage.VolumeConfig{VID: "appvms/b/private", Size: 4 * mib, RW: true, SaveOnStop: true})
	require.NoError(t, to.Create(ctx))
	var last [2]int64
	calls := 0
	pctx := storage.WithProgress(ctx, func(done, total int64) { calls++; last = [2]int64{done, total} })
	require.NoError(t, to.ImportVolume(pctx, from))
	assert.Positive(t, calls, "progress was reported")
	assert.Equal(t, last[1], last[0], "the last report is the whole copy")
	st, err := os.Stat(to.img)
	require.NoError(t, err)
	assert.Equal(t, int64(16*mib), st.Size(), "the size follows the source")
	assert.Equal(t, int64(16*mib), to.Config().Size)
	assert.Equal(t, fs.FileMode(0o644), st.Mode().Perm(), "as cp makes it")
	assert.Less(t, st.Sys().(*syscall.Stat_t).Blocks*512, int64(mib), "the holes stay holes")
	want, err := os.ReadFile(from.img)
	require.NoError(t, err)
	got, err := os.ReadFile(to.img)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got), "the data is the source's")
	assert.False(t, exists(to.importPath), "no import file is left")
}
