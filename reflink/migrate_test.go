package reflink

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/dmsnap"
	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/internal/testenv"
	"github.com/vmpool/vmpool/storage"
)

// fileTree is a tree as Qubes' file driver leaves it after a template
// and an AppVM stopped: images, the empty exception stores of the next
// run, and the private volume's one revision (NAME-cow.img.old) holding
// the chunks that its last run overwrote.
type fileTree struct {
	dir            string
	before, now    []byte // the private image before and after its last run
	private, root  storage.VolumeConfig
	snap, volatile storage.VolumeConfig
}

const fileChunk = dmsnap.QubesChunkSectors * 512

func writeFileTree(t *testing.T, dir string) *fileTree {
	t.Helper()
	ft := &fileTree{dir: dir}
	rng := rand.New(rand.NewPCG(3, 4))
	ft.before = make([]byte, 8*fileChunk)
	for i := range ft.before {
		ft.before[i] = byte(rng.Uint32())
	}
	ft.now = bytes.Clone(ft.before)
	old := map[uint64][]byte{}
	for _, c := range []uint64{0, 3, 7} {
		old[c] = bytes.Clone(ft.before[c*fileChunk : (c+1)*fileChunk])
		copy(ft.now[c*fileChunk:], bytes.Repeat([]byte{byte(c + 1)}, fileChunk))
	}
	write := func(rel string, data []byte) {
		p := filepath.Join(dir, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, data, 0o664))
	}
	empty := dmsnap.Encode(dmsnap.QubesChunkSectors, nil, nil)
	write("appvms/a/private.img", ft.now)
	write("appvms/a/private-cow.img", empty)
	write("appvms/a/private-cow.img.old", dmsnap.Encode(dmsnap.QubesChunkSectors, old, []uint64{3, 0, 7}))
	write("vm-templates/t/root.img", bytes.Repeat([]byte("T"), 4*fileChunk))
	write("vm-templates/t/root-cow.img", empty)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, ".vmpool-running"), 0o755))
	// A stale store of a VM the state does not list: removed too.
	write("appvms/gone/private-cow.img.old", empty)
	one := 1
	ft.private = storage.VolumeConfig{Name: "private", VID: "appvms/a/private", RW: true, SaveOnStop: true, RevisionsToKeep: &one, Size: int64(len(ft.now))}
	ft.root = storage.VolumeConfig{Name: "root", VID: "vm-templates/t/root", RW: true, SaveOnStop: true, RevisionsToKeep: &one, Size: 4 * fileChunk}
	ft.snap = storage.VolumeConfig{Name: "root", VID: "appvms/a/root", RW: true, SnapOnStart: true, Source: "vm-templates/t/root", Size: 4 * fileChunk}
	ft.volatile = storage.VolumeConfig{Name: "volatile", VID: "appvms/a/volatile", RW: true, Size: fileChunk}
	return ft
}

// TestMigrateFromFile: the file driver's revision becomes a file-reflink
// revision with the image as it was before the last run, made once even
// when MigrateFrom runs again; FinishMigration removes every store; the
// volumes then start, stop and revert.
func TestMigrateFromFile(t *testing.T) {
	t.Run("tempdir", func(t *testing.T) {
		testMigrateFromFile(t, filepath.Join(t.TempDir(), "pool"), map[string]string{"setup_check": "no"})
	})
	t.Run("btrfs", func(t *testing.T) {
		testenv.RequireRoot(t)
		testMigrateFromFile(t, filepath.Join(loopfs.Mount(t, loopfs.Btrfs, 320<<20), "pool"), nil)
	})
}

