package storagetest

import (
	"fmt"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

// allows tells whether the driver accepts revisions_to_keep n.
func allows(cfg Config, n int) bool { return cfg.Caps.MaxRevisions < 0 || n <= cfg.Caps.MaxRevisions }

func revisionCases(cfg Config) []testCase {
	var cases []testCase
	for _, keep := range []int{0, 1, 3} {
		if allows(cfg, keep) {
			cases = append(cases, testCase{fmt.Sprintf("keep_%d", keep), func(e *env) { revisionsKeep(e, keep) }})
		}
	}
	cases = append(cases, testCase{"above_max", revisionsAboveMax})
	if allows(cfg, 3) {
		cases = append(cases, testCase{"keep_lowered", revisionsLowered})
	}
	return cases
}

// commits starts and stops v n times, writing a new block each time, and
// checks after each commit that v keeps the newest keep revisions, oldest
// first, each commit adding one with a new id. It returns the committed
// states (states[0] = have, before the first commit) and the ids of the
// revisions in the order they were added.
func (e *env) commits(v storage.Volume, have content, n, keep int) (states []content, added []string) {
	t := e.t
	t.Helper()
	states = []content{have}
	added = e.revisionIDs(v)
	for i := 1; i <= n; i++ {
		prev := e.revisionIDs(v)
		have = e.run(v, have, byte(0xd0+i), int64(i)*blockSize)
		states = append(states, have)
		revs := e.revisions(v)
		got := e.revisionIDs(v)
		if keep == 0 {
			assert.Empty(t, got, "commit %d with revisions_to_keep 0", i)
			continue
		}
		if !assert.NotEmpty(t, got, "commit %d", i) {
			continue
		}
		newest := got[len(got)-1]
		if id := e.cfg.RevisionID; id != "" {
			assert.Equal(t, []string{id}, got, "commit %d replaces the driver's only revision", i)
			continue
		}
		assert.NotContains(t, prev, newest, "commit %d adds a revision with a new id", i)
		added = append(added, newest)
		assert.Equal(t, added[max(0, len(added)-keep):], got, "after commit %d: the newest %d revisions, oldest first", i, keep)
		for j := 1; j < len(revs); j++ {
			assert.False(t, revs[j].Time.Before(revs[j-1].Time), "revision times go forward: %v", revs)
		}
	}
	return states, added
}

// revisionsKeep: revisions_to_keep 0 keeps no revision; n keeps the newest
// n, older ones are pruned; a revision holds the state its commit replaced.
func revisionsKeep(e *env, keep int) {
	t := e.t
	v := e.create(e.originConf(e.vid("vm1", "private"), volSize, keep))
	states, added := e.commits(v, zeros(volSize), keep+2, keep)
	e.checkExport(v, states[len(states)-1], "after the commits")
	if !e.cfg.Caps.Revert || keep == 0 {
		return
	}
	// added[k] was made by commit k+1 and holds states[k].
	oldest := e.revisionIDs(v)[0]
	k := -1
	for i, id := range added {
		if id == oldest {
			k = i
		}
	}
	require.GreaterOrEqual(t, k, 0, "oldest revision %s was not added by a commit", oldest)
	require.NoError(t, v.Revert(e.ctx, oldest))
	e.checkExport(v, states[k], "reverted to the oldest kept revision")
}

// revisionsAboveMax: a driver with a maximum refuses more revisions; one
// without accepts many.
func revisionsAboveMax(e *env) {
	t := e.t
	m := e.cfg.Caps.MaxRevisions
	if m < 0 {
		v := e.create(e.originConf(e.vid("vm1", "private"), volSize, 100))
		e.commits(v, zeros(volSize), 3, 100)
		assert.Len(t, e.revisions(v), 3)
		return
	}
	c := e.originConf(e.vid("vm1", "private"), volSize, m+1)
	v, err := e.pool.InitVolume(c)
	if err == nil {
		err = v.Create(e.ctx)
	}
	assertRefused(t, err, fmt.Sprintf("revisions_to_keep %d above the maximum %d", m+1, m))
	ok := e.create(e.originConf(e.vid("vm2", "private"), volSize, m))
	e.commits(ok, zeros(volSize), m+1, m)
}

// revisionsLowered: when the caller lowers revisions_to_keep, the next
// commit prunes down to it.
func revisionsLowered(e *env) {
	t := e.t
	v := e.create(e.originConf(e.vid("vm1", "private"), volSize, 3))
	states, _ := e.commits(v, zeros(volSize), 4, 3)
	require.Len(t, e.revisions(v), 3)
	ids := e.revisionIDs(v)
	c := v.Config()
	e.reopenEmpty()
	one := 1
	c.RevisionsToKeep = &one
	v, err := e.pool.InitVolume(c)
	require.NoError(t, err)
	assert.Equal(t, ids, e.revisionIDs(v), "registering a volume prunes nothing")
	e.run(v, states[len(states)-1], 0xdf, 0)
	got := e.revisionIDs(v)
	if assert.Len(t, got, 1) {
		assert.NotContains(t, ids, got[0], "the newest revision is kept")
	}
}

func revertCases(cfg Config) []testCase {
	if !cfg.Caps.Revert {
		return []testCase{{"unsupported", revertUnsupported}}
	}
	return []testCase{
		{"newest", revertNewest},
		{"older", revertOlder},
		{"unknown_id", revertUnknown},
		{"bad_id", revertBadID},
		{"running", revertRunning},
		{"no_revision", revertNone},
	}
}

func revertUnsupported(e *env) {
	v := e.create(e.originConf(e.vid("vm1", "private"), volSize, e.keep(1)))
	e.run(v, zeros(volSize), 0xe0, 0)
	before := e.state()
	assert.ErrorIs(e.t, v.Revert(e.ctx, ""), storage.ErrUnsupported)
	e.assertUnchanged(before, "an unsupported revert")
}

// revertFixture is an origin with three commits: states[0] (empty) to
// states[3] (committed now); ids are its revisions, revision ids[k]
// holding states[len(states)-1-len(ids)+k].
type revertFixture struct {
	v      storage.Volume
	states []content
	ids    []string
}

func (e *env) revertFixture() revertFixture {
	e.t.Helper()
	keep := e.keep(3)
	v := e.create(e.originConf(e.vid("vm1", "private"), volSize, keep))
	states, _ := e.commits(v, zeros(volSize), 3, keep)
	ids := e.revisionIDs(v)
	require.Len(e.t, ids, min(keep, 3))
	require.NotEmpty(e.t, ids, "revert tests need revisions")
	return revertFixture{v: v, states: states, ids: ids}
}

// data returns the data of revision ids[k].
func (fx revertFixture) data(k int) content { return fx.states[len(fx.states)-1-len(fx.ids)+k] }

func (fx revertFixture) current() content { return fx.states[len(fx.states)-1] }

// checkRevertedRevisions checks the revisions after a revert to ids[k]:
// with RevertKeepsCurrent that revision is consumed and a new one holds
// the replaced state; else the revisions are as they were. It returns the
// id of the new revision, if any.
func (e *env) checkRevertedRevisions(fx revertFixture, k int) string {
	t := e.t
	t.Helper()
	got := e.revisionIDs(fx.v)
	if !e.cfg.RevertKeepsCurrent {
		assert.Equal(t, fx.ids, got, "revert leaves the revisions as they were")
		return ""
	}
	want := append(append([]string(nil), fx.ids[:k]...), fx.ids[k+1:]...)
	if !assert.Len(t, got, len(want)+1, "revert consumes the revision and keeps the replaced state: %v", got) {
		return ""
	}
	assert.Equal(t, want, got[:len(want)], "the other revisions stay")
	assert.NotContains(t, fx.ids, got[len(want)], "the replaced state is a new revision")
	return got[len(want)]
}

// revertNewest: Revert("") brings back the newest revision's data.
func revertNewest(e *env) {
	t := e.t
	fx := e.revertFixture()
	k := len(fx.ids) - 1
	require.NoError(t, fx.v.Revert(e.ctx, ""))
	e.checkExport(fx.v, fx.data(k), "after revert to the newest revision")
	now := fx.data(k)
	if id := e.checkRevertedRevisions(fx, k); id != "" {
		require.NoError(t, fx.v.Revert(e.ctx, id))
		e.checkExport(fx.v, fx.current(), "the state replaced by a revert was kept as a revision")
		now = fx.current()
	}
	e.start(fx.v)
	e.checkDevice(fx.v, now, "start after revert")
	e.stop(fx.v)
}

// revertOlder: revert to the oldest revision.
func revertOlder(e *env) {
	t := e.t
	fx := e.revertFixture()
	require.NoError(t, fx.v.Revert(e.ctx, fx.ids[0]))
	e.checkExport(fx.v, fx.data(0), "after revert to the oldest revision")
	e.checkRevertedRevisions(fx, 0)
	e.start(fx.v)
	e.checkDevice(fx.v, fx.data(0), "start after revert")
	e.stop(fx.v)
}

// revertUnknown: a revision that does not exist is ErrNotFound and changes
// nothing (Qubes' API: QubesVolumeRevisionNotFoundError).
func revertUnknown(e *env) {
	fx := e.revertFixture()
	before := e.state()
	assert.ErrorIs(e.t, fx.v.Revert(e.ctx, "999999"), storage.ErrNotFound)
	e.assertUnchanged(before, "revert to an unknown revision")
}

// revertBadID: a revision id with characters outside [A-Za-z0-9:._-] is
// ErrInvalidConfig and changes nothing.
func revertBadID(e *env) {
	fx := e.revertFixture()
	before := e.state()
	for _, id := range []string{"../1", "1/2", "a b", "1\x00", "/" + fx.ids[0]} {
		assert.ErrorIs(e.t, fx.v.Revert(e.ctx, id), storage.ErrInvalidConfig, "revert to %q", id)
	}
	e.assertUnchanged(before, "revert to a malformed revision id")
}

// revertRunning: a running (dirty) volume cannot be reverted (ErrDirty)
// and keeps its data.
func revertRunning(e *env) {
	t := e.t
	fx := e.revertFixture()
	e.start(fx.v)
	have := e.writeBlocks(fx.v, fx.current(), 0xe1, 0)
	before := e.state()
	assert.ErrorIs(t, fx.v.Revert(e.ctx, ""), storage.ErrDirty)
	assert.ErrorIs(t, fx.v.Revert(e.ctx, fx.ids[0]), storage.ErrDirty)
	e.assertUnchanged(before, "revert of a running volume")
	e.stop(fx.v)
	e.checkExport(fx.v, have, "committed after a refused revert")
}

// revertNone: a volume without revisions has nothing to revert to.
func revertNone(e *env) {
	v := e.create(e.originConf(e.vid("vm1", "private"), volSize, e.keep(1)))
	before := e.state()
	assert.ErrorIs(e.t, v.Revert(e.ctx, ""), storage.ErrNotFound)
	e.assertUnchanged(before, "revert without revisions")
}
