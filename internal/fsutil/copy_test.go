package fsutil_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/loopfs"
)

// filesystems are the filesystems the copy tests run on, with whether
// FICLONE works there (Qubes' ReflinkMixin: TC_00 btrfs, TC_01 ext4, TC_02
// xfs).
var filesystems = []struct {
	typ     loopfs.Type
	reflink bool
}{{loopfs.Btrfs, true}, {loopfs.Ext4, false}, {loopfs.XFS, true}}

// writeSparse writes a file of size bytes with random data at the given
// offsets (4 KiB each) and holes elsewhere; it returns the content.
func writeSparse(t testing.TB, path string, size int64, offsets ...int64) []byte {
	t.Helper()
	want := make([]byte, size)
	f, err := os.Create(path)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Truncate(size))
	for _, off := range offsets {
		chunk := want[off : off+4096]
		_, _ = rand.Read(chunk)
		_, err := f.WriteAt(chunk, off)
		require.NoError(t, err)
	}
	require.NoError(t, f.Sync())
	return want
}

func ino(t *testing.T, path string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err)
	return fi
}

// TestCopyFile reproduces Qubes' test_000..003 and test_010..013
// (copy_file{,_mtime}{,_extend,_shrink,_shrink0}) on each filesystem.
func TestCopyFile(t *testing.T) {
	for _, fs := range filesystems {
		t.Run(string(fs.typ), func(t *testing.T) {
			t.Parallel()
			mnt := loopfs.Mount(t, fs.typ, 300<<20)
			for _, keepMtime := range []bool{false, true} {
				for _, tc := range []struct {
					name string
					size int64 // -1: keep
				}{{"copy", -1}, {"extend", 3 << 20}, {"shrink", 4096}, {"shrink0", 0}} {
					name := tc.name
					if keepMtime {
						name += "_mtime"
					}
					t.Run(name, func(t *testing.T) {
						dir := filepath.Join(mnt, name)
						require.NoError(t, os.Mkdir(dir, 0o755))
						src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
						want := writeSparse(t, src, 1<<20, 0, 512<<10)
						old := time.Now().Add(-time.Hour).Truncate(time.Second)
						require.NoError(t, os.Chtimes(src, old, old))

						res, err := fsutil.CopyFile(context.Background(), src, dst, fsutil.CopyOptions{Size: tc.size, KeepMtime: keepMtime})
						require.NoError(t, err)
						got, err := os.ReadFile(dst)
						require.NoError(t, err)
						switch {
						case tc.size < 0:
						case tc.size <= int64(len(want)):
							want = want[:tc.size]
						default:
							want = append(want, make([]byte, tc.size-int64(len(want)))...)
						}
						assert.True(t, bytes.Equal(want, got), "content")
						assert.False(t, os.SameFile(ino(t, src), ino(t, dst)), "a new inode")
						assert.Equal(t, fs.reflink && tc.size != 0, res.Reflinked)
						if keepMtime {
							assert.Equal(t, old, ino(t, dst).ModTime())
						} else {
							assert.NotEqual(t, old, ino(t, dst).ModTime())
						}
						assert.Equal(t, os.FileMode(0o600), ino(t, dst).Mode().Perm())
						assertNoTemp(t, dir)
					})
				}
			}
		})
	}
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, fsutil.IsTemp(e.Name()), "temporary file %s left behind", e.Name())
	}
}

func TestCopyFileSameFileNewInode(t *testing.T) {
	mnt := loopfs.Mount(t, loopfs.Btrfs, 128<<20)
	p := filepath.Join(mnt, "img")
	want := writeSparse(t, p, 1<<20, 4096)
	before := ino(t, p)
	res, err := fsutil.CopyFile(context.Background(), p, p, fsutil.CopyOptions{Size: 2 << 20})
	require.NoError(t, err)
	assert.True(t, res.Reflinked)
	after := ino(t, p)
	assert.False(t, os.SameFile(before, after), "copy onto itself makes a new inode")
	assert.EqualValues(t, 2<<20, after.Size())
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, want, got[:1<<20])
}

// TestSparseCopyKeepsHoles checks the fallback: holes stay holes, the data
// is equal, and the work done grows with the data, not the size.
func TestSparseCopyKeepsHoles(t *testing.T) {
	for _, fs := range filesystems {
		t.Run(string(fs.typ), func(t *testing.T) {
			t.Parallel()
			mnt := loopfs.Mount(t, fs.typ, 300<<20)
			src, dst := filepath.Join(mnt, "src"), filepath.Join(mnt, "dst")
			want := writeSparse(t, src, 64<<20, 0, 1<<20, 40<<20)
			res, err := fsutil.CopyFile(context.Background(), src, dst, fsutil.CopyOptions{Size: -1, NoClone: true})
			require.NoError(t, err)
			assert.False(t, res.Reflinked)
			assert.Less(t, res.Bytes, int64(1<<20), "only the data is copied")
			got, err := os.ReadFile(dst)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(want, got))
			assert.Less(t, fsutil.Allocated(ino(t, dst)), int64(2<<20), "holes stay holes")
		})
	}
}

func TestCopyFileFallbackOnExt4(t *testing.T) {
	mnt := loopfs.Mount(t, loopfs.Ext4, 64<<20)
	src, dst := filepath.Join(mnt, "src"), filepath.Join(mnt, "dst")
	writeSparse(t, src, 1<<20, 0)
	res, err := fsutil.CopyFile(context.Background(), src, dst, fsutil.CopyOptions{Size: -1})
	require.NoError(t, err)
	assert.False(t, res.Reflinked)
	assert.True(t, fsutil.NoReflink(res.CloneErr), "ext4 refuses FICLONE with EOPNOTSUPP: %v", res.CloneErr)
	assert.EqualValues(t, 4096, res.Bytes)
}

