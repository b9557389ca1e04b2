package storagetest

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

// Config describes the driver under test.
type Config struct {
	// NewPool returns a fresh pool, already Setup, on a fresh directory or
	// volume group. The suite closes it; a constructor that needs more
	// cleanup registers it with t.Cleanup.
	NewPool func(t *testing.T) storage.Pool
	// Reopen simulates a crash of the process that used old: it closes old
	// (without stopping its volumes) and opens the same directory or
	// volume group again, without Setup. The suite then registers the
	// volume configurations again with InitVolume, as a caller would.
	Reopen func(t *testing.T, old storage.Pool) storage.Pool
	// VID returns the vid of volume `volume` of VM `vm` (template: a
	// template VM) in the driver's format; file-reflink:
	// "appvms/vm/volume" or "vm-templates/vm/volume".
	VID func(vm string, template bool, volume string) string
	// PoolVID, when set, is used instead of VID, for drivers whose vids
	// depend on the pool (lvm_thin: "VG/vm-VM-VOLUME", and each subtest
	// has a volume group of its own).
	PoolVID func(p storage.Pool, vm string, template bool, volume string) string
	// Caps is what the pool is expected to be able to do on this
	// filesystem. The suite checks that pool.Capabilities() equals it and
	// branches on it.
	Caps storage.Capabilities
	// RevertKeepsCurrent tells whether Revert keeps the committed state it
	// replaces as a new revision and consumes the revision it reverts to
	// (file-reflink, as Qubes' reflink.py), rather than leaving the
	// revisions as they were (lvm_thin, as Qubes' lvm.py).
	RevertKeepsCurrent bool
	// OpenDevice opens a running volume's data as its VM sees it, with
	// flag os.O_RDONLY when the suite only reads and os.O_RDWR when it
	// writes. The default opens v.BlockDevice().Path; a driver whose
	// device the test cannot open on this host (the file driver's
	// device-mapper devices) supplies its own, an emulation.
	OpenDevice func(t *testing.T, v storage.Volume, flag int) (*os.File, error)

	// The knobs below describe where a driver legitimately differs from
	// file-reflink; each says which Qubes driver behaves so. Their zero
	// values are file-reflink's behaviour.

	// DirtyOnWrite tells that a started save_on_stop volume becomes dirty
	// at its VM's first write, not at the start (Qubes' file driver: its
	// cow holds more than an empty exception store).
	DirtyOnWrite bool
	// ExportRunningRefused tells that Export of a running or dirty volume
	// is refused with ErrRunning or ErrDirty (Qubes' file driver: "file
	// pool cannot export running volumes").
	ExportRunningRefused bool
	// SnapshotResizeRefused tells that a snap_on_start volume cannot be
	// resized (ErrUnsupported; Qubes' file driver: "Cannot resize volume
	// based on a template").
	SnapshotResizeRefused bool
	// RevisionID, when set, is the id of the driver's only revision
	// (Qubes' file driver: "old"): a commit replaces that revision rather
	// than adding one with a new id.
	RevisionID string
	// ImportKeepsNoRevision tells that an import replaces the committed
	// data without keeping it as a revision (Qubes' file driver: its
	// import_data_end is a plain rename).
	ImportKeepsNoRevision bool
}

// testCase is one named subtest; it gets a fresh pool.
type testCase struct {
	name string
	fn   func(e *env)
}

// group is a set of subtests run under one name.
type group struct {
	name  string
	cases []testCase
}

