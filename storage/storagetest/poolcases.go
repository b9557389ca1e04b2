package storagetest

import (
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

var poolCases = []testCase{
	{"capabilities", poolCapabilities},
	{"reopen_no_discovery", poolReopen},
	{"verify", poolVerify},
	{"ephemeral", poolEphemeral},
	{"create_keeps_data", poolCreateKeepsData},
}

// poolCreateKeepsData: Create of a save_on_stop volume whose vid has data
// or revisions on disk (registered again after a reopen, as a second
// caller or one that lost its configuration would) is ErrExists and
// changes nothing; after Remove, Create makes a fresh volume. Snapshot
// and volatile volumes are created over their leftovers.
func poolCreateKeepsData(e *env) {
	t := e.t
	v := e.create(e.originConf(e.vid("vm1", "private"), volSize, e.keep(1)))
	want := e.run(v, zeros(volSize), 0xd1, 0)
	want = e.run(v, want, 0xd2, mib)
	tpl, _ := e.templateRoot()
	snap := e.create(e.snapshotConf(e.vid("vm1", "root"), tpl.Config().VID, volSize))
	vol := e.create(e.volatileConf(e.vid("vm1", "volatile"), volSize))
	e.start(snap)
	e.start(vol)
	e.reopen()
	v, snap, vol = e.get(v), e.get(snap), e.get(vol)
	before := e.state()
	assert.ErrorIs(t, v.Create(e.ctx), storage.ErrExists, "create over committed data")
	e.assertUnchanged(before, "a refused create")
	e.checkExport(v, want, "the data is kept")
	require.NoError(t, snap.Create(e.ctx), "a snapshot is created over its leftovers")
	require.NoError(t, vol.Create(e.ctx), "a volatile volume is created over its leftovers")
	require.NoError(t, v.Remove(e.ctx))
	v = e.create(e.originConf(e.vid("vm1", "private"), volSize, e.keep(1)))
	e.checkExport(v, zeros(volSize), "created again after Remove")
	assert.Empty(t, e.revisions(v))
}

// poolVerify: Verify reports the image Start would miss (ErrNotFound): an
// origin's own image before Create, a snapshot's source image; a volatile
// volume needs none.
func poolVerify(e *env) {
	t := e.t
	tpl, err := e.pool.InitVolume(e.originConf(e.vidT("tpl", true, "root"), volSize, e.keep(1)))
	require.NoError(t, err)
	snap := e.create(e.snapshotConf(e.vid("vm1", "root"), tpl.Config().VID, volSize))
	vol := e.create(e.volatileConf(e.vid("vm1", "volatile"), volSize))
	assert.ErrorIs(t, tpl.Verify(e.ctx), storage.ErrNotFound, "origin before create")
	assert.ErrorIs(t, snap.Verify(e.ctx), storage.ErrNotFound, "snapshot of an origin never created")
	assert.ErrorIs(t, snap.Start(e.ctx), storage.ErrNotFound, "start of a snapshot of an origin never created")
	assert.False(t, e.running(snap))
	assert.NoError(t, vol.Verify(e.ctx))
	require.NoError(t, tpl.Create(e.ctx))
	assert.NoError(t, tpl.Verify(e.ctx))
	assert.NoError(t, snap.Verify(e.ctx))
}

// poolEphemeral: an explicit ephemeral is kept; volumes that snapshot,
// save or are read-only are never ephemeral (reference §1).
func poolEphemeral(e *env) {
	t := e.t
	yes := true
	c := e.volatileConf(e.vid("vm1", "volatile"), volSize)
	c.Ephemeral = &yes
	v := e.create(c)
	assert.True(t, v.Ephemeral())
	require.NotNil(t, v.Config().Ephemeral)
	assert.True(t, *v.Config().Ephemeral)
	ro := e.volatileConf(e.vid("vm1", "kernel"), volSize)
	ro.RW = false
	assert.False(t, e.create(ro).Ephemeral(), "a read-only volume")
	assert.False(t, e.create(e.originConf(e.vid("vm1", "private"), volSize, e.keep(1))).Ephemeral(), "an origin")
}

// poolCapabilities: the pool reports the capabilities the driver's test
// expects on this filesystem, and its name and driver.
func poolCapabilities(e *env) {
	t := e.t
	assert.Equal(t, e.cfg.Caps, e.pool.Capabilities())
	assert.NotEmpty(t, e.pool.Name())
	assert.NotEmpty(t, e.pool.Driver())
	conf := e.pool.Config()
	assert.Equal(t, e.pool.Name(), conf["name"])
	assert.Equal(t, e.pool.Driver(), conf["driver"])
	assert.Empty(t, e.pool.Volumes())
	_, err := e.pool.Volume(e.vid("vm1", "private"))
	assert.ErrorIs(t, err, storage.ErrNotFound)
}

// poolReopen: a pool does not discover volumes from disk; the caller
// registers them again and finds their data. The volumes of the closed
// pool refuse to work (ErrClosed), and a vid cannot be registered twice.
func poolReopen(e *env) {
	t := e.t
	old := e.create(e.originConf(e.vid("vm1", "private"), volSize, e.keep(1)))
	want := e.run(old, zeros(volSize), 0xb2, 0)
	revs := e.revisionIDs(old)
	conf := old.Config()
	e.reopenEmpty()
	assert.Empty(t, e.pool.Volumes(), "a pool does not discover volumes")
	_, err := e.pool.Volume(conf.VID)
	assert.ErrorIs(t, err, storage.ErrNotFound)
	assert.ErrorIs(t, old.Start(e.ctx), storage.ErrClosed, "a volume of a closed pool")
	v, err := e.pool.InitVolume(conf)
	require.NoError(t, err)
	assert.Equal(t, conf, v.Config())
	_, err = e.pool.InitVolume(conf)
	assert.ErrorIs(t, err, storage.ErrExists)
	assert.Equal(t, revs, e.revisionIDs(v))
	e.checkExport(v, want, "after reopening")
}
