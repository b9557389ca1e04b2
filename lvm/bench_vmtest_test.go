//go:build vmtest

package lvm_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/lvm"
	"github.com/vmpool/vmpool/storage"
)

// benchSize is the size of each volume of the benchmark's VM; benchWrite
// is what a cycle writes into each while it runs.
const (
	benchSize  = 64 << 20
	benchWrite = 16 << 20
)

// writeDev writes n bytes of non-zero data to the start of a device and
// syncs it.
func writeDev(tb testing.TB, path string, n int) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(tb, err)
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7) | 1
	}
	for off := 0; off < n; off += len(buf) {
		_, err := f.WriteAt(buf, int64(off))
		require.NoError(tb, err)
	}
	require.NoError(tb, f.Sync())
}

// median returns the median of ds.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkLVMVMStartStop measures one VM start and one stop (an AppVM:
// root a snapshot of its template's root, private with revisions_to_keep 1
// so that each stop prunes, volatile; 16 MiB written into each while it
// runs), apart, with the lvm processes each spawns, next to the same LV
// operations (a) run as one lvm process each and (b) fed to one lvm
// process, measured in the same run. It reports medians of b.N cycles of
// each.
func BenchmarkLVMVMStartStop(b *testing.B) {
	vg, thin := newVG(b, 2<<30)
	ctx := context.Background()
	p := openPool(b, vg, thin, nil)
	require.NoError(b, p.Setup(ctx))
	b.Cleanup(func() { p.Close() })
	keep := 1
	mk := func(c storage.VolumeConfig) storage.Volume {
		v, err := p.InitVolume(c)
		require.NoError(b, err)
		require.NoError(b, v.Create(ctx))
		return v
	}
	vid := func(vm, vol string) string { return storage.LVMVID{VG: vg, VM: vm, Volume: vol}.String() }
	tpl := mk(storage.VolumeConfig{VID: vid("tpl", "root"), Size: benchSize, RW: true, SaveOnStop: true, RevisionsToKeep: &keep})
	root := mk(storage.VolumeConfig{VID: vid("work", "root"), Size: benchSize, RW: true, SnapOnStart: true, Source: tpl.Config().VID})
	priv := mk(storage.VolumeConfig{VID: vid("work", "private"), Size: benchSize, RW: true, SaveOnStop: true, RevisionsToKeep: &keep})
	vol := mk(storage.VolumeConfig{VID: vid("work", "volatile"), Size: benchSize, RW: true})
	set := storage.NewSet(root, priv, vol)
	writeAll := func(paths ...string) {
		for _, path := range paths {
			writeDev(b, path, benchWrite)
		}
	}
	devs := func() []string {
		return []string{root.BlockDevice().Path, priv.BlockDevice().Path, vol.BlockDevice().Path}
	}
	// Warm up: the private volume gets its revision, so every later stop
	// prunes one.
	for range 2 {
		require.NoError(b, set.Start(ctx))
		writeAll(devs()...)
		require.NoError(b, set.Stop(ctx))
	}

	var starts, stops []time.Duration
	var startProcs, stopProcs int64
	for range b.N {
		n := lvm.LVMProcesses(p)
		t0 := time.Now()
		require.NoError(b, set.Start(ctx))
		starts = append(starts, time.Since(t0))
		startProcs = lvm.LVMProcesses(p) - n
		writeAll(devs()...)
		n = lvm.LVMProcesses(p)
		t0 = time.Now()
		require.NoError(b, set.Stop(ctx))
		stops = append(stops, time.Since(t0))
		stopProcs = lvm.LVMProcesses(p) - n
	}

	// The baselines work on a VM of their own in the same thin pool, with
	// the same LV operations: the start's clones and create, the stop's
	// removals, commit renames and the pruning of the oldest revision
	// (blkdiscard before its removal).
	L := func(lv string) string { return vg + "/" + lv }
	lvmRun(b, []string{"lvcreate", "--thin", "--name=vm-base-private", "--virtualsize=64M", "--", L(thin)})
	epoch := time.Now().Unix()
	startCmds := func() [][]string {
		return [][]string{
			{"lvcreate", "--setactivationskip=n", "--activate=y", "--snapshot", "--name=vm-base-root-snap", "--", L("vm-tpl-root")},
			{"lvcreate", "--setactivationskip=n", "--activate=y", "--snapshot", "--name=vm-base-private-snap", "--", L("vm-base-private")},
			{"lvcreate", "--thin", "--setactivationskip=n", "--activate=y", "--name=vm-base-volatile", fmt.Sprintf("--virtualsize=%dB", benchSize), "--", L(thin)},
		}
	}
	var prev string
	stopCmds := func() ([][]string, string) {
		epoch++
		back := fmt.Sprintf("vm-base-private-%d-back", epoch)
		cmds := [][]string{
			{"lvremove", "--force", "--", L("vm-base-root-snap")},
			{"lvremove", "--force", "--", L("vm-base-volatile")},
			{"lvrename", "--", L("vm-base-private"), L(back)},
			{"lvrename", "--", L("vm-base-private-snap"), L("vm-base-private")},
		}
		old := prev
		prev = back
		if old != "" {
			cmds = append(cmds, []string{"lvremove", "--force", "--", L(old)})
		}
		return cmds, old
	}
	baseDevs := func() []string {
		return []string{"/dev/" + vg + "/vm-base-root-snap", "/dev/" + vg + "/vm-base-private-snap", "/dev/" + vg + "/vm-base-volatile"}
	}
	discard := func(lv string) {
		if lv != "" {
			_ = exec.Command("blkdiscard", "-p", "1G", "/dev/"+vg+"/"+lv).Run()
		}
	}
	eachProc := func(cmds [][]string) {
		for _, c := range cmds {
			if c[0] == "lvremove" {
				discard(c[len(c)-1][len(vg)+1:])
			}
			lvmRun(b, c)
		}
	}
	oneProc := func(cmds [][]string) {
		for _, c := range cmds {
			if c[0] == "lvremove" {
				discard(c[len(c)-1][len(vg)+1:])
			}
		}
		out, err := lvm.ExecRunner{}.LVM(ctx, cmds)
		require.NoError(b, err, "%s", out.Stderr)
	}
	measure := func(run func([][]string)) (start, stop []time.Duration) {
		for i := range b.N + 1 {
			t0 := time.Now()
			run(startCmds())
			d := time.Since(t0)
			writeAll(baseDevs()...)
			cmds, _ := stopCmds()
			t0 = time.Now()
			run(cmds)
			if i > 0 { // the first cycle prunes nothing
				start, stop = append(start, d), append(stop, time.Since(t0))
			}
		}
		return start, stop
	}
	aStart, aStop := measure(eachProc)
	bStart, bStop := measure(oneProc)

	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(median(starts)), "start-ms")
	b.ReportMetric(ms(median(stops)), "stop-ms")
	b.ReportMetric(float64(startProcs), "start-lvm-procs")
	b.ReportMetric(float64(stopProcs), "stop-lvm-procs")
	b.ReportMetric(ms(median(aStart)), "a-start-ms")
	b.ReportMetric(ms(median(aStop)), "a-stop-ms")
	b.ReportMetric(ms(median(bStart)), "b-start-ms")
	b.ReportMetric(ms(median(bStop)), "b-stop-ms")
	b.ReportMetric(float64(median(starts))/float64(median(bStart)), "start/b")
	b.ReportMetric(float64(median(stops))/float64(median(bStop)), "stop/b")
	b.ReportMetric(float64(median(starts))/float64(median(aStart)), "start/a")
	b.ReportMetric(float64(median(stops))/float64(median(aStop)), "stop/a")
	b.Logf("vmpool: start %v (%d lvm processes), stop %v (%d); (a) one lvm process per operation: start %v (3), stop %v (5); (b) one lvm process: start %v, stop %v",
		median(starts), startProcs, median(stops), stopProcs, median(aStart), median(aStop), median(bStart), median(bStop))
}
