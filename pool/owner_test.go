package pool_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

// TestTwoStatesOnOnePool: a second state directory cannot take over the
// pool directory of a first (AddPool is ErrInUse, naming the owner), and
// even after adopting it explicitly it cannot destroy the first's data:
// CreateVolume of a vid with data is ErrExists and keeps it. Only
// ReplaceVolume, asked for by name, deletes it.
func TestTwoStatesOnOnePool(t *testing.T) {
	ctx := t.Context()
	base := t.TempDir()
	stateA, stateB, poolDir := filepath.Join(base, "a"), filepath.Join(base, "b"), filepath.Join(base, "pool")
	a := reflinkManager(t, stateA, poolDir)
	private := storage.VolumeConfig{Name: "private", Pool: "p", VID: "appvms/work/private", Size: recSize, RW: true, SaveOnStop: true}
	_, err := a.CreateVolume(ctx, "work", private)
	require.NoError(t, err)
	require.NoError(t, a.StartVM(ctx, "work"))
	writeDevice(t, vol(t, a, "work", "private"), block(0xaa))
	require.NoError(t, a.StopVM(ctx, "work"))
	require.NoError(t, a.Close())

	b, err := pool.OpenManager(ctx, stateB, pool.ManagerOptions{})
	require.NoError(t, err)
	params := map[string]string{"dir_path": poolDir, "setup_check": "no"}
	_, err = b.AddPool(ctx, "p", "file-reflink", params)
	require.ErrorIs(t, err, storage.ErrInUse)
	assert.ErrorContains(t, err, "belongs to pool p of the vmpool state in "+stateA)
	assert.NoFileExists(t, filepath.Join(stateB, pool.StateFile), "a refused pool add writes no state")

	_, err = b.AdoptPool(ctx, "p", "file-reflink", params)
	require.NoError(t, err, "an explicit adoption")
	before := stateBytes(t, stateB)
	_, err = b.CreateVolume(ctx, "work", private)
	require.ErrorIs(t, err, storage.ErrExists)
	assert.Equal(t, before, stateBytes(t, stateB), "a refused create saves nothing")
	// Cancelled before the driver looked: the data stays, and the vid is
	// not left registered.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = b.CreateVolume(cancelled, "work", private)
	require.ErrorIs(t, err, context.Canceled)
	_, err = b.CreateVolume(ctx, "work", private)
	require.ErrorIs(t, err, storage.ErrExists, "refused for the data, not for a registration left over")
	data, err := os.ReadFile(filepath.Join(poolDir, "appvms", "work", "private.img"))
	require.NoError(t, err)
	assert.Equal(t, block(0xaa), data[:recBlock], "the first state's data is kept")
	files, err := os.ReadDir(filepath.Join(poolDir, "appvms", "work"))
	require.NoError(t, err)
	assert.Len(t, files, 3, "clean image, precache and revision are all there")

	v, err := b.ReplaceVolume(ctx, "work", private)
	require.NoError(t, err, "replacing, when asked for")
	revs, err := v.Revisions(ctx)
	require.NoError(t, err)
	assert.Empty(t, revs)
	require.NoError(t, b.StartVM(ctx, "work"))
	assert.Equal(t, make([]byte, recBlock), readDevice(t, v))
	require.NoError(t, b.StopVM(ctx, "work"))
	require.NoError(t, b.Close())
	// The first state no longer owns its pool: it opens, with the pool
	// unavailable and told why, not given a pool another state works on.
	a, err = pool.OpenManager(ctx, stateA, pool.ManagerOptions{})
	require.NoError(t, err)
	defer a.Close()
	p, err := a.Pool("p")
	require.NoError(t, err)
	require.ErrorIs(t, pool.Unavailable(p), pool.ErrUnavailable)
	assert.ErrorContains(t, pool.Unavailable(p), "belongs to pool p of the vmpool state in "+stateB)
	err = a.StartVM(ctx, "work")
	require.ErrorIs(t, err, pool.ErrUnavailable)
	assert.ErrorContains(t, err, "belongs to pool p of the vmpool state in "+stateB)
}
