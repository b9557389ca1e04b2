package pool_test

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/internal/testenv"
	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

// progressLog records the calls of a storage.ProgressFunc.
type progressLog struct {
	mu    sync.Mutex
	calls [][2]int64
}

func (l *progressLog) fn(done, total int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, [2]int64{done, total})
}

func (l *progressLog) last() [2]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.calls) == 0 {
		return [2]int64{-1, -1}
	}
	return l.calls[len(l.calls)-1]
}

// TestImportVolumeAcrossPools: ImportVolume copies a volume's committed
// data into a volume of another pool on another filesystem (file-reflink
// on btrfs into file-reflink on XFS and on ext4): a sparse copy, with
// progress reported, the size following the source, and holes left holes.
func TestImportVolumeAcrossPools(t *testing.T) {
	testenv.RequireRoot(t)
	src := loopfs.Mount(t, loopfs.Btrfs, 128<<20)
	for _, typ := range []loopfs.Type{loopfs.XFS, loopfs.Ext4} {
		t.Run(string(typ), func(t *testing.T) {
			size := int64(128 << 20)
			if typ == loopfs.XFS {
				size = loopfs.MinXFSSize
			}
			dst := loopfs.Mount(t, typ, size)
			testImportVolumeAcrossPools(t, filepath.Join(src, string(typ)), dst)
		})
	}
}

func testImportVolumeAcrossPools(t *testing.T, srcDir, dstDir string) {
	ctx := t.Context()
	stateDir := filepath.Join(t.TempDir(), "state")
	m, err := pool.OpenManager(ctx, stateDir, pool.ManagerOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	_, err = m.AddPool(ctx, "a", "file-reflink", map[string]string{"dir_path": srcDir})
	require.NoError(t, err)
	_, err = m.AddPool(ctx, "b", "file-reflink", map[string]string{"dir_path": filepath.Join(dstDir, "pool"), "setup_check": "no"})
	require.NoError(t, err)
	const srcSize = 16 << 20
	_, err = m.CreateVolume(ctx, "tpl", storage.VolumeConfig{Name: "root", Pool: "a", VID: "vm-templates/tpl/root", Size: srcSize, RW: true, SaveOnStop: true, RevisionsToKeep: keep(1)})
	require.NoError(t, err)
	dst, err := m.CreateVolume(ctx, "copy", storage.VolumeConfig{Name: "root", Pool: "b", VID: "vm-templates/copy/root", Size: 1 << 20, RW: true, SaveOnStop: true, RevisionsToKeep: keep(1)})
	require.NoError(t, err)

	// The source's data: a block at the start and one at 8 MiB; the rest
	// is a hole.
	require.NoError(t, m.StartVM(ctx, "tpl"))
	src := vol(t, m, "tpl", "root")
	writeAtDevice(t, src, 0, block('S'))
	writeAtDevice(t, src, 8<<20, block('E'))
	require.NoError(t, m.StopVM(ctx, "tpl"))
	// Data the source runs with now is not committed: not copied.
	require.NoError(t, m.StartVM(ctx, "tpl"))
	writeAtDevice(t, src, 0, block('X'))

	var pl progressLog
	require.NoError(t, m.ImportVolume(storage.WithProgress(ctx, pl.fn), "copy", "root", "tpl", "root"))
	assert.Equal(t, [2]int64{srcSize, srcSize}, pl.last(), "the copy reported its progress to the end")

	n, err := dst.Size(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(srcSize), n, "the size follows the source")
	require.NoError(t, m.StartVM(ctx, "copy"))
	assert.Equal(t, block('S'), readAtDevice(t, dst, 0, recBlock), "the committed data, not the running one")
	assert.Equal(t, block('E'), readAtDevice(t, dst, 8<<20, recBlock))
	assert.Equal(t, make([]byte, recBlock), readAtDevice(t, dst, 4<<20, recBlock))
	used, err := dst.Usage(ctx)
	require.NoError(t, err)
	assert.Less(t, used, int64(2<<20), "holes stay holes: %d bytes allocated", used)

	// Refused: a running destination, the volume itself, an unknown source.
	assert.ErrorIs(t, m.ImportVolume(ctx, "copy", "root", "tpl", "root"), storage.ErrRunning)
	require.NoError(t, m.StopVM(ctx, "copy"))
	assert.ErrorIs(t, m.ImportVolume(ctx, "copy", "root", "copy", "root"), storage.ErrInvalidConfig)
	assert.ErrorIs(t, m.ImportVolume(ctx, "copy", "root", "nobody", "root"), storage.ErrNotFound)
	require.NoError(t, m.StopVM(ctx, "tpl"))

	// The state recorded the new size.
	require.NoError(t, m.Close())
	m2, err := pool.OpenManager(ctx, stateDir, pool.ManagerOptions{})
	require.NoError(t, err)
	defer m2.Close()
	assert.Equal(t, int64(srcSize), vol(t, m2, "copy", "root").Config().Size)
}

func openRW(v storage.Volume) (*os.File, error) {
	return os.OpenFile(v.BlockDevice().Path, os.O_RDWR, 0)
}

// writeAtDevice writes data at off of v's running image.
func writeAtDevice(t *testing.T, v storage.Volume, off int64, data []byte) {
	t.Helper()
	f, err := openRW(v)
	require.NoError(t, err)
	_, err = f.WriteAt(data, off)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// readAtDevice reads n bytes at off of v's running image.
func readAtDevice(t *testing.T, v storage.Volume, off int64, n int) []byte {
	t.Helper()
	f, err := openRW(v)
	require.NoError(t, err)
	defer f.Close()
	b := make([]byte, n)
	_, err = f.ReadAt(b, off)
	require.NoError(t, err)
	return bytes.Clone(b)
}
