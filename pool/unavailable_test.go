package pool

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

// unknownDriver is a driver name no package registers.
const unknownDriver = "no-such-driver-for-test"

// The volumes of VM sys, recorded in the pool of unknownDriver.
var (
	sysPrivate = storage.VolumeConfig{Name: "private", Pool: "vm-pool", VID: "qubes_dom0/vm-sys-private", RW: true, SaveOnStop: true, Size: 2 << 30, RevisionsToKeep: intp(2)}
	sysRoot    = storage.VolumeConfig{Name: "root", Pool: "vm-pool", VID: "qubes_dom0/vm-sys-root", RW: true, SnapOnStart: true, Source: "qubes_dom0/vm-t-root", Size: 10 << 30, RevisionsToKeep: intp(2), Ephemeral: new(bool)}
	workData   = storage.VolumeConfig{Name: "data", Pool: "vm-pool", VID: "qubes_dom0/vm-work-data", RW: true, SaveOnStop: true, Size: 1 << 30}
)

// unavailableState writes the state of a Manager with the fake pool p
// (tmpl's and work's volumes) and, recorded by hand, the pool vm-pool of
// unknownDriver with VM sys and a volume data of work, plus an unused pool
// gone of unknownDriver. It returns the state directory and the state.
func unavailableState(t *testing.T) (string, *state) {
	t.Helper()
	m, dir := newManager(t)
	createVMs(t, m)
	require.NoError(t, m.Close())
	st, _, err := readState(filepath.Join(dir, StateFile))
	require.NoError(t, err)
	st.Pools["vm-pool"] = poolState{Driver: unknownDriver, Params: map[string]string{"volume_group": "qubes_dom0", "thin_pool": "vm-pool", "revisions_to_keep": "2"}}
	st.Pools["gone"] = poolState{Driver: unknownDriver, Params: map[string]string{"dir_path": "/nonexistent"}}
	st.VMs["sys"] = vmState{Volumes: map[string]storage.VolumeConfig{"private": sysPrivate, "root": sysRoot}}
	st.VMs["work"].Volumes["data"] = workData
	data, err := st.encode()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, StateFile), data, 0o600))
	return dir, st
}

