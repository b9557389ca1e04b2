package pool_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/internal/testenv"
	"github.com/vmpool/vmpool/pool"
	_ "github.com/vmpool/vmpool/reflink"
	"github.com/vmpool/vmpool/storage"
)

const (
	recSize  = 4 << 20
	recBlock = 4096
)

func keep(n int) *int { return &n }

// reflinkManager opens a Manager in stateDir and, when it has no pools
// yet, adds a file-reflink pool "p" on poolDir (setup_check=no: any
// filesystem, no root needed).
func reflinkManager(t *testing.T, stateDir, poolDir string) *pool.Manager {
	t.Helper()
	m, err := pool.OpenManager(t.Context(), stateDir, pool.ManagerOptions{Encryptor: &recordingEncryptor{}})
	require.NoError(t, err)
	// A test that fails half-way still closes it, before its filesystem
	// is unmounted (cleanups run last first).
	t.Cleanup(func() {
		if err := m.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
			t.Errorf("close manager: %v", err)
		}
	})
	if len(m.Pools()) == 0 {
		_, err = m.AddPool(t.Context(), "p", "file-reflink", map[string]string{"dir_path": poolDir, "setup_check": "no"})
		require.NoError(t, err)
	}
	return m
}

// recordingEncryptor stands in for cryptsetup, which needs dm-crypt (the
// real one runs in the VM tests): it records the mappings it holds.
type recordingEncryptor struct {
	mu   sync.Mutex
	open map[string]string // name → device
}

func (e *recordingEncryptor) Open(_ context.Context, device, name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.open == nil {
		e.open = map[string]string{}
	}
	e.open[name] = device
	return nil
}

func (e *recordingEncryptor) Close(_ context.Context, name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.open, name)
	return nil
}

// createWork creates the volumes of an AppVM "work" in pool p: private
// (revisions_to_keep 1), a root snapshot of source and volatile.
func createWork(t *testing.T, m *pool.Manager, source string) {
	t.Helper()
	for _, c := range []storage.VolumeConfig{
		{Name: "private", Pool: "p", VID: "appvms/work/private", Size: recSize, RW: true, SaveOnStop: true, RevisionsToKeep: keep(1)},
		{Name: "root", Pool: "p", VID: "appvms/work/root", Size: recSize, RW: true, SnapOnStart: true, Source: source},
		{Name: "volatile", Pool: "p", VID: "appvms/work/volatile", Size: recSize, RW: true},
	} {
		_, err := m.CreateVolume(t.Context(), "work", c)
		require.NoError(t, err)
	}
}

// onEachFS runs test in a directory of its own on loop-mounted btrfs, XFS
// and ext4 (root), and in the test's temporary directory (any user).
func onEachFS(t *testing.T, test func(t *testing.T, base string)) {
	t.Run("tempdir", func(t *testing.T) { test(t, t.TempDir()) })
	for _, typ := range []loopfs.Type{loopfs.Btrfs, loopfs.XFS, loopfs.Ext4} {
		t.Run(string(typ), func(t *testing.T) {
			testenv.RequireRoot(t)
			size := int64(128 << 20) // btrfs needs about 110 MB
			if typ == loopfs.XFS {
				size = loopfs.MinXFSSize
			}
			test(t, loopfs.Mount(t, typ, size))
		})
	}
}

// block returns a block of b.
func block(b byte) []byte { return bytes.Repeat([]byte{b}, recBlock) }