func testMigrateFromFile(t *testing.T, dir string, params map[string]string) {
	ctx := context.Background()
	ft := writeFileTree(t, dir)
	oldStat, err := os.Stat(filepath.Join(dir, "appvms/a/private-cow.img.old"))
	require.NoError(t, err)
	tp := openTestPool(t, dir, params, true)
	priv := tp.volume(t, ft.private)
	root := tp.volume(t, ft.root)
	snap := tp.volume(t, ft.snap)
	tp.volume(t, ft.volatile)

	require.NoError(t, tp.MigrateFrom(ctx, "file"))
	revs, err := priv.Revisions(ctx)
	require.NoError(t, err)
	require.Len(t, revs, 1, "the file driver's revision is kept")
	assert.Equal(t, "1", revs[0].ID)
	assert.Equal(t, statCtime(oldStat), revs[0].Time, "its time is the store's ctime, as the file driver reports it")
	rev := revisionPath(priv.clean, "1", revs[0].Time)
	got, err := os.ReadFile(rev)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(ft.before, got), "the revision is the image before the last run")
	cur, err := os.ReadFile(priv.clean)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(ft.now, cur), "the committed image is unchanged")
	assert.FileExists(t, filepath.Join(dir, "appvms/a/private-cow.img.old"), "the file driver keeps its revision until the switch")
	rr, err := root.Revisions(ctx)
	require.NoError(t, err)
	assert.Empty(t, rr, "an empty store gives no revision")

	require.NoError(t, tp.MigrateFrom(ctx, "file"), "run again after an interruption")
	revs, err = priv.Revisions(ctx)
	require.NoError(t, err)
	assert.Len(t, revs, 1, "the revision is not made twice")

	require.NoError(t, tp.FinishMigration(ctx, "file"))
	for _, f := range tp.tree(t) {
		assert.NotContains(t, f, "-cow.img", "stores are gone")
		assert.NotContains(t, f, ".vmpool-running", "the file driver's run directory is gone")
	}
	require.NoError(t, tp.FinishMigration(ctx, "file"), "idempotent")

	// The migrated volumes work: a run commits (keeping the current image
	// as the one revision), and a revert brings it back.
	require.NoError(t, priv.Start(ctx))
	require.NoError(t, snap.Start(ctx))
	assert.Equal(t, strings.Repeat("T", 8), readAt(t, snap.dirty, 0, 8), "the AppVM's root snapshots the template")
	writeAt(t, priv.dirty, 0, "NEWDATA!")
	require.NoError(t, snap.Stop(ctx))
	require.NoError(t, priv.Stop(ctx))
	require.NoError(t, priv.Revert(ctx, ""))
	cur, err = os.ReadFile(priv.clean)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(ft.now, cur), "the revert gives back the image from before the run")
}

func TestMigrateFromRefuses(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "pool")
	ft := writeFileTree(t, dir)
	tp := openTestPool(t, dir, map[string]string{"setup_check": "no"}, true)
	priv := tp.volume(t, ft.private)
	assert.ErrorIs(t, tp.MigrateFrom(ctx, "lvm_thin"), storage.ErrUnsupported)
	assert.ErrorIs(t, tp.FinishMigration(ctx, "lvm_thin"), storage.ErrUnsupported)

	old := filepath.Join(dir, "appvms/a/private-cow.img.old")
	data, err := os.ReadFile(old)
	require.NoError(t, err)
	t.Run("invalidated", func(t *testing.T) {
		bad := bytes.Clone(data)
		binary.LittleEndian.PutUint32(bad[4:], 0)
		require.NoError(t, os.WriteFile(old, bad, 0o664))
		require.NoError(t, tp.MigrateFrom(ctx, "file"), "an invalidated store is dropped, not an error")
		revs, err := priv.Revisions(ctx)
		require.NoError(t, err)
		assert.Empty(t, revs)
	})
	t.Run("foreign", func(t *testing.T) {
		require.NoError(t, os.WriteFile(old, []byte("not a snapshot store, just text"), 0o664))
		assert.ErrorIs(t, tp.MigrateFrom(ctx, "file"), dmsnap.ErrFormat)
	})
	t.Run("symlink", func(t *testing.T) {
		require.NoError(t, os.Remove(old))
		require.NoError(t, os.Symlink("/etc/passwd", old))
		assert.ErrorIs(t, tp.MigrateFrom(ctx, "file"), storage.ErrUnsafePath)
		assert.ErrorIs(t, tp.FinishMigration(ctx, "file"), storage.ErrUnsafePath)
		_, err := os.Lstat(old)
		assert.NoError(t, err, "the symlink is left alone")
	})
	revs, err := priv.Revisions(ctx)
	require.NoError(t, err)
	assert.Empty(t, revs, "no refused run made a revision")
}