func TestCopyFileAcrossFilesystems(t *testing.T) {
	a := loopfs.Mount(t, loopfs.Btrfs, 128<<20)
	b := loopfs.Mount(t, loopfs.Btrfs, 128<<20)
	src, dst := filepath.Join(a, "src"), filepath.Join(b, "dst")
	want := writeSparse(t, src, 1<<20, 8192)
	res, err := fsutil.CopyFile(context.Background(), src, dst, fsutil.CopyOptions{Size: -1})
	require.NoError(t, err)
	assert.False(t, res.Reflinked)
	assert.True(t, fsutil.CloneRefused(res.CloneErr) && !fsutil.NoReflink(res.CloneErr), "EXDEV: %v", res.CloneErr)
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	assert.Equal(t, want, got)
}

func TestSparseCopyCancel(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	writeSparse(t, src, 1<<20, 0)
	require.NoError(t, os.WriteFile(dst, []byte("old"), 0o600))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := fsutil.CopyFile(ctx, src, dst, fsutil.CopyOptions{Size: -1, NoClone: true})
	require.ErrorIs(t, err, context.Canceled)
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	assert.Equal(t, "old", string(got), "a failed copy leaves dst as it was")
	assertNoTemp(t, dir)
}

func TestCopyFileMissingSource(t *testing.T) {
	dir := t.TempDir()
	_, err := fsutil.CopyFile(context.Background(), filepath.Join(dir, "nope"), filepath.Join(dir, "dst"), fsutil.CopyOptions{Size: -1})
	assert.ErrorIs(t, err, os.ErrNotExist)
	assertNoTemp(t, dir)
}

func TestPunchHole(t *testing.T) {
	mnt := loopfs.Mount(t, loopfs.Btrfs, 128<<20)
	p := filepath.Join(mnt, "img")
	writeSparse(t, p, 1<<20, 0, 4096, 8192)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, fsutil.PunchHole(f, 4096, 4096))
	require.NoError(t, f.Sync())
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, make([]byte, 4096), got[4096:8192])
	assert.EqualValues(t, 1<<20, ino(t, p).Size())
}

// TestUpdateLoopCapacity reproduces Qubes' test_100: a sparse image on loop
// devices (attached through the path and a symlink) is grown; the devices
// see the new size only after UpdateLoopCapacity.
func TestUpdateLoopCapacity(t *testing.T) {
	mnt := loopfs.Mount(t, loopfs.Btrfs, 128<<20)
	img := filepath.Join(mnt, "img")
	_, err := fsutil.CreateSparse(img, 111<<20)
	require.NoError(t, err)
	assert.Zero(t, fsutil.Allocated(ino(t, img)), "created sparse")
	link := filepath.Join(mnt, "link")
	require.NoError(t, os.Symlink(img, link))
	var devs []string
	for _, p := range []string{img, link} {
		out, err := exec.Command("losetup", "--find", "--show", p).Output()
		require.NoError(t, err)
		dev := strings.TrimSpace(string(out))
		devs = append(devs, dev)
		t.Cleanup(func() { _ = exec.Command("losetup", "--detach", dev).Run() })
	}
	devSize := func(dev string) int64 {
		out, err := exec.Command("blockdev", "--getsize64", dev).Output()
		require.NoError(t, err)
		var n int64
		_, err = fmt.Sscan(strings.TrimSpace(string(out)), &n)
		require.NoError(t, err)
		return n
	}
	require.NoError(t, fsutil.Truncate(img, 222<<20))
	for _, dev := range devs {
		assert.EqualValues(t, 111<<20, devSize(dev), "not yet told")
	}
	updated, err := fsutil.UpdateLoopCapacity(link)
	require.NoError(t, err)
	assert.ElementsMatch(t, devs, updated)
	for _, dev := range devs {
		assert.EqualValues(t, 222<<20, devSize(dev))
	}
}

func TestDurableOps(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	require.NoError(t, os.WriteFile(a, []byte("x"), 0o600))
	require.NoError(t, fsutil.Link(a, b))
	assert.True(t, os.SameFile(ino(t, a), ino(t, b)))
	require.NoError(t, fsutil.Rename(b, c))
	assert.True(t, os.SameFile(ino(t, a), ino(t, c)))
	removed, err := fsutil.Remove(c)
	require.NoError(t, err)
	assert.True(t, removed)
	removed, err = fsutil.Remove(c)
	require.NoError(t, err)
	assert.False(t, removed, "missing is not an error")

	sub := filepath.Join(dir, "sub")
	created, err := fsutil.Mkdir(sub)
	require.NoError(t, err)
	assert.True(t, created)
	created, err = fsutil.Mkdir(sub)
	require.NoError(t, err)
	assert.False(t, created)
	_, err = fsutil.Mkdir(a)
	assert.Error(t, err, "a file is not a directory")
	require.NoError(t, os.WriteFile(filepath.Join(sub, "f"), nil, 0o600))
	removed, err = fsutil.RemoveEmptyDir(sub)
	require.NoError(t, err)
	assert.False(t, removed, "not empty")
	require.NoError(t, os.Remove(filepath.Join(sub, "f")))
	removed, err = fsutil.RemoveEmptyDir(sub)
	require.NoError(t, err)
	assert.True(t, removed)

	assert.True(t, fsutil.IsTemp("/x/private.img~123"))
	assert.False(t, fsutil.IsTemp("/x~y/private.img"))
}
