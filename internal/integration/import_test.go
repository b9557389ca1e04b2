package integration

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/internal/testenv"
	"github.com/vmpool/vmpool/storage"
)

// TestImportVolumeBetweenDrivers: Manager.ImportVolume copies committed
// data file → file-reflink, file-reflink on btrfs → file-reflink on XFS
// and file-reflink → file, each a sparse copy across mount points with
// progress reported; the size follows the source and the copy is what
// the destination runs on.
func TestImportVolumeBetweenDrivers(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := t.Context()
	btrfs := loopfs.Mount(t, loopfs.Btrfs, 160<<20)
	xfs := loopfs.Mount(t, loopfs.XFS, loopfs.MinXFSSize)
	ext4 := loopfs.Mount(t, loopfs.Ext4, 160<<20)
	m := openManager(t, filepath.Join(t.TempDir(), "state"))
	for name, spec := range map[string]struct {
		driver string
		params map[string]string
	}{
		"file4":    {"file", map[string]string{"dir_path": filepath.Join(ext4, "file")}},
		"btrfs":    {"file-reflink", map[string]string{"dir_path": filepath.Join(btrfs, "reflink")}},
		"xfs":      {"file-reflink", map[string]string{"dir_path": filepath.Join(xfs, "reflink")}},
		"filebtrf": {"file", map[string]string{"dir_path": filepath.Join(btrfs, "file")}},
	} {
		_, err := m.AddPool(ctx, name, spec.driver, spec.params)
		require.NoError(t, err)
	}
	origin := func(vm, poolName string, size int64) {
		_, err := m.CreateVolume(ctx, vm, storage.VolumeConfig{Name: "private", Pool: poolName, VID: "appvms/" + vm + "/private",
			Size: size, RW: true, SaveOnStop: true, RevisionsToKeep: keep(1)})
		require.NoError(t, err)
	}
	const size = 4 << 20
	origin("a", "file4", size)
	origin("b", "btrfs", 1<<20)
	origin("c", "xfs", 1<<20)
	origin("d", "filebtrf", 1<<20)
	data := pattern('A', size)
	importBytes(t, m, "a", "private", data)

	for _, step := range []struct{ dst, src string }{{"b", "a"}, {"c", "b"}, {"d", "c"}} {
		var mu sync.Mutex
		var last [2]int64
		pctx := storage.WithProgress(ctx, func(done, total int64) {
			mu.Lock()
			last = [2]int64{done, total}
			mu.Unlock()
		})
		require.NoError(t, m.ImportVolume(pctx, step.dst, "private", step.src, "private"), "%s ← %s", step.dst, step.src)
		mu.Lock()
		assert.Equal(t, [2]int64{size, size}, last, "%s ← %s reported its progress to the end", step.dst, step.src)
		mu.Unlock()
		v := mustVolume(t, m, step.dst, "private")
		n, err := v.Size(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(size), n, "the size follows the source")
		assert.Equal(t, int64(size), v.Config().Size, "and the configuration records it")
	}
	// The last copy, in a file pool, read through an export (the file
	// driver's running device needs device-mapper).
	v := mustVolume(t, m, "d", "private")
	path, err := v.Export(ctx)
	require.NoError(t, err)
	got := readFile(t, path)
	require.NoError(t, v.ExportEnd(ctx, path))
	assert.Equal(t, data, got, "the data went through three pools and two drivers unchanged")
}
