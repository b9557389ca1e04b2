package pool

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/vmpool/vmpool/internal/testenv"
	"github.com/vmpool/vmpool/storage"
)

// importBlock is the size of the blocks TestManagerImportData builds its
// data from: a multiple of fsutil.ZeroBlock, so a block of zeros is left
// as a hole whatever the filesystem's block size up to 64 KiB.
const importBlock = 64 << 10

// bytesRead returns how many bytes this process has read with read(2)
// and its kind (rchar in /proc/self/io), holes included. The pool tests
// do not run in parallel, so the difference around a call is its reads.
func bytesRead(t *testing.T) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/io")
	testenv.Need(t, err == nil, "/proc/self/io", fmt.Sprintf("the kernel's I/O accounting: %v", err))
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "rchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	require.NoError(t, sc.Err())
	t.Fatal("no rchar in /proc/self/io")
	return 0
}

// assertSameSparse checks that the files at want and got have the same
// size and bytes, reading only their data regions (what is outside them
// reads as zeros in both).
func assertSameSparse(t *testing.T, want, got string) {
	t.Helper()
	a, err := os.Open(want)
	require.NoError(t, err)
	defer a.Close()
	b, err := os.Open(got)
	require.NoError(t, err)
	defer b.Close()
	sa, err := a.Stat()
	require.NoError(t, err)
	sb, err := b.Stat()
	require.NoError(t, err)
	require.Equal(t, sa.Size(), sb.Size(), "size")
	for _, f := range []*os.File{a, b} {
		for off := int64(0); off < sa.Size(); {
			data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
			if errors.Is(err, unix.ENXIO) {
				break
			}
			require.NoError(t, err)
			hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
			require.NoError(t, err)
			ra, rb := make([]byte, hole-data), make([]byte, hole-data)
			_, err = a.ReadAt(ra, data)
			require.NoError(t, err)
			_, err = b.ReadAt(rb, data)
			require.NoError(t, err)
			require.True(t, bytes.Equal(ra, rb), "bytes %d to %d of %s", data, hole, f.Name())
			off = hole
		}
	}
}

// TestManagerImportDataSparseFile imports a 64 GiB sparse file holding
// 2 MiB of data: only the data is read (the holes are skipped, not read
// as zeros), the image is the file, and the exact-size rules still hold.
func TestManagerImportDataSparseFile(t *testing.T) {
	m, _ := newManager(t)
	ctx := context.Background()
	createVMs(t, m)
	img := filepath.Join(m.Pools()[0].Config()["dir_path"], "appvms/work/private.img")

	const size = 64 << 30
	src := filepath.Join(t.TempDir(), "big.img")
	f, err := os.Create(src)
	require.NoError(t, err)
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		testenv.Need(t, false, "large sparse files", fmt.Sprintf("a 64 GiB sparse file in %s: %v", filepath.Dir(src), err))
	}
	for _, c := range []struct{ off, len int64 }{
		{0, 512 << 10}, {32<<30 + 12345, 1 << 20}, {size - 512<<10, 512 << 10},
	} {
		b := make([]byte, c.len)
		_, _ = rand.Read(b)
		_, err := f.WriteAt(b, c.off)
		require.NoError(t, err)
	}
	require.NoError(t, f.Sync())

	var last [2]int64
	pctx := storage.WithProgress(ctx, func(done, total int64) { last = [2]int64{done, total} })
	before := bytesRead(t)
	require.NoError(t, m.ImportData(pctx, "work", "private", f, size))
	read := bytesRead(t) - before
	assert.Less(t, read, int64(16<<20), "only the data is read, not 64 GiB of holes")
	assert.Equal(t, [2]int64{size, size}, last, "progress reaches the size")
	off, err := f.Seek(0, io.SeekCurrent)
	require.NoError(t, err)
	assert.EqualValues(t, size, off, "the file is read to its end")
	assertSameSparse(t, src, img)
	vol, err := m.Volume("work", "private")
	require.NoError(t, err)
	assert.EqualValues(t, size, vol.Config().Size)
}

// TestManagerImportDataFile imports from regular files: from the current
// offset, and too short or too long.
func TestManagerImportDataFile(t *testing.T) {
	m, _ := newManager(t)
	ctx := context.Background()
	createVMs(t, m)
	img := filepath.Join(m.Pools()[0].Config()["dir_path"], "appvms/work/private.img")
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data[:200<<10])
	_, _ = rand.Read(data[900<<10:])
	src := filepath.Join(t.TempDir(), "src.img")
	require.NoError(t, os.WriteFile(src, data, 0o600))

	for _, tc := range []struct {
		name string
		off  int64
		size int64
		want string // error
	}{
		{"whole", 0, 1 << 20, ""},
		{"offset", 4096 + 100, 1<<20 - 4196, ""},
		{"short", 0, 1<<20 + 1, "not enough data (copied 1048576 bytes, expected 1048577 bytes)"},
		{"long", 0, 1<<20 - 1, "too much data (expected 1048575 bytes)"},
		{"long/offset", 100, 1<<20 - 101, "too much data (expected 1048475 bytes)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := os.Open(src)
			require.NoError(t, err)
			defer f.Close()
			_, err = f.Seek(tc.off, io.SeekStart)
			require.NoError(t, err)
			before, err := os.ReadFile(img)
			require.NoError(t, err)
			err = m.ImportData(ctx, "work", "private", f, tc.size)
			got, rerr := os.ReadFile(img)
			require.NoError(t, rerr)
			if tc.want != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.want)
				assert.True(t, bytes.Equal(before, got), "a failed import commits nothing")
				return
			}
			require.NoError(t, err)
			assert.True(t, bytes.Equal(data[tc.off:], got), "the image holds the file from its offset")
		})
	}
}
