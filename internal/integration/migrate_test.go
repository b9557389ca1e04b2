package integration

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/dmsnap"
	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

const volSize = 8 * chunk // 1 MiB

// fileVM creates, in the file pool varlibqubes of m, a template tpl with
// a root and an AppVM work with private (revisions_to_keep 1), a root
// snapshot of tpl's and volatile, and imports data into the origins.
func fileVM(t *testing.T, m *pool.Manager) {
	t.Helper()
	ctx := t.Context()
	for vm, cfgs := range map[string][]storage.VolumeConfig{
		"tpl": {{Name: "root", Pool: pool.VarLibQubes, VID: "vm-templates/tpl/root", Size: volSize, RW: true, SaveOnStop: true, RevisionsToKeep: keep(1)}},
		"work": {
			{Name: "private", Pool: pool.VarLibQubes, VID: "appvms/work/private", Size: volSize, RW: true, SaveOnStop: true, RevisionsToKeep: keep(1)},
			{Name: "volatile", Pool: pool.VarLibQubes, VID: "appvms/work/volatile", Size: volSize, RW: true},
		},
	} {
		for _, cfg := range cfgs {
			_, err := m.CreateVolume(ctx, vm, cfg)
			require.NoError(t, err)
		}
	}
	_, err := m.CreateVolume(ctx, "work", storage.VolumeConfig{Name: "root", Pool: pool.VarLibQubes, VID: "appvms/work/root",
		RW: true, SnapOnStart: true, Source: "vm-templates/tpl/root"})
	require.NoError(t, err)
	importBytes(t, m, "tpl", "root", pattern('T', volSize))
	importBytes(t, m, "work", "private", pattern('P', volSize))
}

// TestMigrateFileToReflink: varlibqubes is made with the file driver even
// where reflinks work; MigratePool refuses while a volume runs or is
// dirty, and on a filesystem without reflinks unless setup_check=no,
// changing nothing; then it switches the pool to file-reflink: no
// *-cow.img is left, every image keeps its bytes, the file driver's
// revision is kept as a file-reflink revision, and the VM starts, stops
// and reverts.
func TestMigrateFileToReflink(t *testing.T) { onEachFS(t, testMigrateFileToReflink) }

