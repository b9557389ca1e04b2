package file

import (
	"os"
	"path"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/storage"
	"github.com/vmpool/vmpool/storage/storagetest"
)

// suiteFSSize is the size of each test filesystem (XFS needs 300 MB).
const suiteFSSize = 512 << 20

// fileCaps is what the file driver can do, on any filesystem.
var fileCaps = storage.Capabilities{MaxRevisions: 1}

// suiteConfig is the conformance suite's configuration for file pools in
// directories of their own below dir, each on a block layer that newLayer
// makes (one per pool, handed on by Reopen as devices outlive a crash).
func suiteConfig(dir string, newLayer func(t *testing.T) blockLayer, openDevice func(t *testing.T, v storage.Volume, flag int) (*os.File, error)) storagetest.Config {
	open := func(t *testing.T, dir string, layer blockLayer) storage.Pool {
		p, err := Driver{}.open(t.Context(), storage.PoolConfig{Name: "suite", Params: map[string]string{"dir_path": dir}, Logger: zerolog.Nop()}, layer)
		require.NoError(t, err)
		return p
	}
	return storagetest.Config{
		NewPool: func(t *testing.T) storage.Pool {
			parent, err := os.MkdirTemp(dir, "case-")
			require.NoError(t, err)
			p := open(t, filepath.Join(parent, "pool"), newLayer(t))
			require.NoError(t, p.Setup(t.Context()))
			return p
		},
		Reopen: func(t *testing.T, old storage.Pool) storage.Pool {
			fp := old.(*filePool)
			require.NoError(t, old.Close())
			return open(t, fp.dir, fp.layer)
		},
		VID: func(vm string, template bool, volume string) string {
			if template {
				return path.Join("vm-templates", vm, volume)
			}
			return path.Join("appvms", vm, volume)
		},
		Caps:                  fileCaps,
		OpenDevice:            openDevice,
		DirtyOnWrite:          true,
		ExportRunningRefused:  true,
		SnapshotResizeRefused: true,
		RevisionID:            revisionID,
		ImportKeepsNoRevision: true,
	}
}

// runEmulated runs the suite below dir on the emulated block layer.
func runEmulated(t *testing.T, dir string) {
	cfg := suiteConfig(dir,
		func(t *testing.T) blockLayer { return newEmuLayer(t) },
		func(t *testing.T, v storage.Volume, flag int) (*os.File, error) {
			return v.(*volume).p.layer.(*emuLayer).openDevice(t, v, flag)
		})
	storagetest.Run(t, cfg)
}

// runSuite runs the suite on a loop-mounted typ filesystem.
func runSuite(t *testing.T, typ loopfs.Type) {
	mnt := loopfs.Mount(t, typ, suiteFSSize)
	got, err := fsutil.FSType(mnt)
	require.NoError(t, err)
	require.Equal(t, string(typ), got, "the suite runs on the filesystem it asked for")
	runEmulated(t, mnt)
}

func TestSuiteExt4(t *testing.T) {
	t.Parallel()
	runSuite(t, loopfs.Ext4)
}

func TestSuiteBtrfs(t *testing.T) {
	t.Parallel()
	runSuite(t, loopfs.Btrfs)
}

func TestSuiteXFS(t *testing.T) {
	t.Parallel()
	runSuite(t, loopfs.XFS)
}

// TestSuiteTempDir runs the suite without root, in the test's temporary
// directory.
func TestSuiteTempDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	typ, err := fsutil.FSType(dir)
	require.NoError(t, err)
	t.Logf("%s: %s", dir, typ)
	runEmulated(t, dir)
}