// Run runs the conformance suite against the driver cfg describes. Every
// subtest runs in parallel on a pool of its own.
func Run(t *testing.T, cfg Config) {
	t.Helper()
	require.NotNil(t, cfg.NewPool, "storagetest: Config.NewPool is required")
	require.NotNil(t, cfg.Reopen, "storagetest: Config.Reopen is required")
	require.True(t, cfg.VID != nil || cfg.PoolVID != nil, "storagetest: Config.VID or PoolVID is required")
	if cfg.OpenDevice == nil {
		cfg.OpenDevice = openBlockDevicePath
	}
	groups := kindGroups(cfg)
	groups = append(groups,
		group{"qubes", qubesCases},
		group{"revisions", revisionCases(cfg)},
		group{"revert", revertCases(cfg)},
		group{"set", setCases},
		group{"bad_input", badInputCases(cfg)},
		group{"concurrency", concurrencyCases},
		group{"cancel", cancelCases(cfg)},
		group{"usage", usageCases},
		group{"pool", poolCases},
		group{"reconfigure", reconfigureCases},
	)
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			t.Parallel()
			for _, c := range g.cases {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.fn(newEnv(t, cfg))
				})
			}
		})
	}
}

func openBlockDevicePath(t *testing.T, v storage.Volume, flag int) (*os.File, error) {
	return os.OpenFile(v.BlockDevice().Path, flag, 0)
}

// env is what a subtest works with: its pool and the driver's Config.
type env struct {
	t    *testing.T
	cfg  Config
	ctx  context.Context
	pool storage.Pool
}

func newEnv(t *testing.T, cfg Config) *env {
	e := &env{t: t, cfg: cfg, ctx: t.Context()}
	e.pool = cfg.NewPool(t)
	require.NotNil(t, e.pool, "NewPool returned nil")
	t.Cleanup(func() { assert.NoError(t, e.pool.Close(), "close pool") })
	return e
}

// vid returns the vid of an AppVM's volume.
func (e *env) vid(vm, volume string) string { return e.vidT(vm, false, volume) }

// vidT returns the vid of volume `volume` of VM `vm` (template: a template
// VM) in the pool of the subtest.
func (e *env) vidT(vm string, template bool, volume string) string {
	if e.cfg.PoolVID != nil {
		return e.cfg.PoolVID(e.pool, vm, template, volume)
	}
	return e.cfg.VID(vm, template, volume)
}

// keep returns n, or the driver's maximum revisions_to_keep if n is above
// it.
func (e *env) keep(n int) int {
	if m := e.cfg.Caps.MaxRevisions; m >= 0 && n > m {
		return m
	}
	return n
}

// originConf is a writable save_on_stop volume keeping keep revisions.
func (e *env) originConf(vid string, size int64, keep int) storage.VolumeConfig {
	return storage.VolumeConfig{Name: nameOf(vid), VID: vid, Size: size, RW: true, SaveOnStop: true, RevisionsToKeep: &keep}
}

// snapshotConf is a writable snap_on_start volume of source.
func (e *env) snapshotConf(vid, source string, size int64) storage.VolumeConfig {
	return storage.VolumeConfig{Name: nameOf(vid), VID: vid, Size: size, RW: true, SnapOnStart: true, Source: source}
}

// volatileConf is a writable volume that neither snapshots nor saves.
func (e *env) volatileConf(vid string, size int64) storage.VolumeConfig {
	return storage.VolumeConfig{Name: nameOf(vid), VID: vid, Size: size, RW: true}
}

// nameOf returns the volume name of a vid made by Config.VID: the suite
// always names volumes so that the vid ends with the name.
func nameOf(vid string) string {
	for i := len(vid) - 1; i >= 0; i-- {
		if c := vid[i]; !(c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return vid[i+1:]
		}
	}
	return vid
}

// create registers and creates a volume.
func (e *env) create(c storage.VolumeConfig) storage.Volume {
	e.t.Helper()
	v, err := e.pool.InitVolume(c)
	require.NoError(e.t, err, "init volume %s", c.VID)
	require.NoError(e.t, v.Create(e.ctx), "create %s", c.VID)
	return v
}

// get returns the pool's volume with v's vid (after a reopen, the new
// pool's).
func (e *env) get(v storage.Volume) storage.Volume {
	e.t.Helper()
	got, err := e.pool.Volume(v.Config().VID)
	require.NoError(e.t, err)
	return got
}

