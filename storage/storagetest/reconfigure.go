package storagetest

import (
	"strconv"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

// reconfigureCases change registered volumes and the pool, as Qubes'
// admin.vm.volume.Set.* and admin.pool.Set.* do.
var reconfigureCases = []testCase{
	{"revisions_to_keep", reconfigureRevisions},
	{"snapshots_toggle", reconfigureSnapshotsToggle},
	{"rw", reconfigureRW},
	{"ephemeral", reconfigureEphemeral},
	{"source", reconfigureSource},
	{"bad_change", reconfigureBad},
	{"pool_parameters", reconfigurePool},
}

func intp(n int) *int       { return &n }
func boolp(b bool) *bool    { return &b }
func strp(s string) *string { return &s }
func itoa(n int) string     { return strconv.Itoa(n) }

// reconfigureRevisions: a new revisions_to_keep applies from the next
// commit on; one above the driver's maximum is refused and changes
// nothing.
func reconfigureRevisions(e *env) {
	t := e.t
	v := e.create(e.originConf(e.vid("vm1", "private"), volSize, e.keep(1)))
	max := e.cfg.Caps.MaxRevisions
	if max >= 0 {
		before := e.state()
		assertRefused(t, v.Reconfigure(e.ctx, storage.VolumeChange{RevisionsToKeep: intp(max + 1)}), "revisions_to_keep above the maximum")
		e.assertUnchanged(before, "a refused revisions_to_keep")
	}
	n := e.keep(3)
	require.NoError(t, v.Reconfigure(e.ctx, storage.VolumeChange{RevisionsToKeep: &n}))
	assert.Equal(t, n, *v.Config().RevisionsToKeep)
	have := zeros(volSize)
	for i := range 4 {
		have = e.run(v, have, byte(0xc0+i), 0)
	}
	assert.Len(t, e.revisions(v), n, "the new revisions_to_keep prunes")
	require.NoError(t, v.Reconfigure(e.ctx, storage.VolumeChange{RevisionsToKeep: intp(0)}))
	e.run(v, have, 0xc8, 0)
	assert.Empty(t, e.revisions(v), "revisions_to_keep 0 prunes all at the next commit")
}

// reconfigureSnapshotsToggle: revisions_to_keep to or from -1 needs a
// stopped volume (Qubes' set_revisions_to_keep: QubesVMNotHaltedError);
// other changes are allowed while it runs.
func reconfigureSnapshotsToggle(e *env) {
	t := e.t
	v := e.create(e.originConf(e.vid("vm1", "private"), volSize, e.keep(1)))
	data := e.run(v, zeros(volSize), 0xc1, 0)
	e.start(v)
	before := e.state()
	assert.ErrorIs(t, v.Reconfigure(e.ctx, storage.VolumeChange{RevisionsToKeep: intp(-1)}), storage.ErrRunning)
	e.assertUnchanged(before, "a refused revisions_to_keep -1 while running")
	require.NoError(t, v.Reconfigure(e.ctx, storage.VolumeChange{RevisionsToKeep: intp(0)}), "a change that keeps snapshots enabled while running")
	e.stop(v)
	require.NoError(t, v.Reconfigure(e.ctx, storage.VolumeChange{RevisionsToKeep: intp(-1)}))
	assert.True(t, v.Config().SnapshotsDisabled())
	data = e.run(v, data, 0xc2, mib)
	assert.Empty(t, e.revisions(v), "no revisions with snapshots disabled")
	e.start(v)
	assert.ErrorIs(t, v.Reconfigure(e.ctx, storage.VolumeChange{RevisionsToKeep: intp(1)}), storage.ErrRunning)
	e.checkDevice(v, data, "running with snapshots disabled")
	e.stop(v)
	require.NoError(t, v.Reconfigure(e.ctx, storage.VolumeChange{RevisionsToKeep: intp(e.keep(1))}))
	e.flush()
	data = e.run(v, data, 0xc3, 2*mib)
	e.checkExport(v, data, "snapshots enabled again")
}

// reconfigureRW: rw changes only while the volume is stopped (Qubes'
// admin.vm.volume.Set.rw needs a halted VM); a read-only volume's device
// is read-only and it cannot be resized.
func reconfigureRW(e *env) {
	t := e.t
	v := e.create(e.originConf(e.vid("vm1", "private"), volSize, e.keep(1)))
	e.start(v)
	before := e.state()
	assert.ErrorIs(t, v.Reconfigure(e.ctx, storage.VolumeChange{RW: boolp(false)}), storage.ErrRunning)
	e.assertUnchanged(before, "a refused rw change while running")
	e.stop(v)
	require.NoError(t, v.Reconfigure(e.ctx, storage.VolumeChange{RW: boolp(false)}))
	assert.False(t, v.Config().RW)
	assert.False(t, v.BlockDevice().RW)
	assert.ErrorIs(t, v.Resize(e.ctx, volSize+mib, storage.ResizeOptions{}), storage.ErrReadOnly)
	require.NoError(t, v.Reconfigure(e.ctx, storage.VolumeChange{RW: boolp(true)}))
	assert.True(t, v.BlockDevice().RW)
}

// reconfigureEphemeral: a writable volatile volume can be made ephemeral
// (effective at its next start), an origin cannot (Qubes' ephemeral
// setter).
func reconfigureEphemeral(e *env) {
	t := e.t
	vol := e.create(e.volatileConf(e.vid("vm1", "volatile"), volSize))
	require.NoError(t, vol.Reconfigure(e.ctx, storage.VolumeChange{Ephemeral: boolp(true)}))
	assert.True(t, vol.Ephemeral())
	require.NoError(t, vol.Reconfigure(e.ctx, storage.VolumeChange{Ephemeral: boolp(false)}))
	assert.False(t, vol.Ephemeral())
	priv := e.create(e.originConf(e.vid("vm1", "private"), volSize, e.keep(1)))
	before := e.state()
	assert.ErrorIs(t, priv.Reconfigure(e.ctx, storage.VolumeChange{Ephemeral: boolp(true)}), storage.ErrInvalidConfig)
	e.assertUnchanged(before, "a refused ephemeral")
	require.NoError(t, priv.Reconfigure(e.ctx, storage.VolumeChange{Ephemeral: boolp(false)}), "false is always allowed")
}

// reconfigureSource: a snapshot volume gets a new source while stopped
// (its VM got a new template); the next start is a copy of the new
// source.
func reconfigureSource(e *env) {
	t := e.t
	tpl1, data1 := e.templateRoot()
	tpl2 := e.create(e.originConf(e.vidT("tpl2", true, "root"), volSize, e.keep(1)))
	data2 := e.run(tpl2, zeros(volSize), 0xc4, mib)
	snap := e.create(e.snapshotConf(e.vid("vm1", "root"), tpl1.Config().VID, volSize))
	e.start(snap)
	e.checkDevice(snap, data1, "the first template")
	before := e.state()
	assert.ErrorIs(t, snap.Reconfigure(e.ctx, storage.VolumeChange{Source: strp(tpl2.Config().VID)}), storage.ErrRunning)
	e.assertUnchanged(before, "a refused source change while running")
	e.stop(snap)
	require.NoError(t, snap.Reconfigure(e.ctx, storage.VolumeChange{Source: strp(tpl2.Config().VID)}))
	assert.Equal(t, tpl2.Config().VID, snap.Config().Source)
	require.NoError(t, snap.Verify(e.ctx))
	e.start(snap)
	e.checkDevice(snap, data2, "the new template")
	e.stop(snap)
}

// reconfigureBad: malformed changes are ErrInvalidConfig and change
// nothing.
func reconfigureBad(e *env) {
	t := e.t
	tpl, _ := e.templateRoot()
	snap := e.create(e.snapshotConf(e.vid("vm1", "root"), tpl.Config().VID, volSize))
	priv := e.create(e.originConf(e.vid("vm1", "private"), volSize, e.keep(1)))
	before := e.state()
	for what, err := range map[string]error{
		"revisions_to_keep -2":     priv.Reconfigure(e.ctx, storage.VolumeChange{RevisionsToKeep: intp(-2)}),
		"a source of an origin":    priv.Reconfigure(e.ctx, storage.VolumeChange{Source: strp(tpl.Config().VID)}),
		"an empty source":          snap.Reconfigure(e.ctx, storage.VolumeChange{Source: strp("")}),
		"a malformed source":       snap.Reconfigure(e.ctx, storage.VolumeChange{Source: strp("../../etc/passwd")}),
		"the volume as own source": snap.Reconfigure(e.ctx, storage.VolumeChange{Source: strp(snap.Config().VID)}),
	} {
		assert.ErrorIs(t, err, storage.ErrInvalidConfig, what)
	}
	e.assertUnchanged(before, "malformed changes")
}

// reconfigurePool: revisions_to_keep and ephemeral_volatile of a pool
// change while it is open (Qubes' admin.pool.Set.*): Config reports them
// and they are the defaults of volumes registered afterwards; volumes
// registered before keep their revisions_to_keep. Bad values and unknown
// parameters change nothing.
func reconfigurePool(e *env) {
	t := e.t
	old := e.create(storage.VolumeConfig{Name: "private", VID: e.vid("vm1", "private"), Size: volSize, RW: true, SaveOnStop: true})
	oldKeep := *old.Config().RevisionsToKeep
	n := e.keep(2)
	if n == oldKeep {
		n = 0
	}
	require.NoError(t, e.pool.SetParameter(e.ctx, "revisions_to_keep", itoa(n)))
	assert.Equal(t, itoa(n), e.pool.Config()["revisions_to_keep"])
	assert.Equal(t, oldKeep, *old.Config().RevisionsToKeep, "a registered volume keeps its revisions_to_keep")
	fresh := e.create(storage.VolumeConfig{Name: "private", VID: e.vid("vm2", "private"), Size: volSize, RW: true, SaveOnStop: true})
	assert.Equal(t, n, *fresh.Config().RevisionsToKeep, "the pool's new default")

	vol := e.create(e.volatileConf(e.vid("vm1", "volatile"), volSize))
	require.NoError(t, e.pool.SetParameter(e.ctx, "ephemeral_volatile", "True"))
	assert.Equal(t, "True", e.pool.Config()["ephemeral_volatile"])
	assert.True(t, vol.Ephemeral(), "ephemeral_volatile applies to volatile volumes at once")
	require.NoError(t, e.pool.SetParameter(e.ctx, "ephemeral_volatile", "False"))
	assert.False(t, vol.Ephemeral())

	conf := e.pool.Config()
	assert.ErrorIs(t, e.pool.SetParameter(e.ctx, "revisions_to_keep", "-2"), storage.ErrInvalidConfig)
	assert.ErrorIs(t, e.pool.SetParameter(e.ctx, "revisions_to_keep", "many"), storage.ErrInvalidConfig)
	assert.ErrorIs(t, e.pool.SetParameter(e.ctx, "ephemeral_volatile", "perhaps"), storage.ErrInvalidConfig)
	assert.ErrorIs(t, e.pool.SetParameter(e.ctx, "no_such_parameter", "1"), storage.ErrInvalidConfig)
	assert.Equal(t, conf, e.pool.Config(), "refused changes change nothing")
}
