package reflink_test

import (
	"maps"
	"os"
	"path"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/pool"
	_ "github.com/vmpool/vmpool/reflink"
	"github.com/vmpool/vmpool/storage"
	"github.com/vmpool/vmpool/storage/storagetest"
)

// suiteFSSize is the size of each test filesystem: the suite's volumes
// are sparse and it writes a few MiB per case (XFS needs 300 MB anyway).
const suiteFSSize = 512 << 20

// copyCounter counts the pool's copies by kind, from its log.
type copyCounter struct {
	reflinks, sparseCopies atomic.Int64
}

// Run implements zerolog.Hook: the pool logs each copy with its kind as
// the message.
func (c *copyCounter) Run(_ *zerolog.Event, _ zerolog.Level, msg string) {
	switch msg {
	case "reflink":
		c.reflinks.Add(1)
	case "sparse-copy":
		c.sparseCopies.Add(1)
	}
}

// runSuite runs the conformance suite on a loop-mounted typ filesystem,
// every case in a directory of its own, with the pool parameters params,
// and checks in a subtest "copies" that the pool's copies are reflinks
// (caps.Reflink) or sparse copies (the fallback).
func runSuite(t *testing.T, typ loopfs.Type, params map[string]string, caps storage.Capabilities) {
	mnt := loopfs.Mount(t, typ, suiteFSSize)
	got, err := fsutil.FSType(mnt)
	require.NoError(t, err)
	require.Equal(t, string(typ), got, "the suite runs on the filesystem it asked for")
	runSuiteIn(t, mnt, params, caps)
}

// runSuiteIn runs the conformance suite with every case's pool in a
// directory of its own below mnt.
func runSuiteIn(t *testing.T, mnt string, params map[string]string, caps storage.Capabilities) {

	open := func(t *testing.T, dir string, logger zerolog.Logger) storage.Pool {
		ps := map[string]string{"dir_path": dir}
		maps.Copy(ps, params)
		p, err := pool.Open(t.Context(), "file-reflink", storage.PoolConfig{Name: "suite", Params: ps, Logger: logger})
		require.NoError(t, err)
		return p
	}
	newPool := func(t *testing.T, logger zerolog.Logger) storage.Pool {
		parent, err := os.MkdirTemp(mnt, "case-")
		require.NoError(t, err)
		p := open(t, filepath.Join(parent, "pool"), logger)
		require.NoError(t, p.Setup(t.Context()))
		return p
	}
	storagetest.Run(t, storagetest.Config{
		NewPool: func(t *testing.T) storage.Pool { return newPool(t, zerolog.Nop()) },
		Reopen: func(t *testing.T, old storage.Pool) storage.Pool {
			dir := old.Config()["dir_path"]
			require.NoError(t, old.Close())
			return open(t, dir, zerolog.Nop())
		},
		VID: func(vm string, template bool, volume string) string {
			if template {
				return path.Join("vm-templates", vm, volume)
			}
			return path.Join("appvms", vm, volume)
		},
		Caps:               caps,
		RevertKeepsCurrent: true,
	})

	t.Run("copies", func(t *testing.T) {
		t.Parallel()
		var copies copyCounter
		p := newPool(t, zerolog.New(nil).Hook(&copies))
		defer func() { require.NoError(t, p.Close()) }()
		ctx := t.Context()
		keep := 1
		src, err := p.InitVolume(storage.VolumeConfig{VID: "vm-templates/tpl/root", Size: 4 << 20, RW: true, SaveOnStop: true, RevisionsToKeep: &keep})
		require.NoError(t, err)
		require.NoError(t, src.Create(ctx))
		snap, err := p.InitVolume(storage.VolumeConfig{VID: "appvms/vm/root", Size: 4 << 20, RW: true, SnapOnStart: true, Source: src.Config().VID})
		require.NoError(t, err)
		require.NoError(t, snap.Start(ctx), "a snapshot's start copies its source")
		require.NoError(t, snap.Stop(ctx))
		if caps.Reflink {
			assert.Positive(t, copies.reflinks.Load(), "the pool made reflinks")
			assert.Zero(t, copies.sparseCopies.Load(), "no sparse copy where reflinks work")
		} else {
			assert.Positive(t, copies.sparseCopies.Load(), "the sparse copy ran")
			assert.Zero(t, copies.reflinks.Load(), "no reflink")
		}
	})
}

// reflinkCaps is what file-reflink can do on a filesystem with reflinks.
var reflinkCaps = storage.Capabilities{MaxRevisions: -1, Revert: true, SnapshotCommit: true, Outdated: true, Reflink: true, ImportRunning: true}

func TestSuiteBtrfs(t *testing.T) {
	t.Parallel()
	runSuite(t, loopfs.Btrfs, nil, reflinkCaps)
}

func TestSuiteXFS(t *testing.T) {
	t.Parallel()
	runSuite(t, loopfs.XFS, nil, reflinkCaps)
}

// TestSuiteExt4Fallback runs the suite where FICLONE is refused: with
// setup_check=no, every copy is a sparse copy.
func TestSuiteExt4Fallback(t *testing.T) {
	t.Parallel()
	caps := reflinkCaps
	caps.Reflink = false
	runSuite(t, loopfs.Ext4, map[string]string{"setup_check": "no"}, caps)
}

// TestSuiteTempDir runs the suite without root, in the test's temporary
// directory on whatever filesystem holds it, with setup_check=no: a
// contributor without root runs the whole contract. The capabilities come
// from the directory (reflinks where its filesystem has them).
func TestSuiteTempDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ok, err := fsutil.ReflinkSupported(dir)
	require.NoError(t, err)
	caps := reflinkCaps
	caps.Reflink = ok
	typ, err := fsutil.FSType(dir)
	require.NoError(t, err)
	t.Logf("%s: %s, reflinks: %v", dir, typ, ok)
	runSuiteIn(t, dir, map[string]string{"setup_check": "no"}, caps)
}
