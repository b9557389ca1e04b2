package reflink

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/storage"
)

// outsideFile is a file outside the pool that a planted symlink points
// to, with what it held.
type outsideFile struct {
	path  string
	sum   [32]byte
	size  int64
	mtime time.Time
}

func plantOutside(t *testing.T, dir, name string) outsideFile {
	t.Helper()
	path := filepath.Join(dir, name)
	data := []byte(fmt.Sprintf("outside data of %s\n", name))
	require.NoError(t, os.WriteFile(path, append(data, make([]byte, 64<<10)...), 0o600))
	return snapshotOutside(t, path)
}

func snapshotOutside(t *testing.T, path string) outsideFile {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err, "%s must still exist", path)
	st, err := os.Stat(path)
	require.NoError(t, err)
	return outsideFile{path: path, sum: sha256.Sum256(data), size: st.Size(), mtime: st.ModTime()}
}

// TestSymlinksNeverFollowed seeds a pool with symlinks to files outside
// it, a VM directory and each kind of image and a revision, and runs
// every operation on the volumes they belong to: each is refused with
// storage.ErrUnsafePath, and nothing outside is read, written, truncated
// or removed (content, size and mtime compared, after the background
// work too).
func TestSymlinksNeverFollowed(t *testing.T) {
	for _, typ := range []loopfs.Type{loopfs.Btrfs, loopfs.Ext4} {
		t.Run(string(typ), func(t *testing.T) {
			t.Parallel()
			testSymlinks(t, typ)
		})
	}
}

func testSymlinks(t *testing.T, typ loopfs.Type) {
	ctx := t.Context()
	mnt := loopfs.Mount(t, typ, 320<<20)
	dir := filepath.Join(mnt, "pool")
	tp := openTestPool(t, dir, map[string]string{"setup_check": "no"}, true)
	out := filepath.Join(mnt, "outside")
	require.NoError(t, os.Mkdir(out, 0o755))
	outDir := filepath.Join(out, "vmdir")
	require.NoError(t, os.Mkdir(outDir, 0o755))
	var watched []outsideFile
	for _, name := range []string{"private.img", "private-dirty.img", "private.img~1", "private-precache.img"} {
		watched = append(watched, plantOutside(t, outDir, name))
	}
	target := func(name string) string {
		f := plantOutside(t, out, name)
		watched = append(watched, f)
		return f.path
	}
	keep := 2
	origin := func(vid string) storage.VolumeConfig {
		return storage.VolumeConfig{VID: vid, SaveOnStop: true, RW: true, Size: 64 << 10, RevisionsToKeep: &keep}
	}

	// A VM directory that is a symlink.
	require.NoError(t, os.Symlink(outDir, filepath.Join(dir, "appvms", "evil")))
	// Each image kind a symlink, in a VM directory of its own.
	links := map[string]string{
		"dirty":    "appvms/d/private-dirty.img",
		"clean":    "appvms/c/private.img",
		"precache": "appvms/p/private-precache.img",
		"revision": "appvms/r/private.img.1@2020-01-02T03:04:05Z",
		"import":   "appvms/i/private-import.img",
		"source":   "vm-templates/t/root.img",
	}
	var vols []*volume
	for what, rel := range links {
		vmDir := filepath.Dir(filepath.Join(dir, rel))
		require.NoError(t, os.MkdirAll(vmDir, 0o755))
		vid := "appvms/" + filepath.Base(vmDir) + "/private"
		if what == "source" {
			vid = "vm-templates/t/root"
		}
		if what != "clean" && what != "source" {
			// A real clean image, so that only the link is wrong.
			require.NoError(t, os.WriteFile(filepath.Join(vmDir, "private.img"), make([]byte, 64<<10), 0o600))
		}
		require.NoError(t, os.Symlink(target(what), filepath.Join(dir, rel)))
		vols = append(vols, tp.volume(t, origin(vid)))
	}
	vols = append(vols, tp.volume(t, origin("appvms/evil/private")))
	snap := tp.volume(t, storage.VolumeConfig{VID: "appvms/s/root", SnapOnStart: true, Source: "vm-templates/t/root", RW: true, Size: 64 << 10})

	refused := func(what string, err error) {
		t.Helper()
		assert.ErrorIs(t, err, storage.ErrUnsafePath, what)
	}
	for _, v := range vols {
		vid := v.Config().VID
		refused(vid+": verify", v.Verify(ctx))
		refused(vid+": start", v.Start(ctx))
		refused(vid+": stop", v.Stop(ctx))
		refused(vid+": abort", v.Abort(ctx))
		refused(vid+": resize", v.Resize(ctx, 1<<20, storage.ResizeOptions{}))
		refused(vid+": shrink", v.Resize(ctx, 1, storage.ResizeOptions{Force: true}))
		refused(vid+": revert", v.Revert(ctx, ""))
		_, err := v.Revisions(ctx)
		refused(vid+": revisions", err)
		_, err = v.Size(ctx)
		refused(vid+": size", err)
		_, err = v.Usage(ctx)
		refused(vid+": usage", err)
		_, err = v.Export(ctx)
		refused(vid+": export", err)
		_, err = v.ImportData(ctx, 4096)
		refused(vid+": import data", err)
		refused(vid+": import data end", v.ImportDataEnd(ctx, true))
		refused(vid+": reconfigure", v.Reconfigure(ctx, storage.VolumeChange{RevisionsToKeep: &keep}))
		refused(vid+": create", v.Create(ctx))
		refused(vid+": remove", v.Remove(ctx))
	}
	refused("snapshot of a symlinked source: verify", snap.Verify(ctx))
	refused("snapshot of a symlinked source: start", snap.Start(ctx))
	require.NoError(t, tp.Flush(ctx))
	require.NoError(t, tp.Close())

	for _, f := range watched {
		assert.Equal(t, f, snapshotOutside(t, f.path), "%s is unchanged", f.path)
	}
	entries, err := os.ReadDir(outDir)
	require.NoError(t, err)
	assert.Len(t, entries, 4, "nothing was added to or removed from the outside directory")
	for _, rel := range links {
		st, err := os.Lstat(filepath.Join(dir, rel))
		require.NoError(t, err)
		assert.True(t, st.Mode()&os.ModeSymlink != 0, "%s is still the planted symlink", rel)
	}
}