// TestManagerUnavailablePool: a recorded pool whose driver is not
// registered does not keep the Manager from opening. It is listed with
// its recorded driver and parameters, says why it is unavailable, and
// every operation on it or its volumes fails with ErrUnavailable, while
// the VMs of the other pool work; the state file keeps its pools and
// volumes exactly as recorded through every save.
func TestManagerUnavailablePool(t *testing.T) {
	ctx := context.Background()
	dir, st := unavailableState(t)
	before := readStateFile(t, dir)
	m := openManager(t, dir)
	assertUnchanged(t, dir, before)

	var names []string
	for _, p := range m.Pools() {
		names = append(names, p.Name())
	}
	assert.Equal(t, []string{"gone", "p", "vm-pool"}, names, "unavailable pools are listed")
	p, err := m.Pool("p")
	require.NoError(t, err)
	assert.NoError(t, Unavailable(p))
	vp, err := m.Pool("vm-pool")
	require.NoError(t, err)
	why := Unavailable(vp)
	require.ErrorIs(t, why, ErrUnavailable)
	assert.ErrorIs(t, why, ErrUnavailable)
	assert.Contains(t, why.Error(), `pool unavailable: no driver "`+unknownDriver+`"`)
	assert.Equal(t, unknownDriver, vp.Driver())
	assert.Equal(t, map[string]string{"name": "vm-pool", "driver": unknownDriver, "volume_group": "qubes_dom0", "thin_pool": "vm-pool", "revisions_to_keep": "2"}, vp.Config())
	u, err := vp.Usage(ctx)
	require.NoError(t, err)
	assert.Equal(t, storage.PoolUsage{Unavailable: true}, u)
	v, err := vp.Volume(sysRoot.VID)
	require.NoError(t, err, "its volumes are listed as recorded")
	assert.Equal(t, sysRoot, v.Config())
	assert.Len(t, vp.Volumes(), 3)

	for what, err := range map[string]error{
		"start sys":          m.StartVM(ctx, "sys"),
		"start work":         m.StartVM(ctx, "work"),
		"stop sys":           m.StopVM(ctx, "sys"),
		"resize":             m.ResizeVolume(ctx, "sys", "private", 4<<30, storage.ResizeOptions{}),
		"revert":             m.RevertVolume(ctx, "sys", "private", ""),
		"reconfigure":        m.ReconfigureVolume(ctx, "sys", "private", storage.VolumeChange{RevisionsToKeep: intp(1)}),
		"remove volume":      m.RemoveVolume(ctx, "sys", "private"),
		"set pool parameter": m.SetPoolParameter(ctx, "vm-pool", "revisions_to_keep", "3"),
		"create": func() error {
			_, err := m.CreateVolume(ctx, "sys", storage.VolumeConfig{Name: "volatile", Pool: "vm-pool", VID: "qubes_dom0/vm-sys-volatile", RW: true, Size: 1 << 30})
			return err
		}(),
		"remove pool in use": m.RemovePool(ctx, "vm-pool"),
	} {
		require.Error(t, err, what)
		if what == "remove pool in use" {
			assert.ErrorIs(t, err, storage.ErrInUse, what)
			continue
		}
		assert.ErrorIs(t, err, ErrUnavailable, what)
		assert.Contains(t, err.Error(), `no driver "`+unknownDriver+`"`, "%s: the error says why", what)
	}
	running, err := m.VMVolumes("work")
	require.NoError(t, err)
	for _, v := range running.Volumes() {
		if v.Config().Pool == "p" {
			r, err := v.IsRunning(ctx)
			require.NoError(t, err)
			assert.False(t, r, "the failed start of work rolled its volumes in p back")
		}
	}
	assertUnchanged(t, dir, before)

	// The other pool works, and its saves keep the unavailable pools'
	// records as they were.
	require.NoError(t, m.StartVM(ctx, "tmpl"))
	require.NoError(t, m.StopVM(ctx, "tmpl"))
	_, err = m.CreateVolume(ctx, "tmpl", storage.VolumeConfig{Name: "private", Pool: "p", VID: "vm-templates/tmpl/private", RW: true, SaveOnStop: true, Size: 1 << 20})
	require.NoError(t, err)
	var after state
	require.NoError(t, json.Unmarshal(readStateFile(t, dir), &after))
	assert.Equal(t, st.Pools["vm-pool"], after.Pools["vm-pool"])
	assert.Equal(t, st.Pools["gone"], after.Pools["gone"])
	assert.Equal(t, st.VMs["sys"], after.VMs["sys"])
	assert.Equal(t, workData, after.VMs["work"].Volumes["data"])

	// An unused unavailable pool is removed; one that volumes use only
	// with Force, which forgets them.
	require.NoError(t, m.RemovePool(ctx, "gone"))
	require.NoError(t, m.RemovePoolWith(ctx, "vm-pool", RemovePoolOptions{Force: true}))
	assert.Equal(t, []string{"tmpl", "work"}, m.VMs(), "sys had volumes in vm-pool only")
	_, err = m.Volume("work", "data")
	assert.ErrorIs(t, err, storage.ErrNotFound)
	require.NoError(t, m.StartVM(ctx, "work"), "work's volumes in p start once data is forgotten")
	require.NoError(t, m.StopVM(ctx, "work"))
	require.NoError(t, m.Close())
	m = openManager(t, dir)
	require.Len(t, m.Pools(), 1)
}

// TestManagerUnavailableOpenFails: a pool whose driver's Open fails (here
// a parameter the driver does not know) is unavailable too, with the
// driver's reason; a cancelled context still fails OpenManager.
func TestManagerUnavailableOpenFails(t *testing.T) {
	m, dir := newManager(t)
	createVMs(t, m)
	require.NoError(t, m.Close())
	st, _, err := readState(filepath.Join(dir, StateFile))
	require.NoError(t, err)
	st.Pools["p"].Params["newer_parameter"] = "1"
	data, err := st.encode()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, StateFile), data, 0o600))

	m = openManager(t, dir)
	p, err := m.Pool("p")
	require.NoError(t, err)
	require.ErrorIs(t, Unavailable(p), ErrUnavailable)
	assert.Contains(t, Unavailable(p).Error(), `unknown parameter "newer_parameter"`)
	err = m.StartVM(context.Background(), "work")
	assert.ErrorIs(t, err, ErrUnavailable)
	require.NoError(t, m.Close())
	assert.Equal(t, data, readStateFile(t, dir), "saved back as recorded")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = OpenManager(ctx, dir, ManagerOptions{})
	assert.ErrorIs(t, err, context.Canceled, "a context that ended is the caller's, not the pool's")
}
