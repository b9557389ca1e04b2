package storagetest

import (
	"io"
	"os"
	"slices"
	"sync/atomic"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

// kindFixture is a volume of one of the four kinds with what the suite
// knows of its data.
type kindFixture struct {
	*env
	kind      storage.Kind
	v         storage.Volume
	src       storage.Volume // the source of a snapshot kind
	srcData   content        // src's committed data
	committed content        // v's committed data (save_on_stop kinds)
}

// kindNames are the volume names the fixture gives each kind, as a Qubes
// AppVM has them.
var kindNames = map[storage.Kind]string{
	storage.Volatile:       "volatile",
	storage.Snapshot:       "root",
	storage.Origin:         "private",
	storage.SnapshotCommit: "root",
}

// kindConf returns the configuration of a writable volume of kind named
// vid; a snapshot kind's source must be set by the caller.
func (e *env) kindConf(kind storage.Kind, vid string, size int64) storage.VolumeConfig {
	c := e.volatileConf(vid, size)
	c.SnapOnStart = kind == storage.Snapshot || kind == storage.SnapshotCommit
	c.SaveOnStop = kind == storage.Origin || kind == storage.SnapshotCommit
	if c.SaveOnStop {
		keep := e.keep(1)
		c.RevisionsToKeep = &keep
	}
	return c
}

// templateRoot creates a template's root volume holding some data and
// returns it with its data.
func (e *env) templateRoot() (storage.Volume, content) {
	e.t.Helper()
	src := e.create(e.originConf(e.vidT("tpl", true, "root"), volSize, e.keep(1)))
	return src, e.run(src, zeros(volSize), 0x51, 0, 2*mib)
}

func (e *env) kindFixture(kind storage.Kind) *kindFixture {
	e.t.Helper()
	f := &kindFixture{env: e, kind: kind, committed: zeros(volSize)}
	c := e.kindConf(kind, e.vid("work", kindNames[kind]), volSize)
	if c.SnapOnStart {
		f.src, f.srcData = e.templateRoot()
		c.Source = f.src.Config().VID
	}
	f.v = e.create(c)
	return f
}

// saves tells whether the fixture's volume commits at stop.
func (f *kindFixture) saves() bool { return f.v.Config().SaveOnStop }

// fresh is what a start that resumes nothing shows.
func (f *kindFixture) fresh() content {
	switch f.kind {
	case storage.Volatile:
		return zeros(f.v.Config().Size)
	case storage.Origin:
		return f.committed
	}
	return f.srcData
}

// reopen simulates a crash and takes the new pool's volumes.
func (f *kindFixture) reopen() {
	f.t.Helper()
	f.env.reopen()
	f.v = f.get(f.v)
	if f.src != nil {
		f.src = f.get(f.src)
	}
}

// resizesImage tells whether Resize of the stopped volume changes what the
// next start shows: snapshot kinds start from their source's image.
func (f *kindFixture) resizesImage() bool {
	return f.kind == storage.Volatile || f.kind == storage.Origin
}

// kindCases run on each of the four kinds.
var kindCases = []struct {
	name string
	fn   func(f *kindFixture)
}{
	{"create", kindCreate},
	{"start_stop", kindStartStop},
	{"double_stop", kindDoubleStop},
	{"double_start", kindDoubleStart},
	{"crash_resume", kindCrashResume},
	{"crash_stop", kindCrashStop},
	{"revert", kindRevert},
	{"resize_running", kindResizeRunning},
	{"resize_stopped", kindResizeStopped},
	{"shrink", kindShrink},
	{"import_data_ok", kindImportDataOK},
	{"import_data_failed", kindImportDataFailed},
	{"import_data_empty", kindImportDataEmpty},
	{"import_volume", kindImportVolume},
	{"import_running", kindImportRunning},
	{"is_dirty", kindIsDirty},
	{"is_outdated", kindIsOutdated},
	{"remove", kindRemove},
}

func kindGroups(cfg Config) []group {
	var groups []group
	for _, kind := range []storage.Kind{storage.Volatile, storage.Snapshot, storage.Origin, storage.SnapshotCommit} {
		g := group{name: kind.String()}
		if kind == storage.SnapshotCommit && !cfg.Caps.SnapshotCommit {
			g.cases = []testCase{{"refused", refuseSnapshotCommit}}
		} else {
			for _, kc := range kindCases {
				g.cases = append(g.cases, testCase{kc.name, func(e *env) { kc.fn(e.kindFixture(kind)) }})
			}
		}
		groups = append(groups, g)
	}
	return groups
}

// refuseSnapshotCommit: a driver without Caps.SnapshotCommit refuses a
// volume with both snap_on_start and save_on_stop (Qubes' file driver).
func refuseSnapshotCommit(e *env) {
	src, _ := e.templateRoot()
	c := e.kindConf(storage.SnapshotCommit, e.vid("work", "root"), volSize)
	c.Source = src.Config().VID
	v, err := e.pool.InitVolume(c)
	if err == nil {
		err = v.Create(e.ctx)
	}
	assertRefused(e.t, err, "snapshot-then-commit volume")
}

func vids(vols []storage.Volume) []string {
	var out []string
	for _, v := range vols {
		out = append(out, v.Config().VID)
	}
	return out
}

func kindCreate(f *kindFixture) {
	t, v := f.t, f.v
	c := v.Config()
	assert.Equal(t, nameOf(c.VID), c.Name)
	assert.Equal(t, f.pool.Name(), c.Pool, "InitVolume fills in the pool")
	assert.Equal(t, int64(volSize), c.Size)
	assert.True(t, c.RW)
	assert.Equal(t, f.kind, c.Kind())
	assert.NotNil(t, c.RevisionsToKeep, "InitVolume resolves revisions_to_keep")
	got, err := f.pool.Volume(c.VID)
	if assert.NoError(t, err) {
		assert.Equal(t, c.VID, got.Config().VID)
	}
	all := vids(f.pool.Volumes())
	assert.Contains(t, all, c.VID)
	assert.True(t, slices.IsSorted(all), "Volumes are sorted by vid: %v", all)
	assert.False(t, f.running(v))
	assert.False(t, f.dirty(v))
	assert.False(t, f.outdated(v))
	assert.Empty(t, f.revisions(v))
	assert.NoError(t, v.Verify(f.ctx))
	assert.Equal(t, int64(volSize), f.size(v))
	if f.kind == storage.Origin {
		f.checkExport(v, zeros(volSize), "new volume")
	}
}

func kindStartStop(f *kindFixture) {
	t, v := f.t, f.v
	f.start(v)
	assert.True(t, f.running(v))
	bd := v.BlockDevice()
	assert.NotEmpty(t, bd.Path)
	assert.Equal(t, v.Config().Name, bd.Name)
	assert.True(t, bd.RW)
	assert.Equal(t, "disk", bd.DevType)
	f.checkDevice(v, f.fresh(), "first start")
	want := f.writeBlocks(v, f.fresh(), 0xa1, 0, mib+blockSize)
	f.checkDevice(v, want, "after writes")
	if f.kind == storage.Origin {
		if f.cfg.ExportRunningRefused {
			_, err := f.export(v)
			assert.ErrorIs(t, err, storage.ErrRunning, "export of a running volume")
		} else {
			f.checkExport(v, f.committed, "a running volume exports its committed data")
		}
	}
	f.stop(v)
	assert.False(t, f.running(v))
	if f.saves() {
		f.committed = want
		f.checkExport(v, want, "after stop")
	}
	f.start(v)
	f.checkDevice(v, f.fresh(), "second start")
	f.stop(v)
}

func kindDoubleStop(f *kindFixture) {
	t, v := f.t, f.v
	f.stop(v) // never started
	assert.False(t, f.running(v))
	assert.Empty(t, f.revisions(v), "stopping a stopped volume commits nothing")
	f.start(v)
	f.writeBlocks(v, f.fresh(), 0xa3, 0)
	f.stop(v)
	before := f.state()
	f.stop(v)
	f.assertUnchanged(before, "a second stop")
}

// kindDoubleStart: a second start resumes a save_on_stop volume's running
// image and gives a snapshot or volatile volume a fresh one (Qubes'
// is_dirty is save_on_stop and a dirty image).
func kindDoubleStart(f *kindFixture) {
	v := f.v
	f.start(v)
	written := f.writeBlocks(v, f.fresh(), 0xa4, 0, 2*mib)
	f.start(v)
	if f.saves() {
		f.checkDevice(v, written, "a second start resumes")
	} else {
		f.checkDevice(v, f.fresh(), "a second start is fresh: the writes are gone")
	}
	f.stop(v)
	if f.saves() {
		f.checkExport(v, written, "after stop")
	}
}

// crash starts the volume, writes to it and reopens the pool without
// stopping it; it returns what the device held.
func (f *kindFixture) crash() content {
	t := f.t
	t.Helper()
	f.start(f.v)
	want := f.writeBlocks(f.v, f.fresh(), 0xa5, 0, 3*mib)
	revs := f.revisionIDs(f.v)
	f.reopen()
	assert.True(t, f.running(f.v), "running is a fact on disk: still running after a crash")
	assert.Equal(t, f.saves(), f.dirty(f.v), "dirty after a crash")
	assert.Equal(t, revs, f.revisionIDs(f.v), "a crash adds no revision")
	return want
}

// afterCrash checks, after the volume was stopped, that a save_on_stop
// volume committed want and that the next start is a fresh one.
func (f *kindFixture) afterCrash(want content) {
	f.t.Helper()
	assert.False(f.t, f.running(f.v))
	if f.saves() {
		f.checkExport(f.v, want, "committed after the crash")
		f.committed = want
	}
	f.start(f.v)
	f.checkDevice(f.v, f.fresh(), "next start")
	f.stop(f.v)
}

// kindCrashResume: the process crashes between start and stop; the next
// start resumes a save_on_stop volume's uncommitted data and gives a
// snapshot or volatile volume fresh content (reference §2, §4).
func kindCrashResume(f *kindFixture) {
	want := f.crash()
	f.start(f.v)
	if f.saves() {
		f.checkDevice(f.v, want, "resumed")
	} else {
		f.checkDevice(f.v, f.fresh(), "fresh after a crash: the writes are gone")
	}
	f.stop(f.v)
	f.afterCrash(want)
}

// kindCrashStop: after a crash, the caller stops the volumes of halted VMs
// (Qubes' stop_storage at qubesd start); a save_on_stop volume commits.
func kindCrashStop(f *kindFixture) {
	want := f.crash()
	f.stop(f.v)
	f.afterCrash(want)
}

func kindRevert(f *kindFixture) {
	t, v := f.t, f.v
	if !f.cfg.Caps.Revert {
		assert.ErrorIs(t, v.Revert(f.ctx, ""), storage.ErrUnsupported)
		return
	}
	if !f.saves() {
		assert.ErrorIs(t, v.Revert(f.ctx, ""), storage.ErrNotFound, "a volume that never commits has no revision")
		return
	}
	before := f.fresh()
	f.committed = f.run(v, before, 0xa6, 0)
	if f.keep(1) == 0 {
		assert.ErrorIs(t, v.Revert(f.ctx, ""), storage.ErrNotFound)
		return
	}
	require.Len(t, f.revisions(v), 1)
	require.NoError(t, v.Revert(f.ctx, ""))
	f.checkExport(v, before, "after revert")
	f.committed = before
	f.start(v)
	f.checkDevice(v, f.fresh(), "start after revert")
	f.stop(v)
}

// resizeRefused checks that a driver with Config.SnapshotResizeRefused
// refuses to resize a snapshot volume (ErrUnsupported) and changes
// nothing; it reports whether it did.
func (f *kindFixture) resizeRefused(size int64) bool {
	if !f.cfg.SnapshotResizeRefused || !f.v.Config().SnapOnStart {
		return false
	}
	before := f.state()
	assert.ErrorIs(f.t, f.v.Resize(f.ctx, size, storage.ResizeOptions{Force: true}), storage.ErrUnsupported, "resize of a snapshot volume")
	f.assertUnchanged(before, "a refused resize of a snapshot volume")
	return true
}

func kindResizeRunning(f *kindFixture) {
	t, v := f.t, f.v
	f.start(v)
	if f.resizeRefused(f.size(v) + 4*mib) {
		f.stop(v)
		return
	}
	have := f.writeBlocks(v, f.fresh(), 0xa7, 0)
	size := f.size(v)
	grow := size + 4*mib
	require.NoError(t, v.Resize(f.ctx, grow, storage.ResizeOptions{}))
	assert.Equal(t, grow, f.size(v))
	assert.Equal(t, grow, f.deviceSize(v), "the running device grows")
	assert.Equal(t, grow, v.Config().Size, "the configured size follows")
	assert.ErrorIs(t, v.Resize(f.ctx, size, storage.ResizeOptions{}), storage.ErrShrink)
	assert.Equal(t, grow, f.size(v), "a refused shrink changes nothing")
	have = f.writeBlocks(v, have.resized(grow), 0xa8, grow-blockSize)
	f.checkDevice(v, have, "after growing")
	f.stop(v)
	if f.saves() {
		f.committed = have
		f.checkExport(v, have, "committed after growing")
		assert.Equal(t, grow, f.size(v))
	}
	if f.kind == storage.Volatile {
		assert.Equal(t, grow, v.Config().Size, "a volatile volume keeps a resize made while it ran")
		f.start(v)
		f.checkDevice(v, zeros(grow), "next start")
		f.stop(v)
	}
}

func kindResizeStopped(f *kindFixture) {
	t, v := f.t, f.v
	if f.saves() {
		f.committed = f.run(v, f.fresh(), 0xa9, 0)
	}
	grow := f.size(v) + 4*mib
	if f.resizeRefused(grow) {
		return
	}
	require.NoError(t, v.Resize(f.ctx, grow, storage.ResizeOptions{}))
	f.checkResized(grow, "after resize")
}

// checkResized checks a stopped volume resized to size: its configured
// size, and for volumes whose next start uses their own image, its size,
// its committed data and its next start.
func (f *kindFixture) checkResized(size int64, what string) {
	t, v := f.t, f.v
	t.Helper()
	assert.Equal(t, size, v.Config().Size, what)
	if !f.resizesImage() {
		return
	}
	assert.Equal(t, size, f.size(v), what)
	if f.kind == storage.Origin {
		f.committed = f.committed.resized(size)
		f.checkExport(v, f.committed, what)
	}
	f.start(v)
	assert.Equal(t, size, f.deviceSize(v), what)
	f.checkDevice(v, f.fresh(), "start "+what)
	f.stop(v)
}

func kindShrink(f *kindFixture) {
	t, v := f.t, f.v
	if f.saves() {
		f.committed = f.run(v, f.fresh(), 0xaa, 0, volSize-blockSize)
	}
	small := f.size(v) / 2
	if f.resizeRefused(small) {
		return
	}
	before := f.state()
	assert.ErrorIs(t, v.Resize(f.ctx, small, storage.ResizeOptions{}), storage.ErrShrink)
	f.assertUnchanged(before, "a shrink without force")
	require.NoError(t, v.Resize(f.ctx, small, storage.ResizeOptions{Force: true}))
	f.checkResized(small, "after a forced shrink")
}

// importRefused checks that a volume that does not save refuses
// ImportData, as Qubes' drivers do; it reports whether it did.
func (f *kindFixture) importRefused() bool {
	if f.saves() {
		return false
	}
	_, err := f.v.ImportData(f.ctx, volSize)
	assertRefused(f.t, err, "import data into a volume that does not save")
	return true
}

// writeFile writes c's blocks to the file at path (an import path).
func (e *env) writeFile(path string, c content) {
	e.t.Helper()
	fh, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(e.t, err)
	defer fh.Close()
	for off, tag := range c.blocks {
		_, err := fh.WriteAt(block(tag, off), off)
		require.NoError(e.t, err)
	}
	require.NoError(e.t, fh.Sync())
}

// importData imports c through ImportData and ImportDataEnd(success).
func (e *env) importData(v storage.Volume, c content, success bool) {
	e.t.Helper()
	path, err := v.ImportData(e.ctx, c.size)
	require.NoError(e.t, err)
	assert.Equal(e.t, c.size, pathSize(e.t, path), "the import path has the size asked for")
	e.writeFile(path, c)
	require.NoError(e.t, v.ImportDataEnd(e.ctx, success))
}

// kindImportDataOK: an import commits its data and size (Qubes
// test_020_import_data, test_024_import_data_with_new_size).
func kindImportDataOK(f *kindFixture) {
	t, v := f.t, f.v
	if f.importRefused() {
		return
	}
	f.committed = f.run(v, f.fresh(), 0xab, 0)
	revs := f.revisionIDs(v)
	newSize := int64(volSize + 4*mib)
	want := zeros(newSize).with(0, 0xac).with(newSize-blockSize, 0xac)
	f.importData(v, want, true)
	f.checkExport(v, want, "after import")
	assert.Equal(t, newSize, f.size(v))
	assert.Equal(t, newSize, v.Config().Size, "the configured size follows the import")
	if f.kind == storage.Origin && f.cfg.ImportKeepsNoRevision {
		assert.Equal(t, revs, f.revisionIDs(v), "an import keeps no revision of the replaced data")
	} else if f.kind == storage.Origin && f.keep(1) > 0 {
		got := f.revisionIDs(v)
		if assert.NotEmpty(t, got) {
			assert.NotContains(t, revs, got[len(got)-1], "an import keeps the replaced data as a new revision")
		}
	}
	f.committed = want
	f.start(v)
	f.checkDevice(v, f.fresh(), "start after import")
	f.stop(v)
}

// kindImportDataFailed: a failed import keeps the old data (Qubes
// test_021_import_data_fail).
func kindImportDataFailed(f *kindFixture) {
	if f.importRefused() {
		return
	}
	f.committed = f.run(f.v, f.fresh(), 0xab, 0)
	before := f.state()
	f.importData(f.v, zeros(volSize).with(0, 0xac), false)
	f.assertUnchanged(before, "a failed import")
}

// kindImportDataEmpty: an import of nothing wipes the data (Qubes
// TC_10_ReflinkPool test_012_import_data_empty).
func kindImportDataEmpty(f *kindFixture) {
	if f.importRefused() {
		return
	}
	f.committed = f.run(f.v, f.fresh(), 0xad, 0, mib)
	f.importData(f.v, zeros(f.size(f.v)), true)
	f.checkExport(f.v, zeros(f.size(f.v)), "after an empty import")
}

// kindImportVolume: import from another volume of the pool; the size
// follows the source (Qubes integ test_005_size_after_clone). Progress is
// reported through storage.WithProgress, if at all.
func kindImportVolume(f *kindFixture) {
	t, v := f.t, f.v
	otherSize := int64(volSize + 4*mib)
	other := f.create(f.originConf(f.vid("other", "private"), otherSize, f.keep(1)))
	otherData := f.run(other, zeros(otherSize), 0xae, 0, otherSize-blockSize)
	var badProgress atomic.Bool
	ctx := storage.WithProgress(f.ctx, func(done, total int64) {
		if done < 0 || total > 0 && done > total {
			badProgress.Store(true)
		}
	})
	err := v.ImportVolume(ctx, other)
	assert.False(t, badProgress.Load(), "progress reported more done than total")
	if f.saves() {
		require.NoError(t, err)
		f.checkExport(v, otherData, "after import")
		assert.Equal(t, otherSize, f.size(v))
		assert.Equal(t, otherSize, v.Config().Size)
		f.committed = otherData
	} else if err != nil {
		assertRefused(t, err, "import into a volume that does not save")
	}
	f.start(v)
	f.checkDevice(v, f.fresh(), "start after import")
	f.stop(v)
	f.checkExport(other, otherData, "the source of an import")
	assert.False(t, f.running(other))
}

// kindImportRunning: an import into a running volume (Qubes'
// admin.vm.volume.Clear and CloneTo on a running qube) becomes the
// committed state while the VM keeps its running image, which the stop
// then commits over it; a driver without Caps.ImportRunning refuses it
// with ErrRunning and changes nothing.
func kindImportRunning(f *kindFixture) {
	t, v := f.t, f.v
	if f.importRefused() {
		return
	}
	f.committed = f.run(v, f.fresh(), 0xb1, 0)
	f.start(v)
	running := f.writeBlocks(v, f.fresh(), 0xb2, mib)
	other := f.create(f.originConf(f.vid("other", "private"), volSize, f.keep(1)))
	otherData := f.run(other, zeros(volSize), 0xb3, 2*mib)
	imported := zeros(volSize).with(3*mib, 0xb4)
	if !f.cfg.Caps.ImportRunning {
		before := f.state()
		_, err := v.ImportData(f.ctx, volSize)
		assert.ErrorIs(t, err, storage.ErrRunning, "import data into a running volume")
		assert.ErrorIs(t, v.ImportVolume(f.ctx, other), storage.ErrRunning, "import volume into a running volume")
		f.assertUnchanged(before, "a refused import into a running volume")
		f.stop(v)
		return
	}
	f.importData(v, imported, true)
	f.checkExport(v, imported, "the import is the committed state")
	f.checkDevice(v, running, "the VM keeps its running image")
	require.NoError(t, v.ImportVolume(f.ctx, other))
	f.checkExport(v, otherData, "the second import is the committed state")
	f.checkDevice(v, running, "the VM still keeps its running image")
	f.stop(v)
	f.checkExport(v, running, "the stop commits the running image over the imports")
	if f.kind == storage.Origin && f.cfg.Caps.Revert && f.keep(1) > 0 {
		require.NoError(t, v.Revert(f.ctx, ""))
		f.checkExport(v, otherData, "the import was kept as a revision")
	}
}

func kindIsDirty(f *kindFixture) {
	t, v := f.t, f.v
	assert.False(t, f.dirty(v))
	f.start(v)
	assert.Equal(t, f.saves() && !f.cfg.DirtyOnWrite, f.dirty(v), "dirty after start")
	f.write(v, 0, 0xaf)
	assert.Equal(t, f.saves(), f.dirty(v), "dirty after a write")
	f.stop(v)
	assert.False(t, f.dirty(v), "dirty after stop")
}

// kindIsOutdated: a running snapshot is outdated once its source commits,
// keeps its data until it restarts, and is never outdated when stopped
// (reference §4 is_outdated; Qubes test_050_snapshot_volume).
func kindIsOutdated(f *kindFixture) {
	t, v := f.t, f.v
	if f.src == nil {
		f.start(v)
		assert.False(t, f.outdated(v))
		f.stop(v)
		f.start(v)
		assert.False(t, f.outdated(v), "a volume without a source is never outdated")
		f.stop(v)
		return
	}
	f.start(v)
	assert.False(t, f.outdated(v), "just started")
	old := f.fresh()
	f.srcData = f.run(f.src, f.srcData, 0xb0, mib)
	assert.Equal(t, f.cfg.Caps.Outdated, f.outdated(v), "outdated after its source committed")
	f.checkDevice(v, old, "a running snapshot keeps its data when its source commits")
	f.stop(v)
	assert.False(t, f.outdated(v), "a stopped volume is not outdated")
	f.start(v)
	assert.False(t, f.outdated(v), "restarted")
	f.checkDevice(v, f.fresh(), "a restart sees the source's commit")
	f.stop(v)
}

func kindRemove(f *kindFixture) {
	t, v := f.t, f.v
	f.run(v, f.fresh(), 0xb1, 0)
	conf := v.Config()
	require.NoError(t, v.Remove(f.ctx))
	_, err := f.pool.Volume(conf.VID)
	assert.ErrorIs(t, err, storage.ErrNotFound, "Volume of a removed vid")
	assert.NotContains(t, vids(f.pool.Volumes()), conf.VID)
	ops := map[string]error{
		"start":       v.Start(f.ctx),
		"stop":        v.Stop(f.ctx),
		"resize":      v.Resize(f.ctx, 2*volSize, storage.ResizeOptions{}),
		"import data": func() error { _, err := v.ImportData(f.ctx, volSize); return err }(),
	}
	if f.cfg.Caps.Revert {
		ops["revert"] = v.Revert(f.ctx, "")
	}
	for op, err := range ops {
		assert.ErrorIs(t, err, storage.ErrNotFound, "%s of a removed volume", op)
	}
	again := f.create(conf)
	assert.Empty(t, f.revisions(again), "a removed volume's revisions are gone")
	f.committed = zeros(conf.Size)
	f.v = again
	f.start(again)
	f.checkDevice(again, f.fresh(), "a volume created again")
	f.stop(again)
}

// pathSize returns the size of the file or block device at path (a block
// device's Stat size is 0, so it seeks to the end).
func pathSize(t require.TestingT, path string) int64 {
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	require.NoError(t, err)
	return n
}
