package fsutil_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/internal/testenv"
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

// patterned returns 9 MiB of random data with a zero region from 3 to
// 6 MiB, what the block device and FIFO tests copy.
func patterned() []byte {
	b := randomBytes(9 << 20)
	clear(b[3<<20 : 6<<20])
	return b
}

// progressLog collects the reports of a copy.
type progressLog struct {
	mu      sync.Mutex
	reports [][2]int64
}

func (p *progressLog) report(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reports = append(p.reports, [2]int64{done, total})
}

// TestCopyFileBlockDevice copies a loop device: the copy has the device's
// size and data, its zero region is a hole, and progress runs to the size
// BLKGETSIZE64 gives.
func TestCopyFileBlockDevice(t *testing.T) {
	mnt := loopfs.Mount(t, loopfs.Ext4, 64<<20)
	testenv.RequireCommand(t, "losetup")
	want := patterned()
	backing := filepath.Join(mnt, "backing")
	require.NoError(t, os.WriteFile(backing, want, 0o600))
	out, err := exec.Command("losetup", "--find", "--show", backing).Output()
	require.NoError(t, err)
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("detach %s: %v: %s", dev, err, out)
		}
	})
	for _, tc := range []struct {
		name string
		size int64
	}{{"copy", -1}, {"extend", 12 << 20}} {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(mnt, tc.name)
			var p progressLog
			res, err := fsutil.CopyFile(context.Background(), dev, dst, fsutil.CopyOptions{Size: tc.size, Progress: p.report})
			require.NoError(t, err)
			assert.False(t, res.Reflinked)
			assert.NoError(t, res.CloneErr, "FICLONE is not tried")
			assert.EqualValues(t, len(want), res.Bytes)
			w := want
			if tc.size >= 0 {
				w = append(bytes.Clone(want), make([]byte, tc.size-int64(len(want)))...)
			}
			assertSameContent(t, w, dst)
			assert.LessOrEqual(t, fsutil.Allocated(ino(t, dst)), int64(6<<20+64<<10), "the zero region is a hole")
			assert.EqualValues(t, 6<<20, nextData(t, dst, 3<<20), "the zero region is a hole")
			require.NotEmpty(t, p.reports)
			assert.Equal(t, [2]int64{9 << 20, 9 << 20}, p.reports[len(p.reports)-1])
			for _, r := range p.reports {
				assert.EqualValues(t, 9<<20, r[1], "the total is the device's size")
			}
			assertNoTemp(t, mnt)
		})
	}
}

// TestCopyFileFIFO copies what a writer sends through a FIFO: its size is
// what was read until the writer closed it.
func TestCopyFileFIFO(t *testing.T) {
	mnt := loopfs.Mount(t, loopfs.Ext4, 64<<20)
	want := patterned()
	for _, tc := range []struct {
		name string
		size int64
		data int64 // bytes that are not in the zero region
	}{{"copy", -1, 6 << 20}, {"shrink", 4 << 20, 3 << 20}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(mnt, tc.name)
			require.NoError(t, os.Mkdir(dir, 0o755))
			fifo, dst := filepath.Join(dir, "fifo"), filepath.Join(dir, "dst")
			require.NoError(t, unix.Mkfifo(fifo, 0o600))
			written := make(chan error, 1)
			go func() {
				f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
				if err == nil {
					_, err = f.Write(want)
					err = errors.Join(err, f.Close())
				}
				written <- err
			}()
			var p progressLog
			res, err := fsutil.CopyFile(context.Background(), fifo, dst, fsutil.CopyOptions{Size: tc.size, Progress: p.report})
			require.NoError(t, err)
			require.NoError(t, <-written)
			assert.False(t, res.Reflinked)
			assert.NoError(t, res.CloneErr, "FICLONE is not tried")
			assert.EqualValues(t, len(want), res.Bytes)
			w := want
			if tc.size >= 0 {
				w = want[:tc.size]
			}
			assertSameContent(t, w, dst)
			assert.LessOrEqual(t, fsutil.Allocated(ino(t, dst)), tc.data+64<<10, "the zero region is a hole")
			require.NotEmpty(t, p.reports)
			assert.Equal(t, [2]int64{9 << 20, 9 << 20}, p.reports[len(p.reports)-1], "the total is known at the end")
			for _, r := range p.reports[:len(p.reports)-1] {
				assert.EqualValues(t, -1, r[1], "the total is unknown until the end")
			}
			assertNoTemp(t, dir)
		})
	}
}

// TestCopyFileOddSource checks that what is neither a regular file, a
// block device nor a FIFO is refused.
func TestCopyFileOddSource(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	require.NoError(t, err)
	defer l.Close()
	for what, src := range map[string]string{"directory": dir, "character device": "/dev/null", "socket": sock} {
		_, err := fsutil.CopyFile(context.Background(), src, filepath.Join(dir, "dst"), fsutil.CopyOptions{Size: -1})
		require.ErrorIs(t, err, fsutil.ErrFileType, what)
		assert.Contains(t, err.Error(), "a "+what+" is not a regular file", what)
		assertNoTemp(t, dir)
		assert.NoFileExists(t, filepath.Join(dir, "dst"))
	}
}

// TestCopyFileEdit: Edit sees the copy, with src's data, under its
// temporary name and may change it before the rename; an Edit error
// fails the copy, leaving dst as it was and no temporary file.
func TestCopyFileEdit(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	require.NoError(t, os.WriteFile(src, []byte("0123456789"), 0o600))
	require.NoError(t, os.WriteFile(dst, []byte("old"), 0o600))
	_, err := fsutil.CopyFile(context.Background(), src, dst, fsutil.CopyOptions{Size: -1, Edit: func(tmp *os.File) error {
		assert.NotEqual(t, dst, tmp.Name(), "edited under its temporary name")
		b := make([]byte, 10)
		if _, err := tmp.ReadAt(b, 0); err != nil {
			return err
		}
		assert.Equal(t, "0123456789", string(b))
		_, err := tmp.WriteAt([]byte("AB"), 4)
		return err
	}})
	require.NoError(t, err)
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	assert.Equal(t, "0123AB6789", string(got))

	boom := errors.New("boom")
	_, err = fsutil.CopyFile(context.Background(), src, dst, fsutil.CopyOptions{Size: -1, Edit: func(*os.File) error { return boom }})
	require.ErrorIs(t, err, boom)
	got, err = os.ReadFile(dst)
	require.NoError(t, err)
	assert.Equal(t, "0123AB6789", string(got), "a failed edit leaves dst alone")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 2, "and no temporary file")
}