// reopen simulates a crash: the pool is closed with its volumes as they
// are, opened again and given the same volume configurations.
func (e *env) reopen() {
	e.t.Helper()
	var confs []storage.VolumeConfig
	for _, v := range e.pool.Volumes() {
		confs = append(confs, v.Config())
	}
	e.reopenEmpty()
	for _, c := range confs {
		_, err := e.pool.InitVolume(c)
		require.NoError(e.t, err, "init volume %s after reopen", c.VID)
	}
}

// reopenEmpty closes and reopens the pool without registering volumes.
func (e *env) reopenEmpty() {
	e.t.Helper()
	p := e.cfg.Reopen(e.t, e.pool)
	require.NotNil(e.t, p, "Reopen returned nil")
	e.pool = p
}

// flush waits for the pool's background work, if it has any.
func (e *env) flush() {
	e.t.Helper()
	if f, ok := e.pool.(storage.Flusher); ok {
		require.NoError(e.t, f.Flush(e.ctx))
	}
}

func (e *env) start(v storage.Volume) {
	e.t.Helper()
	require.NoError(e.t, v.Start(e.ctx), "start %s", v.Config().VID)
}

func (e *env) stop(v storage.Volume) {
	e.t.Helper()
	require.NoError(e.t, v.Stop(e.ctx), "stop %s", v.Config().VID)
}

// run starts v, checks that its device holds have, writes a block tagged
// tag at each offset and stops v; it returns what v's device held before
// the stop.
func (e *env) run(v storage.Volume, have content, tag byte, offs ...int64) content {
	e.t.Helper()
	e.start(v)
	e.checkDevice(v, have, "at start")
	want := e.writeBlocks(v, have, tag, offs...)
	e.stop(v)
	return want
}

// writeBlocks writes blocks tagged tag at offs to v's device, which holds
// have, and returns what it holds then.
func (e *env) writeBlocks(v storage.Volume, have content, tag byte, offs ...int64) content {
	e.t.Helper()
	for _, off := range offs {
		e.write(v, off, tag)
		have = have.with(off, tag)
	}
	return have
}

// must returns a function that fails the test on a non-nil error and
// returns the value otherwise: must[bool](e)(v.IsRunning(e.ctx)).
func must[T any](e *env) func(T, error) T {
	return func(x T, err error) T {
		e.t.Helper()
		require.NoError(e.t, err)
		return x
	}
}

func (e *env) running(v storage.Volume) bool  { return must[bool](e)(v.IsRunning(e.ctx)) }
func (e *env) dirty(v storage.Volume) bool    { return must[bool](e)(v.IsDirty(e.ctx)) }
func (e *env) outdated(v storage.Volume) bool { return must[bool](e)(v.IsOutdated(e.ctx)) }
func (e *env) size(v storage.Volume) int64    { return must[int64](e)(v.Size(e.ctx)) }
func (e *env) revisions(v storage.Volume) []storage.Revision {
	return must[[]storage.Revision](e)(v.Revisions(e.ctx))
}

// revisionIDs returns the ids of v's revisions, oldest first.
func (e *env) revisionIDs(v storage.Volume) []string {
	e.t.Helper()
	var ids []string
	for _, r := range e.revisions(v) {
		ids = append(ids, r.ID)
	}
	return ids
}

// isAnyOf reports whether err wraps one of targets.
func isAnyOf(err error, targets ...error) bool {
	return slices.ContainsFunc(targets, func(target error) bool { return errors.Is(err, target) })
}

// assertRefused checks that err refuses an operation the volume or driver
// does not do: ErrUnsupported or ErrInvalidConfig.
func assertRefused(t *testing.T, err error, what string) {
	t.Helper()
	if !isAnyOf(err, storage.ErrUnsupported, storage.ErrInvalidConfig) {
		assert.Failf(t, "not refused", "%s: got %v, want an error wrapping ErrUnsupported or ErrInvalidConfig", what, err)
	}
}
