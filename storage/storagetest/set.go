package storagetest

import (
	"context"
	"errors"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

var setCases = []testCase{
	{"start_stop", setStartStop},
	{"verify_fails", setVerifyFails},
	{"start_fails_rollback", setStartFailsRollback},
	{"resumed_kept", setResumedKept},
}

// vmFixture is the volumes of an AppVM: private (an origin with one
// commit), root (a snapshot of its template's root) and volatile, and an
// extra volatile volume for failingStart to wrap.
type vmFixture struct {
	tplRoot, private, root, volatile, extra storage.Volume
	tplData, privData                       content
}

// vm makes the fixture; without a template, the template's root is
// registered but never created, so the root snapshot's source is missing.
func (e *env) vm(template bool) *vmFixture {
	e.t.Helper()
	fx := &vmFixture{}
	tplConf := e.originConf(e.vidT("tpl", true, "root"), volSize, e.keep(1))
	if template {
		fx.tplRoot, fx.tplData = e.templateRoot()
	} else {
		v, err := e.pool.InitVolume(tplConf)
		require.NoError(e.t, err)
		fx.tplRoot = v
	}
	fx.private = e.create(e.originConf(e.vid("work", "private"), volSize, e.keep(1)))
	fx.privData = e.run(fx.private, zeros(volSize), 0x61, 0)
	fx.root = e.create(e.snapshotConf(e.vid("work", "root"), tplConf.VID, volSize))
	fx.volatile = e.create(e.volatileConf(e.vid("work", "volatile"), volSize))
	fx.extra = e.create(e.volatileConf(e.vid("work", "extra"), volSize))
	return fx
}

func (fx *vmFixture) set() *storage.Set { return storage.NewSet(fx.private, fx.root, fx.volatile) }

// assertStopped checks that no volume of the VM runs and that private
// still holds its committed data and revisions.
func (e *env) assertStopped(fx *vmFixture, revs []string, what string) {
	e.t.Helper()
	for _, v := range fx.set().Volumes() {
		assert.False(e.t, e.running(v), "%s: %s runs", what, v.Config().VID)
	}
	assert.Equal(e.t, revs, e.revisionIDs(fx.private), "%s: private's revisions", what)
	e.checkExport(fx.private, fx.privData, what)
}

// setStartStop: a Set starts and stops a VM's volumes together.
func setStartStop(e *env) {
	t := e.t
	fx := e.vm(true)
	s := fx.set()
	require.NoError(t, s.Start(e.ctx))
	for _, v := range s.Volumes() {
		assert.True(t, e.running(v), "%s runs", v.Config().VID)
	}
	e.checkDevice(fx.private, fx.privData, "private")
	e.checkDevice(fx.root, fx.tplData, "root")
	e.checkDevice(fx.volatile, zeros(volSize), "volatile")
	want := e.writeBlocks(fx.private, fx.privData, 0x62, mib)
	e.writeBlocks(fx.root, fx.tplData, 0x63, mib)
	e.writeBlocks(fx.volatile, zeros(volSize), 0x64, mib)
	require.NoError(t, s.Stop(e.ctx))
	require.NoError(t, s.Stop(e.ctx), "a second stop")
	for _, v := range s.Volumes() {
		assert.False(t, e.running(v), "%s runs", v.Config().VID)
	}
	e.checkExport(fx.private, want, "private committed")
	require.NoError(t, s.Start(e.ctx))
	e.checkDevice(fx.root, fx.tplData, "root's writes discarded")
	e.checkDevice(fx.volatile, zeros(volSize), "volatile's writes discarded")
	require.NoError(t, s.Stop(e.ctx))
}

// setVerifyFails: when a volume's image is missing (the root snapshot's
// source was never created), Verify fails and nothing starts.
func setVerifyFails(e *env) {
	t := e.t
	fx := e.vm(false)
	revs := e.revisionIDs(fx.private)
	err := fx.set().Start(e.ctx)
	assert.ErrorIs(t, err, storage.ErrNotFound)
	e.assertStopped(fx, revs, "after a failed verify")
}

// failingStart is a volume whose Start fails without doing anything.
type failingStart struct {
	storage.Volume
	err error
}

func (f failingStart) Start(context.Context) error { return f.err }

var errInjected = errors.New("storagetest: injected start failure")

// setStartFailsRollback: when one start fails after the others started,
// the others are rolled back without a commit: no revision is added or
// pruned and the committed data stays; the next start works.
func setStartFailsRollback(e *env) {
	t := e.t
	fx := e.vm(true)
	revs := e.revisionIDs(fx.private)
	s := storage.NewSet(fx.private, fx.root, fx.volatile, failingStart{fx.extra, errInjected})
	err := s.Start(e.ctx)
	assert.ErrorIs(t, err, errInjected)
	e.assertStopped(fx, revs, "after a rolled back start")
	require.NoError(t, fx.set().Start(e.ctx))
	e.checkDevice(fx.private, fx.privData, "start after a rollback")
	e.checkDevice(fx.root, fx.tplData, "start after a rollback")
	require.NoError(t, fx.set().Stop(e.ctx))
}

// setResumedKept: after a crash of a running VM, a failed start keeps the
// origin's uncommitted data (it was resumed) and rolls back the snapshot
// and volatile volumes, which started fresh; the next start resumes the
// origin and gives the others fresh content.
func setResumedKept(e *env) {
	t := e.t
	fx := e.vm(true)
	require.NoError(t, fx.set().Start(e.ctx))
	want := e.writeBlocks(fx.private, fx.privData, 0x65, mib)
	e.writeBlocks(fx.root, fx.tplData, 0x66, 0, mib)
	e.writeBlocks(fx.volatile, zeros(volSize), 0x67, 0, mib)
	e.reopen()
	fx.private, fx.root, fx.volatile, fx.extra = e.get(fx.private), e.get(fx.root), e.get(fx.volatile), e.get(fx.extra)
	revs := e.revisionIDs(fx.private)
	s := storage.NewSet(fx.private, fx.root, fx.volatile, failingStart{fx.extra, errInjected})
	assert.ErrorIs(t, s.Start(e.ctx), errInjected)
	assert.True(t, e.running(fx.private), "a resumed volume keeps running")
	assert.True(t, e.dirty(fx.private))
	assert.False(t, e.running(fx.root), "the snapshot started fresh and was rolled back")
	assert.False(t, e.running(fx.volatile), "the volatile volume started fresh and was rolled back")
	assert.Equal(t, revs, e.revisionIDs(fx.private))
	e.checkDevice(fx.private, want, "a resumed volume keeps its data")
	require.NoError(t, fx.set().Start(e.ctx))
	e.checkDevice(fx.private, want, "resumed again")
	e.checkDevice(fx.root, fx.tplData, "the snapshot is fresh")
	e.checkDevice(fx.volatile, zeros(volSize), "the volatile volume is fresh")
	require.NoError(t, fx.set().Stop(e.ctx))
	e.checkExport(fx.private, want, "committed after the rollback")
}
