//go:build vmtest

package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/vmtest"
	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

func requireVM(t *testing.T) {
	t.Helper()
	require.True(t, vmtest.InVM(), "this test runs in the test VM (internal/vmtest)")
}

// dmNames lists the device-mapper devices.
func dmNames(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("dmsetup", "ls").CombinedOutput()
	require.NoError(t, err, "%s", out)
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] != "No" {
			names = append(names, f[0])
		}
	}
	return names
}

// loopsOf lists the loop devices whose backing file is under dir.
func loopsOf(t *testing.T, dir string) []string {
	t.Helper()
	out, err := exec.Command("losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE").CombinedOutput()
	require.NoError(t, err, "%s", out)
	var loops []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[1], dir) {
			loops = append(loops, line)
		}
	}
	return loops
}

// TestVMMigrateRealFilePool runs a file pool on real dm-snapshot devices
// (the kernel writes the exception stores), migrates it to file-reflink
// and reverts to the revision the file driver kept: the image as it was
// before the last run, rebuilt from the kernel's own cow. A running VM
// refuses the migration.
func TestVMMigrateRealFilePool(t *testing.T) {
	requireVM(t)
	ctx := t.Context()
	base := t.TempDir()
	state, dir := filepath.Join(base, "state"), filepath.Join(base, "qubes")
	m := openManager(t, state)
	_, err := m.AddInitialPools(ctx, pool.InitialPoolsOptions{BaseDir: dir})
	require.NoError(t, err)
	fileVM(t, m)
	priv := mustVolume(t, m, "work", "private")

	// Run 1 writes A over chunks 0 and 3; run 2 writes B over chunks 3
	// and 5. The file driver's revision is then the state after run 1.
	a := bytes.Repeat([]byte{'A'}, chunk)
	b := bytes.Repeat([]byte{'B'}, chunk)
	require.NoError(t, m.StartVM(ctx, "work"))
	assert.True(t, strings.HasPrefix(priv.BlockDevice().Path, "/dev/mapper/origin-"), priv.BlockDevice().Path)
	root := mustVolume(t, m, "work", "root")
	assert.Equal(t, pattern('T', volSize)[:4096], readRunning(t, root, 0, 4096), "the AppVM's root is its template's")
	writeRunning(t, priv, 0, a)
	writeRunning(t, priv, 3*chunk, a)
	require.NoError(t, m.StopVM(ctx, "work"))
	afterRun1 := pattern('P', volSize)
	copy(afterRun1[0:], a)
	copy(afterRun1[3*chunk:], a)

	require.NoError(t, m.StartVM(ctx, "work"))
	writeRunning(t, priv, 3*chunk, b)
	writeRunning(t, priv, 5*chunk, b)
	before := stateBytes(t, state)
	err = m.MigratePool(ctx, pool.VarLibQubes, "file-reflink", map[string]string{"setup_check": "no"})
	assert.ErrorIs(t, err, storage.ErrRunning)
	assert.Equal(t, before, stateBytes(t, state))
	require.NoError(t, m.StopVM(ctx, "work"))
	afterRun2 := bytes.Clone(afterRun1)
	copy(afterRun2[3*chunk:], b)
	copy(afterRun2[5*chunk:], b)
	assert.Empty(t, dmNames(t), "the stops removed every device")
	assert.Empty(t, loopsOf(t, dir), "and every loop device")
	revs, err := priv.Revisions(ctx)
	require.NoError(t, err)
	require.Len(t, revs, 1)
	assert.Equal(t, "old", revs[0].ID)
	img := readFile(t, filepath.Join(dir, "appvms/work/private.img"))
	require.True(t, bytes.Equal(afterRun2, img), "the image holds run 2's data")

	require.NoError(t, m.MigratePool(ctx, pool.VarLibQubes, "file-reflink", map[string]string{"setup_check": "no"}))
	assert.True(t, bytes.Equal(afterRun2, readFile(t, filepath.Join(dir, "appvms/work/private.img"))), "the migration keeps the image's bytes")
	revPaths, err := filepath.Glob(filepath.Join(dir, "appvms/work/private.img.*@*Z"))
	require.NoError(t, err)
	require.Len(t, revPaths, 1, "the file driver's revision is kept")
	assert.True(t, bytes.Equal(afterRun1, readFile(t, revPaths[0])), "rebuilt from the kernel's exception store: the state after run 1")
	require.NoError(t, m.RevertVolume(ctx, "work", "private", ""))
	require.NoError(t, m.StartVM(ctx, "work"))
	priv = mustVolume(t, m, "work", "private") // the file-reflink volume now
	assert.Equal(t, afterRun1[3*chunk:3*chunk+4096], readRunning(t, priv, 3*chunk, 4096), "the revert went back to run 1")
	require.NoError(t, m.StopVM(ctx, "work"))
}

// TestVMEphemeralEncrypted: an ephemeral volatile volume of file-reflink
// and of file runs behind a dm-crypt mapping: the VM gets
// /dev/mapper/vm-volatile-work-crypt@volatile, it starts zeroed, what is
// written there is not on the backing image in the clear, and the
// mapping is gone after the stop.
func TestVMEphemeralEncrypted(t *testing.T) {
	requireVM(t)
	for _, driver := range []string{"file-reflink", "file"} {
		t.Run(driver, func(t *testing.T) {
			ctx := t.Context()
			base := t.TempDir()
			m := openManager(t, filepath.Join(base, "state"))
			params := map[string]string{"dir_path": filepath.Join(base, "pool"), "ephemeral_volatile": "True"}
			if driver == "file-reflink" {
				params["setup_check"] = "no"
			}
			_, err := m.AddPool(ctx, "p", driver, params)
			require.NoError(t, err)
			_, err = m.CreateVolume(ctx, "work", storage.VolumeConfig{Name: "volatile", Pool: "p", VID: "appvms/work/volatile", Size: 4 << 20, RW: true})
			require.NoError(t, err)
			v := mustVolume(t, m, "work", "volatile")
			require.True(t, v.Ephemeral())

			require.NoError(t, m.StartVM(ctx, "work"))
			set, err := m.VMVolumes("work")
			require.NoError(t, err)
			mapping := "/dev/mapper/vm-volatile-work-crypt@volatile"
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
			got := make([]byte, len(secret))
			_, err = f.ReadAt(got, 1<<20)
			require.NoError(t, err)
			require.NoError(t, f.Close())
			assert.Equal(t, secret, got, "the VM reads back what it wrote")
			backing := readFile(t, v.BlockDevice().Path)
			assert.False(t, bytes.Contains(backing, []byte("plaintext the VM wrote")), "the backing image never holds the plaintext")
			assert.NotEqual(t, make([]byte, len(secret)), backing[1<<20:1<<20+len(secret)], "the ciphertext is there")

			require.NoError(t, m.StopVM(ctx, "work"))
			_, err = os.Lstat(mapping)
			assert.ErrorIs(t, err, os.ErrNotExist, "the stop closed the mapping")
			assert.Empty(t, dmNames(t))
		})
	}
}