// writeDevice writes data at offset 0 of v's running image.
func writeDevice(t *testing.T, v storage.Volume, data []byte) {
	t.Helper()
	f, err := os.OpenFile(v.BlockDevice().Path, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(data, 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// readDevice returns the first block of v's running image.
func readDevice(t *testing.T, v storage.Volume) []byte {
	t.Helper()
	f, err := os.Open(v.BlockDevice().Path)
	require.NoError(t, err)
	defer f.Close()
	buf := make([]byte, recBlock)
	_, err = f.ReadAt(buf, 0)
	require.NoError(t, err)
	return buf
}

func vol(t *testing.T, m *pool.Manager, vm, name string) storage.Volume {
	t.Helper()
	v, err := m.Volume(vm, name)
	require.NoError(t, err)
	return v
}

// TestStopStorageAfterCrash: a Manager whose process died while VM work
// ran is reopened and recovered with StopStorage, as qubesd's
// stop_storage does at start. The origin commits what it held; the
// snapshot and volatile volumes start fresh.
func TestStopStorageAfterCrash(t *testing.T) { onEachFS(t, testStopStorageAfterCrash) }

func testStopStorageAfterCrash(t *testing.T, base string) {
	ctx := t.Context()
	stateDir, poolDir := filepath.Join(base, "state"), filepath.Join(base, "pool")
	m := reflinkManager(t, stateDir, poolDir)

	_, err := m.CreateVolume(ctx, "tpl", storage.VolumeConfig{Name: "root", Pool: "p", VID: "vm-templates/tpl/root", Size: recSize, RW: true, SaveOnStop: true, RevisionsToKeep: keep(1)})
	require.NoError(t, err)
	require.NoError(t, m.StartVM(ctx, "tpl"))
	writeDevice(t, vol(t, m, "tpl", "root"), block(0x77))
	require.NoError(t, m.StopVM(ctx, "tpl"))
	createWork(t, m, "vm-templates/tpl/root")
	require.NoError(t, m.StartVM(ctx, "work"))
	for _, name := range []string{"private", "root", "volatile"} {
		writeDevice(t, vol(t, m, "work", name), block(0xee))
	}
	// The process dies: the pools are closed with the volumes running.
	require.NoError(t, m.Close())

	m = reflinkManager(t, stateDir, poolDir)
	defer func() { require.NoError(t, m.Close()) }()
	for _, name := range []string{"private", "root", "volatile"} {
		running, err := vol(t, m, "work", name).IsRunning(ctx)
		require.NoError(t, err)
		require.True(t, running, "%s still runs after the crash", name)
	}
	// The caller says work still runs: nothing is touched.
	require.NoError(t, m.StopStorage(ctx, func(vm string) bool { return vm == "work" }))
	assert.Equal(t, block(0xee), readDevice(t, vol(t, m, "work", "root")), "a running VM is left alone")

	require.NoError(t, m.StopStorage(ctx, nil))
	for _, vm := range m.VMs() {
		set, err := m.VMVolumes(vm)
		require.NoError(t, err)
		for _, v := range set.Volumes() {
			running, err := v.IsRunning(ctx)
			require.NoError(t, err)
			assert.False(t, running, "%s runs after StopStorage", v.Config().VID)
		}
	}
	revs, err := vol(t, m, "work", "private").Revisions(ctx)
	require.NoError(t, err)
	assert.Len(t, revs, 1, "the origin committed once")

	require.NoError(t, m.StartVM(ctx, "work"))
	assert.Equal(t, block(0xee), readDevice(t, vol(t, m, "work", "private")), "the origin keeps its data")
	assert.Equal(t, block(0x77), readDevice(t, vol(t, m, "work", "root")), "the snapshot is a fresh copy of its source")
	assert.Equal(t, make([]byte, recBlock), readDevice(t, vol(t, m, "work", "volatile")), "the volatile volume is empty")
	require.NoError(t, m.StopVM(ctx, "work"))
}

// TestStartAfterCrashWithoutRecovery: a caller that starts a VM after a
// crash without StopStorage still gets fresh snapshot and volatile images;
// the origin resumes its uncommitted data.
func TestStartAfterCrashWithoutRecovery(t *testing.T) {
	onEachFS(t, testStartAfterCrashWithoutRecovery)
}

func testStartAfterCrashWithoutRecovery(t *testing.T, base string) {
	ctx := context.Background()
	stateDir, poolDir := filepath.Join(base, "state"), filepath.Join(base, "pool")
	m := reflinkManager(t, stateDir, poolDir)
	_, err := m.CreateVolume(ctx, "tpl", storage.VolumeConfig{Name: "root", Pool: "p", VID: "vm-templates/tpl/root", Size: recSize, RW: true, SaveOnStop: true})
	require.NoError(t, err)
	createWork(t, m, "vm-templates/tpl/root")
	require.NoError(t, m.StartVM(ctx, "work"))
	for _, name := range []string{"private", "root", "volatile"} {
		writeDevice(t, vol(t, m, "work", name), block(0xdd))
	}
	require.NoError(t, m.Close())

	m = reflinkManager(t, stateDir, poolDir)
	defer func() { require.NoError(t, m.Close()) }()
	require.NoError(t, m.StartVM(ctx, "work"))
	assert.Equal(t, block(0xdd), readDevice(t, vol(t, m, "work", "private")), "the origin resumes")
	assert.Equal(t, make([]byte, recBlock), readDevice(t, vol(t, m, "work", "root")), "the snapshot is fresh")
	assert.Equal(t, make([]byte, recBlock), readDevice(t, vol(t, m, "work", "volatile")), "the volatile volume is fresh")
	require.NoError(t, m.StopVM(ctx, "work"))
}
