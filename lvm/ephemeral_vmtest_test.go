//go:build vmtest

package lvm_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

// TestVMEphemeralEncrypted: an ephemeral volatile volume of lvm_thin runs
// behind a dm-crypt mapping named as Qubes names it
// (/dev/mapper/VG-vm--work--volatile@crypt); it starts zeroed, the
// thin LV never holds the plaintext, and the stop closes the mapping.
func TestVMEphemeralEncrypted(t *testing.T) {
	requireVM(t)
	ctx := t.Context()
	vg, thin := newVG(t, suiteVGSize)
	m, err := pool.OpenManager(ctx, filepath.Join(t.TempDir(), "state"), pool.ManagerOptions{})
	require.NoError(t, err)
	defer m.Close()
	_, err = m.AddPool(ctx, "vm-pool", "lvm_thin", map[string]string{"volume_group": vg, "thin_pool": thin, "ephemeral_volatile": "True"})
	require.NoError(t, err)
	_, err = m.CreateVolume(ctx, "work", storage.VolumeConfig{Name: "volatile", Pool: "vm-pool", VID: vg + "/vm-work-volatile", Size: 4 << 20, RW: true})
	require.NoError(t, err)
	v, err := m.Volume("work", "volatile")
	require.NoError(t, err)
	require.True(t, v.Ephemeral())

	require.NoError(t, m.StartVM(ctx, "work"))
	set, err := m.VMVolumes("work")
	require.NoError(t, err)
	mapping := "/dev/mapper/" + vg + "-vm--work--volatile@crypt"
	assert.Equal(t, mapping, set.BlockDevices()[0].Path)
	f, err := os.OpenFile(mapping, os.O_RDWR, 0)
	require.NoError(t, err)
	head := make([]byte, 64<<10)
	_, err = f.ReadAt(head, 0)
	require.NoError(t, err)
	assert.Equal(t, make([]byte, 64<<10), head, "the mapping starts zeroed")
	secret := bytes.Repeat([]byte("plaintext the VM wrote. "), 4096)
	_, err = f.WriteAt(secret, 1<<20)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
	backing, err := os.ReadFile(v.BlockDevice().Path)
	require.NoError(t, err)
	assert.False(t, bytes.Contains(backing, []byte("plaintext the VM wrote")), "the thin LV never holds the plaintext")

	require.NoError(t, m.StopVM(ctx, "work"))
	_, err = os.Lstat(mapping)
	assert.ErrorIs(t, err, os.ErrNotExist, "the stop closed the mapping")
}
