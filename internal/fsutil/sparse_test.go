package fsutil_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/loopfs"
)

// writeAt writes b at off in the file at path, creating it, and fsyncs
// it.
func writeAt(t testing.TB, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// nextData returns where the first data region at or after off begins in
// the file at path (its size when only a hole is left).
func nextData(t *testing.T, path string, off int64) int64 {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return ino(t, path).Size()
	}
	require.NoError(t, err)
	return data
}

// assertSameContent checks that the files at want and got hold the same
// bytes.
func assertSameContent(t *testing.T, want []byte, got string) {
	t.Helper()
	b, err := os.ReadFile(got)
	require.NoError(t, err)
	assert.Equal(t, len(want), len(b), "size")
	assert.True(t, bytes.Equal(want, b), "content")
}

// TestCopyFileZerosBecomeHoles checks that the sparse copy leaves written
// zeros out, as cp --sparse=always does, whether it was asked for or ext4
// refused FICLONE: 8 MiB of written zeros, 1 MiB of data with an 8 KiB run
// of zeros inside, a hole and a 1000-byte tail.
func TestCopyFileZerosBecomeHoles(t *testing.T) {
	mnt := loopfs.Mount(t, loopfs.Ext4, 64<<20)
	for _, noClone := range []bool{true, false} {
		name := map[bool]string{true: "noclone", false: "refused"}[noClone]
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(mnt, name)
			require.NoError(t, os.Mkdir(dir, 0o755))
			src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
			data := randomBytes(1 << 20)
			clear(data[64<<10 : 72<<10])
			tail := randomBytes(1000)
			want := make([]byte, 10<<20+len(tail))
			copy(want[8<<20:], data)
			copy(want[10<<20:], tail)
			writeAt(t, src, make([]byte, 8<<20), 0)
			writeAt(t, src, data, 8<<20)
			writeAt(t, src, tail, 10<<20)
			require.GreaterOrEqual(t, fsutil.Allocated(ino(t, src)), int64(9<<20), "the zeros are written")

			res, err := fsutil.CopyFile(context.Background(), src, dst, fsutil.CopyOptions{Size: -1, NoClone: noClone})
			require.NoError(t, err)
			assert.False(t, res.Reflinked)
			assert.Equal(t, !noClone, fsutil.NoReflink(res.CloneErr), "%v", res.CloneErr)
			assert.EqualValues(t, 9<<20+len(tail), res.Bytes, "the data regions are read")
			assertSameContent(t, want, dst)
			assert.LessOrEqual(t, fsutil.Allocated(ino(t, dst)), int64(1<<20+64<<10), "zeros are holes")
			assert.EqualValues(t, 8<<20, nextData(t, dst, 0), "written zeros become a hole")
			assert.EqualValues(t, 10<<20, nextData(t, dst, 9<<20), "a hole stays a hole")
		})
	}
}

// TestCopyFileZeroFileAcrossFilesystems copies a file of written zeros
// from btrfs to ext4 (FICLONE refused with EXDEV): the copy is all hole.
func TestCopyFileZeroFileAcrossFilesystems(t *testing.T) {
	a := loopfs.Mount(t, loopfs.Btrfs, 128<<20)
	b := loopfs.Mount(t, loopfs.Ext4, 64<<20)
	src, dst := filepath.Join(a, "src"), filepath.Join(b, "dst")
	want := make([]byte, 4<<20+100)
	writeAt(t, src, want, 0)
	require.GreaterOrEqual(t, fsutil.Allocated(ino(t, src)), int64(4<<20), "the zeros are written")
	res, err := fsutil.CopyFile(context.Background(), src, dst, fsutil.CopyOptions{Size: -1})
	require.NoError(t, err)
	assert.False(t, res.Reflinked)
	assert.True(t, fsutil.CloneRefused(res.CloneErr), "%v", res.CloneErr)
	assertSameContent(t, want, dst)
	assert.LessOrEqual(t, fsutil.Allocated(ino(t, dst)), int64(64<<10), "zeros are holes")
}