func testMigrateFileToReflink(t *testing.T, base string, fc fsCase) {
	ctx := t.Context()
	state, dir := filepath.Join(base, "state"), filepath.Join(base, "qubes")
	m := openManager(t, state)
	p, err := m.AddInitialPools(ctx, pool.InitialPoolsOptions{BaseDir: dir})
	require.NoError(t, err)
	assert.Equal(t, "file", p.Driver(), "varlibqubes is a file pool on %s too", fc.name)
	fileVM(t, m)

	// The file driver's revision as a run leaves it: the image holds the
	// run's data, NAME-cow.img.old the chunks it overwrote.
	now := pattern('P', volSize)
	before := bytes.Clone(now)
	old := map[uint64][]byte{}
	for _, c := range []uint64{1, 6} {
		o := bytes.Repeat([]byte{byte('a' + c)}, chunk)
		copy(before[c*chunk:], o)
		old[c] = o
	}
	privOld := filepath.Join(dir, "appvms/work/private-cow.img.old")
	require.NoError(t, os.WriteFile(privOld, dmsnap.Encode(dmsnap.QubesChunkSectors, old, []uint64{6, 1}), 0o644))
	revs, err := mustVolume(t, m, "work", "private").Revisions(ctx)
	require.NoError(t, err)
	require.Len(t, revs, 1, "the file driver lists its revision")
	require.Equal(t, "old", revs[0].ID)
	stateBefore := stateBytes(t, state)

	// Refused: a running volume (a volatile one runs on its image, no
	// device-mapper needed), a dirty one, no reflinks without
	// setup_check=no.
	vol := mustVolume(t, m, "work", "volatile")
	require.NoError(t, vol.Start(ctx))
	err = m.MigratePool(ctx, pool.VarLibQubes, "file-reflink", fc.params)
	assert.ErrorIs(t, err, storage.ErrRunning)
	require.NoError(t, vol.Stop(ctx))
	cow := filepath.Join(dir, "appvms/work/private-cow.img")
	cowBefore, cowErr := os.ReadFile(cow)
	require.NoError(t, os.WriteFile(cow, dmsnap.Encode(dmsnap.QubesChunkSectors, map[uint64][]byte{0: {1}}, []uint64{0}), 0o644))
	assert.ErrorIs(t, m.MigratePool(ctx, pool.VarLibQubes, "file-reflink", fc.params), storage.ErrDirty)
	if cowErr == nil {
		require.NoError(t, os.WriteFile(cow, cowBefore, 0o644))
	} else {
		require.NoError(t, os.Remove(cow))
	}
	if fc.typ == loopfs.Ext4 {
		assert.ErrorIs(t, m.MigratePool(ctx, pool.VarLibQubes, "file-reflink", nil), storage.ErrReflinkUnsupported)
	}
	assert.Equal(t, stateBefore, stateBytes(t, state), "refused migrations leave the state file alone")
	p, err = m.Pool(pool.VarLibQubes)
	require.NoError(t, err)
	require.Equal(t, "file", p.Driver(), "and the pool is a file pool still")
	importBytes(t, m, "work", "private", now) // it works
	require.NoError(t, os.WriteFile(privOld, dmsnap.Encode(dmsnap.QubesChunkSectors, old, []uint64{6, 1}), 0o644))
	sums := imageSums(t, dir)

	require.NoError(t, m.MigratePool(ctx, pool.VarLibQubes, "file-reflink", fc.params))
	p, err = m.Pool(pool.VarLibQubes)
	require.NoError(t, err)
	assert.Equal(t, "file-reflink", p.Driver())
	for _, f := range treeFiles(t, dir) {
		assert.NotContains(t, f, "-cow.img", "no cow is left")
		assert.NotContains(t, f, ".vmpool-running")
	}
	after := imageSums(t, dir)
	for path, sum := range sums {
		if strings.HasSuffix(path, "-cow.img") {
			continue
		}
		assert.Equal(t, sum, after[path], "%s keeps its bytes", path)
	}
	priv := mustVolume(t, m, "work", "private")
	revs, err = priv.Revisions(ctx)
	require.NoError(t, err)
	require.Len(t, revs, 1, "the file driver's revision is kept")
	revPaths, err := filepath.Glob(filepath.Join(dir, "appvms/work/private.img.*@*Z"))
	require.NoError(t, err)
	require.Len(t, revPaths, 1)
	got, err := os.ReadFile(revPaths[0])
	require.NoError(t, err)
	assert.True(t, bytes.Equal(before, got), "the revision holds the image as it was before the last run")

	// Start, stop, revert on the migrated pool.
	require.NoError(t, m.RevertVolume(ctx, "work", "private", ""))
	require.NoError(t, m.StartVM(ctx, "work"))
	root := mustVolume(t, m, "work", "root")
	assert.Equal(t, pattern('T', volSize)[:4096], readRunning(t, root, 0, 4096), "the AppVM's root is its template's")
	assert.Equal(t, before[chunk:chunk+4096], readRunning(t, priv, chunk, 4096), "private runs on the reverted revision")
	writeRunning(t, priv, 0, bytes.Repeat([]byte{'N'}, 4096))
	require.NoError(t, m.StopVM(ctx, "work"))
	require.NoError(t, m.RevertVolume(ctx, "work", "private", ""))
	require.NoError(t, m.StartVM(ctx, "work"))
	assert.Equal(t, before[:4096], readRunning(t, priv, 0, 4096), "the revert undid the run")
	require.NoError(t, m.StopVM(ctx, "work"))

	require.NoError(t, m.Close())
	m = openManager(t, state)
	p, err = m.Pool(pool.VarLibQubes)
	require.NoError(t, err)
	assert.Equal(t, "file-reflink", p.Driver(), "the state keeps the switch")
	assert.Equal(t, map[string]string{"dir_path": dir, "driver": "file-reflink", "name": pool.VarLibQubes,
		"revisions_to_keep": "1", "ephemeral_volatile": "False"}, maps.Clone(p.Config()))
}

func mustVolume(t *testing.T, m *pool.Manager, vm, name string) storage.Volume {
	t.Helper()
	v, err := m.Volume(vm, name)
	require.NoError(t, err)
	return v
}
