package pool_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

// TestStateCannotBeSaved: with the state directory on a read-only or a
// full filesystem, an operation that is done on disk reports
// pool.ErrNotSaved (distinct from a failure), a removal is refused before
// any image is deleted, so the state file never lists a volume whose
// images are gone, and the next Manager takes the sizes from the disk.
func TestStateCannotBeSaved(t *testing.T) {
	for _, how := range []string{"read-only", "full"} {
		t.Run(how, func(t *testing.T) { testStateCannotBeSaved(t, how) })
	}
}

func testStateCannotBeSaved(t *testing.T, how string) {
	ctx := t.Context()
	mnt := loopfs.Mount(t, loopfs.Ext4, 16<<20)
	stateDir, poolDir := filepath.Join(mnt, "state"), filepath.Join(t.TempDir(), "pool")
	m := reflinkManager(t, stateDir, poolDir)
	for _, c := range []storage.VolumeConfig{
		{Name: "private", Pool: "p", VID: "appvms/work/private", Size: recSize, RW: true, SaveOnStop: true, RevisionsToKeep: keep(2)},
		{Name: "volatile", Pool: "p", VID: "appvms/work/volatile", Size: recSize, RW: true},
	} {
		_, err := m.CreateVolume(ctx, "work", c)
		require.NoError(t, err)
	}
	require.NoError(t, m.StartVM(ctx, "work"))
	writeDevice(t, vol(t, m, "work", "private"), block(0x51))
	require.NoError(t, m.StopVM(ctx, "work"))
	require.NoError(t, m.StartVM(ctx, "work"))
	writeDevice(t, vol(t, m, "work", "private"), block(0x52))
	before := stateBytes(t, stateDir)

	breakFS := func() {
		switch how {
		case "read-only":
			require.NoError(t, exec.Command("mount", "-o", "remount,ro", mnt).Run())
			t.Cleanup(func() { _ = exec.Command("mount", "-o", "remount,rw", mnt).Run() })
		case "full":
			fill := filepath.Join(mnt, "fill")
			f, err := os.Create(fill)
			require.NoError(t, err)
			// Big writes, then small ones, synced: every block is taken.
			for _, n := range []int{1 << 20, 4096, 512} {
				buf := make([]byte, n)
				for {
					if _, err := f.Write(buf); err != nil {
						break
					}
				}
				_ = f.Sync()
			}
			require.NoError(t, f.Close())
			t.Cleanup(func() { os.Remove(fill) })
		}
	}
	repairFS := func() {
		switch how {
		case "read-only":
			require.NoError(t, exec.Command("mount", "-o", "remount,rw", mnt).Run())
		case "full":
			require.NoError(t, os.Remove(filepath.Join(mnt, "fill")))
		}
	}
	breakFS()

	// Operations that change nothing the state file records need no save.
	require.NoError(t, m.StopVM(ctx, "work"), "a stop changes no recorded size")
	running, err := vol(t, m, "work", "private").IsRunning(ctx)
	require.NoError(t, err)
	assert.False(t, running)
	require.NoError(t, m.RevertVolume(ctx, "work", "private", ""), "a revert to a revision of the same size")
	path, err := vol(t, m, "work", "private").Export(ctx)
	require.NoError(t, err)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, block(0x51), data[:recBlock], "the revert was done: the data before the last stop")
	// One that does is done, and says the state was not saved.
	err = m.ResizeVolume(ctx, "work", "private", 2*recSize, storage.ResizeOptions{})
	require.ErrorIs(t, err, pool.ErrNotSaved, "the resize was done")
	size, err := vol(t, m, "work", "private").Size(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(2*recSize), size)

	err = m.RemoveVolume(ctx, "work", "private")
	require.Error(t, err)
	assert.NotErrorIs(t, err, pool.ErrNotSaved, "a refused removal is a failure")
	assert.FileExists(t, filepath.Join(poolDir, "appvms", "work", "private.img"), "nothing is deleted")
	assert.Equal(t, before, stateBytes(t, stateDir), "the state file is as it was")
	_, err = m.Volume("work", "private")
	assert.NoError(t, err, "the Manager still lists the volume")
	require.NoError(t, m.Close())

	repairFS()
	m = reflinkManager(t, stateDir, poolDir)
	defer func() { require.NoError(t, m.Close()) }()
	v := vol(t, m, "work", "private")
	assert.Equal(t, int64(2*recSize), v.Config().Size, "the size comes from the disk")
	assert.NotEqual(t, before, stateBytes(t, stateDir), "and is saved at open")
	require.NoError(t, m.RemoveVolume(ctx, "work", "private"))
	assert.NoFileExists(t, filepath.Join(poolDir, "appvms", "work", "private.img"))
	_, err = m.Volume("work", "private")
	assert.ErrorIs(t, err, storage.ErrNotFound)
}
