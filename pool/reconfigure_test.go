package pool_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

func boolp(b bool) *bool    { return &b }
func strp(s string) *string { return &s }
func stateBytes(t *testing.T, dir string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, pool.StateFile))
	require.NoError(t, err)
	return data
}

// TestReconfigurePersists: volume and pool changes survive a reopen of
// the Manager; refused ones change neither the volume nor the state file.
func TestReconfigurePersists(t *testing.T) {
	ctx := t.Context()
	base := t.TempDir()
	stateDir, poolDir := filepath.Join(base, "state"), filepath.Join(base, "pool")
	m := reflinkManager(t, stateDir, poolDir)
	for vm, c := range map[string]storage.VolumeConfig{
		"tpl":  {Name: "root", Pool: "p", VID: "vm-templates/tpl/root", Size: recSize, RW: true, SaveOnStop: true},
		"tpl2": {Name: "root", Pool: "p", VID: "vm-templates/tpl2/root", Size: recSize, RW: true, SaveOnStop: true},
	} {
		_, err := m.CreateVolume(ctx, vm, c)
		require.NoError(t, err)
	}
	require.NoError(t, m.StartVM(ctx, "tpl2"))
	writeDevice(t, vol(t, m, "tpl2", "root"), block(0x22))
	require.NoError(t, m.StopVM(ctx, "tpl2"))
	createWork(t, m, "vm-templates/tpl/root")

	// Refused while the VM runs: nothing changes, on disk or in memory.
	require.NoError(t, m.StartVM(ctx, "work"))
	before := stateBytes(t, stateDir)
	for what, ch := range map[string]storage.VolumeChange{
		"revisions_to_keep -1": {RevisionsToKeep: keep(-1)},
		"rw":                   {RW: boolp(false)},
	} {
		assert.ErrorIs(t, m.ReconfigureVolume(ctx, "work", "private", ch), storage.ErrRunning, what)
	}
	assert.ErrorIs(t, m.ReconfigureVolume(ctx, "work", "root", storage.VolumeChange{Source: strp("vm-templates/tpl2/root")}), storage.ErrRunning, "source")
	assert.Equal(t, before, stateBytes(t, stateDir), "refused changes leave the state file alone")
	assert.Equal(t, 1, *vol(t, m, "work", "private").Config().RevisionsToKeep)
	require.NoError(t, m.StopVM(ctx, "work"))

	// Refused whatever the VM does.
	assert.ErrorIs(t, m.ReconfigureVolume(ctx, "work", "root", storage.VolumeChange{Source: strp("vm-templates/nosuch/root")}), storage.ErrNotFound)
	assert.ErrorIs(t, m.ReconfigureVolume(ctx, "work", "private", storage.VolumeChange{Ephemeral: boolp(true)}), storage.ErrInvalidConfig)
	assert.ErrorIs(t, m.SetPoolParameter(ctx, "p", "dir_path", base), storage.ErrUnsupported)
	assert.ErrorIs(t, m.SetPoolParameter(ctx, "p", "revisions_to_keep", "-7"), storage.ErrInvalidConfig)
	assert.ErrorIs(t, m.SetPoolParameter(ctx, "nosuch", "revisions_to_keep", "1"), storage.ErrNotFound)
	assert.Equal(t, before, stateBytes(t, stateDir), "refused changes leave the state file alone")

	require.NoError(t, m.ReconfigureVolume(ctx, "work", "private", storage.VolumeChange{RevisionsToKeep: keep(3), RW: boolp(false)}))
	require.NoError(t, m.ReconfigureVolume(ctx, "work", "volatile", storage.VolumeChange{Ephemeral: boolp(true)}))
	require.NoError(t, m.ReconfigureVolume(ctx, "work", "root", storage.VolumeChange{Source: strp("vm-templates/tpl2/root")}))
	require.NoError(t, m.SetPoolParameter(ctx, "p", "revisions_to_keep", "5"))
	require.NoError(t, m.SetPoolParameter(ctx, "p", "ephemeral_volatile", "yes"))
	require.NoError(t, m.Close())

	m = reflinkManager(t, stateDir, poolDir)
	defer func() { require.NoError(t, m.Close()) }()
	priv := vol(t, m, "work", "private").Config()
	assert.Equal(t, 3, *priv.RevisionsToKeep)
	assert.False(t, priv.RW)
	assert.True(t, vol(t, m, "work", "volatile").Ephemeral())
	assert.Equal(t, "vm-templates/tpl2/root", vol(t, m, "work", "root").Config().Source)
	p, err := m.Pool("p")
	require.NoError(t, err)
	assert.Equal(t, "5", p.Config()["revisions_to_keep"])
	assert.Equal(t, "True", p.Config()["ephemeral_volatile"])
	require.NoError(t, m.StartVM(ctx, "work"))
	assert.Equal(t, block(0x22), readDevice(t, vol(t, m, "work", "root")), "the root starts from the new template")
	set, err := m.VMVolumes("work")
	require.NoError(t, err)
	var paths []string
	for _, bd := range set.BlockDevices() {
		paths = append(paths, bd.Path)
	}
	assert.Contains(t, paths, "/dev/mapper/vm-volatile-work-crypt@volatile", "the ephemeral volatile volume runs encrypted")
	require.NoError(t, m.StopVM(ctx, "work"))
}

// TestAddPoolOnHeldDirectory: a pool added on a directory the Manager
// holds already (the same path, a symlink to it, the state directory)
// is refused at once, naming the pool.
func TestAddPoolOnHeldDirectory(t *testing.T) {
	ctx := t.Context()
	base := t.TempDir()
	stateDir, poolDir := filepath.Join(base, "state"), filepath.Join(base, "pool")
	m := reflinkManager(t, stateDir, poolDir)
	defer func() { require.NoError(t, m.Close()) }()
	link := filepath.Join(base, "link")
	require.NoError(t, os.Symlink(poolDir, link))
	before := stateBytes(t, stateDir)
	for dir, msg := range map[string]string{
		poolDir:       "is already pool p",
		poolDir + "/": "is already pool p",
		link:          "is already pool p",
		stateDir:      "is the state directory",
		filepath.Join(base, "..", filepath.Base(base), "pool"): "is already pool p",
	} {
		start := time.Now()
		_, err := m.AddPool(ctx, "q", "file-reflink", map[string]string{"dir_path": dir, "setup_check": "no"})
		assert.ErrorIs(t, err, storage.ErrExists, dir)
		assert.ErrorContains(t, err, msg, dir)
		assert.Less(t, time.Since(start), time.Second, dir)
	}
	assert.Equal(t, before, stateBytes(t, stateDir))
	assert.Len(t, m.Pools(), 1)
}