// TestSparseCopy calls SparseCopy on a reader and on files, with and
// without a limit.
func TestSparseCopy(t *testing.T) {
	mnt := loopfs.Mount(t, loopfs.Ext4, 64<<20)
	// Data, zeros, data and a short tail: 64 KiB + 128 KiB + 4196 bytes.
	content := append(randomBytes(64<<10), make([]byte, 128<<10)...)
	content = append(content, randomBytes(4096+100)...)
	size := int64(len(content))
	file := filepath.Join(mnt, "file")
	writeAt(t, file, content[:64<<10], 0) // the zeros are a hole
	writeAt(t, file, content[192<<10:], 192<<10)
	type report struct{ done, total int64 }
	for _, tc := range []struct {
		name    string
		src     func(t *testing.T) io.Reader
		limit   int64
		want    []byte // nil: ErrTooLong
		reports []report
	}{
		{"reader", func(*testing.T) io.Reader { return bytes.NewReader(content) }, -1, content, []report{{size, -1}, {size, size}}},
		{"reader/limit", func(*testing.T) io.Reader { return bytes.NewReader(content) }, size, content, []report{{size, size}}},
		{"reader/short", func(*testing.T) io.Reader { return bytes.NewReader(content) }, size + 1, content, []report{{size, size + 1}}},
		{"reader/long", func(*testing.T) io.Reader { return bytes.NewReader(content) }, size - 1, nil, nil},
		{"file", openAt(file, 0), -1, content, []report{{64 << 10, size}, {size, size}}},
		{"file/offset", openAt(file, 4096+100), size - 4196, content[4196:], []report{{64<<10 - 4196, size - 4196}, {size - 4196, size - 4196}}},
		{"file/short", openAt(file, 0), size + 1, content, []report{{64 << 10, size + 1}, {size, size + 1}}},
		{"file/long", openAt(file, 0), size - 1, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(mnt, filepath.Base(tc.name)+"-"+filepath.Dir(tc.name))
			require.NoError(t, os.Mkdir(dir, 0o755))
			dst, err := os.Create(filepath.Join(dir, "dst"))
			require.NoError(t, err)
			defer dst.Close()
			var reports []report
			src := tc.src(t)
			n, err := fsutil.SparseCopy(context.Background(), dst, src, tc.limit, func(done, total int64) {
				reports = append(reports, report{done, total})
			})
			if tc.want == nil {
				require.ErrorIs(t, err, fsutil.ErrTooLong)
				assert.Contains(t, err.Error(), "too much data (expected "+strconv.FormatInt(tc.limit, 10)+" bytes)")
				return
			}
			require.NoError(t, err)
			assert.EqualValues(t, len(tc.want), n)
			assert.Equal(t, tc.reports, reports, "progress")
			require.NoError(t, dst.Sync())
			assertSameContent(t, tc.want, dst.Name())
			assert.LessOrEqual(t, fsutil.Allocated(ino(t, dst.Name())), int64(len(tc.want)-120<<10), "zeros are holes")
			if f, ok := src.(*os.File); ok {
				off, err := f.Seek(0, io.SeekCurrent)
				require.NoError(t, err)
				assert.Equal(t, size, off, "the source is read to its end")
			}
		})
	}
}

// openAt returns a function that opens path at offset off for a test,
// closed when it ends.
func openAt(path string, off int64) func(t *testing.T) io.Reader {
	return func(t *testing.T) io.Reader {
		f, err := os.Open(path)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() })
		_, err = f.Seek(off, io.SeekStart)
		require.NoError(t, err)
		return f
	}
}

// cancelReader cancels a context on its first Read.
type cancelReader struct {
	r      io.Reader
	cancel context.CancelFunc
}

func (r cancelReader) Read(p []byte) (int, error) {
	r.cancel()
	return r.r.Read(p)
}

// TestSparseCopyCancelReader checks that a reader is copied in chunks and
// the copy stops at the first chunk that ends after ctx was cancelled.
func TestSparseCopyCancelReader(t *testing.T) {
	dst, err := os.Create(filepath.Join(t.TempDir(), "dst"))
	require.NoError(t, err)
	defer dst.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := fsutil.SparseCopy(ctx, dst, cancelReader{bytes.NewReader(randomBytes(8 << 20)), cancel}, -1, nil)
	require.ErrorIs(t, err, context.Canceled)
	assert.Positive(t, n, "the first chunk is copied")
	assert.Less(t, n, int64(8<<20), "the copy stops")
}
