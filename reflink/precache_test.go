package reflink

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/storage"
)

// TestQubesReflinkPool reproduces Qubes' storage_reflink.py TC_10_ReflinkPool
// cases about the precache and disabled snapshots (test_012, the import
// cases, runs in the conformance suite as */import_data_empty).
func TestQubesReflinkPool(t *testing.T) {
	ctx := context.Background()
	mnt := loopfs.Mount(t, loopfs.Btrfs, 320<<20)
	newVolume := func(t *testing.T, cfg storage.VolumeConfig) (*testPool, *volume) {
		t.Helper()
		tp := openTestPool(t, mnt+"/"+t.Name()[len("TestQubesReflinkPool/"):], nil, true)
		v := tp.volume(t, cfg)
		require.NoError(t, v.Create(ctx))
		require.NoError(t, v.Start(ctx))
		mark(t, v.dirty, "clean")
		require.NoError(t, v.Stop(ctx))
		require.NoError(t, tp.Flush(ctx))
		tp.log.ops(t)
		return tp, v
	}
	origin := storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 1 << 20}

	t.Run("test_100_remove_stale_precache_ok", func(t *testing.T) {
		tp, v := newVolume(t, origin)
		require.FileExists(t, v.precache)
		require.NoError(t, v.Start(ctx))
		assert.Equal(t, []string{"rename"}, tp.log.ops(t), "an up-to-date precache is used")
		assert.Equal(t, "clean", marker(t, v.dirty))
	})
	t.Run("test_101_remove_stale_precache_orphan", func(t *testing.T) {
		_, v := newVolume(t, origin)
		require.NoError(t, os.Remove(v.clean))
		require.ErrorIs(t, v.Start(ctx), storage.ErrNotFound, "no clean image: the start fails")
		assert.NoFileExists(t, v.dirty)
	})
	t.Run("test_110_remove_stale_precache_stale", func(t *testing.T) {
		tp, v := newVolume(t, origin)
		later := time.Now().Add(time.Hour)
		require.NoError(t, os.Chtimes(v.precache, later, later)) // "the user modified it"
		mark(t, v.precache, "stale")
		require.NoError(t, v.Start(ctx))
		assert.Equal(t, []string{"discard", "reflink"}, tp.log.ops(t), "the stale precache is dropped, the clean image cloned")
		assert.Equal(t, "clean", marker(t, v.dirty))
	})
	t.Run("test_111_remove_stale_precache_stale_orphan", func(t *testing.T) {
		_, v := newVolume(t, origin)
		later := time.Now().Add(time.Hour)
		require.NoError(t, os.Chtimes(v.precache, later, later))
		require.NoError(t, os.Remove(v.clean))
		require.ErrorIs(t, v.Start(ctx), storage.ErrNotFound)
		assert.NoFileExists(t, v.dirty)
	})
	t.Run("test_120_private_snapshots_disabled", func(t *testing.T) {
		cfg := origin
		cfg.RevisionsToKeep = intp(-1)
		tp, v := newVolume(t, cfg)
		assert.NoFileExists(t, v.precache, "no precache with snapshots disabled")
		require.NoError(t, v.Start(ctx))
		assert.Equal(t, tp.dir+"/appvms/a/private-dirty.img", v.BlockDevice().Path)
		assert.Equal(t, []string{"appvms/", "appvms/a/", "appvms/a/private-dirty.img", "vm-templates/"}, tp.tree(t),
			"running: the dirty image only, no clean image, no precache")
		require.NoError(t, v.Stop(ctx))
		assert.Equal(t, []string{"appvms/", "appvms/a/", "appvms/a/private.img", "vm-templates/"}, tp.tree(t),
			"stopped: the clean image only")
		assert.Equal(t, "clean", marker(t, v.clean))
	})
}

// TestEqFiles reproduces Qubes' test_200_eq_files_true (a hard link is the
// same file), test_201_eq_files_false (same mtime and size still differ)
// and test_210_eq_files_by_attrs (the precache check compares mtime and
// size only).
func TestEqFiles(t *testing.T) {
	dir := t.TempDir()
	a, b, c := dir+"/a", dir+"/b", dir+"/c"
	require.NoError(t, os.WriteFile(a, []byte("same"), 0o600))
	require.NoError(t, os.Link(a, b))
	require.NoError(t, os.WriteFile(c, []byte("same"), 0o600))
	mtime := time.Now().Add(-time.Minute)
	require.NoError(t, os.Chtimes(a, mtime, mtime))
	require.NoError(t, os.Chtimes(c, mtime, mtime))
	st := func(p string) os.FileInfo {
		fi, err := os.Stat(p)
		require.NoError(t, err)
		return fi
	}
	assert.True(t, os.SameFile(st(a), st(b)), "200: a hard link")
	assert.False(t, os.SameFile(st(a), st(c)), "201: same mtime and size, another inode")
	assert.True(t, samePrecache(st(a), st(c)), "210: equal by mtime and size")
	require.NoError(t, os.WriteFile(c, []byte("other"), 0o600))
	assert.False(t, samePrecache(st(a), st(c)))
}
