package reflink

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/storage"
)

// fragment writes n random 4 KiB blocks at random 4 KiB-aligned offsets of
// the file at path, making it an image with about n extents.
func fragment(tb testing.TB, path string, size int64, n int) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(tb, err)
	defer f.Close()
	blk := make([]byte, 4096)
	var idx [8]byte
	for i := 0; i < n; i++ {
		_, _ = rand.Read(blk)
		_, _ = rand.Read(idx[:])
		off := int64(binary.LittleEndian.Uint64(idx[:])%uint64(size/4096)) * 4096
		_, err := f.WriteAt(blk, off)
		require.NoError(tb, err)
	}
	require.NoError(tb, f.Sync())
}

// extentCount asks the filesystem how many extents the file has
// (FS_IOC_FIEMAP with no room for extents returns the count).
func extentCount(tb testing.TB, path string) int {
	f, err := os.Open(path)
	require.NoError(tb, err)
	defer f.Close()
	// struct fiemap: start, length u64; flags, mapped_extents, extent_count, reserved u32.
	var fm [32]byte
	binary.LittleEndian.PutUint64(fm[8:], ^uint64(0))
	const fsIocFiemap = 0xC020660B
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocFiemap, uintptr(unsafe.Pointer(&fm))); errno != 0 {
		return -1
	}
	return int(binary.LittleEndian.Uint32(fm[20:]))
}

// ficlone is the baseline: a plain FICLONE of src into a temporary file,
// fsync and rename, as a clone on the start path would cost.
func ficlone(tb testing.TB, src, dst string) {
	in, err := os.Open(src)
	require.NoError(tb, err)
	defer in.Close()
	tmp, err := fsutil.CreateTemp(dst)
	require.NoError(tb, err)
	require.NoError(tb, fsutil.Clone(tmp, in))
	require.NoError(tb, tmp.Sync())
	require.NoError(tb, tmp.Close())
	require.NoError(tb, fsutil.Rename(tmp.Name(), dst))
}

// BenchmarkReflinkStartStop measures an origin volume's start and stop on
// an image of 1 GiB, with many extents (200 MiB of random 4 KiB writes)
// and with few, next to a plain FICLONE+fsync+rename of the same image in
// the same run. The background worker's time (the next precache clone,
// deleting the pruned revision) is reported apart; between iterations the
// benchmark waits for it and for the filesystem's own background freeing
// (syncfs), outside the timings.
func BenchmarkReflinkStartStop(b *testing.B) {
	const size = 1 << 30
	for _, typ := range []loopfs.Type{loopfs.Btrfs, loopfs.XFS} {
		for _, ext := range []struct {
			name   string
			blocks int
		}{{"many-extents", 200 << 20 / 4096}, {"few-extents", 16}} {
			b.Run(string(typ)+"/"+ext.name, func(b *testing.B) {
				ctx := context.Background()
				mnt := loopfs.Mount(b, typ, 3<<30)
				dir := filepath.Join(mnt, "pool")
				p, err := Driver{}.Open(ctx, storage.PoolConfig{Name: "bench", Params: map[string]string{"dir_path": dir}})
				require.NoError(b, err)
				defer p.Close()
				require.NoError(b, p.Setup(ctx))
				sv, err := p.InitVolume(storage.VolumeConfig{VID: "appvms/bench/private", SaveOnStop: true, RW: true, Size: size})
				require.NoError(b, err)
				v := sv.(*volume)
				require.NoError(b, v.Create(ctx))
				require.NoError(b, v.Start(ctx))
				fragment(b, v.dirty, size, ext.blocks)
				require.NoError(b, v.Stop(ctx))
				settle := func() {
					require.NoError(b, p.(*reflinkPool).Flush(ctx))
					require.NoError(b, fsutil.Syncfs(mnt))
				}
				settle()
				b.Logf("%s: image has %d extents", b.Name(), extentCount(b, v.clean))

				var start, stop, clone time.Duration
				busy0 := v.p.worker.busy.Load()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					t0 := time.Now()
					require.NoError(b, v.Start(ctx))
					t1 := time.Now()
					writeOne(b, v.dirty, int64(i%1000)*4096)
					t2 := time.Now()
					require.NoError(b, v.Stop(ctx))
					t3 := time.Now()
					start += t1.Sub(t0)
					stop += t3.Sub(t2)
					b.StopTimer()
					settle()
					t4 := time.Now()
					ficlone(b, v.clean, filepath.Join(filepath.Dir(v.clean), "baseline.img"))
					clone += time.Since(t4)
					require.NoError(b, os.Remove(filepath.Join(filepath.Dir(v.clean), "baseline.img")))
					require.NoError(b, fsutil.Syncfs(mnt))
					b.StartTimer()
				}
				b.StopTimer()
				worker := time.Duration(v.p.worker.busy.Load() - busy0)
				n := float64(b.N)
				b.ReportMetric(float64(start.Nanoseconds())/n, "start-ns/op")
				b.ReportMetric(float64(stop.Nanoseconds())/n, "stop-ns/op")
				b.ReportMetric(float64(worker.Nanoseconds())/n, "worker-ns/op")
				b.ReportMetric(float64(clone.Nanoseconds())/n, "ficlone-ns/op")
				b.ReportMetric(float64(start)/float64(clone), "start/ficlone")
				b.ReportMetric(float64(stop)/float64(clone), "stop/ficlone")
			})
		}
	}
}

func writeOne(tb testing.TB, path string, off int64) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(tb, err)
	_, err = f.WriteAt([]byte("vmpool"), off)
	require.NoError(tb, err)
	require.NoError(tb, f.Close())
}
