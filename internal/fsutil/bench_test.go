package fsutil_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/loopfs"
)

// BenchmarkCopyFile compares CopyFile with cp on the same image in the
// same run: the reflink path (btrfs, XFS) against cp --reflink=always, and
// the sparse copy (ext4, or NoClone) against cp --sparse=always. The image
// is 1 GiB: 56 MiB of data in 4 KiB blocks spread over it and, every
// 16 MiB, a 2 MiB run of written zeros (128 MiB in all), which both copies
// leave as holes.
func BenchmarkCopyFile(b *testing.B) {
	for _, tc := range []struct {
		typ     loopfs.Type
		noClone bool
		cpFlag  string
	}{
		{loopfs.Btrfs, false, "--reflink=always"},
		{loopfs.XFS, false, "--reflink=always"},
		{loopfs.Ext4, true, "--sparse=always"},
	} {
		b.Run(string(tc.typ)+"/"+tc.cpFlag[2:], func(b *testing.B) {
			ctx := context.Background()
			mnt := loopfs.Mount(b, tc.typ, 2<<30)
			src := filepath.Join(mnt, "src")
			var offs []int64
			for off := int64(0); off < 1<<30; off += 64 << 10 {
				if off%(16<<20) >= 2<<20 {
					offs = append(offs, off)
				}
			}
			writeSparse(b, src, 1<<30, offs...)
			for off := int64(0); off < 1<<30; off += 16 << 20 {
				writeAt(b, src, make([]byte, 2<<20), off)
			}
			dst := filepath.Join(mnt, "dst")
			var ours, cp time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				_, err := fsutil.CopyFile(ctx, src, dst, fsutil.CopyOptions{Size: -1, NoClone: tc.noClone})
				require.NoError(b, err)
				ours += time.Since(t0)
				b.StopTimer()
				require.NoError(b, os.Remove(dst))
				require.NoError(b, fsutil.Syncfs(mnt))
				b.StartTimer()
				t1 := time.Now()
				out, err := exec.Command("cp", tc.cpFlag, "--", src, dst).CombinedOutput()
				require.NoError(b, err, "%s", out)
				require.NoError(b, fsutil.SyncFile(dst))
				cp += time.Since(t1)
				b.StopTimer()
				require.NoError(b, os.Remove(dst))
				require.NoError(b, fsutil.Syncfs(mnt))
				b.StartTimer()
			}
			b.ReportMetric(float64(ours.Nanoseconds())/float64(b.N), "vmpool-ns/op")
			b.ReportMetric(float64(cp.Nanoseconds())/float64(b.N), "cp-ns/op")
			b.ReportMetric(float64(ours)/float64(cp), "vmpool/cp")
		})
	}
}
