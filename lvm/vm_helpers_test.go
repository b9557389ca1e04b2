//go:build vmtest

package lvm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/testenv"
	"github.com/vmpool/vmpool/internal/vmtest"
	"github.com/vmpool/vmpool/lvm"
	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

// The tests with the vmtest tag run inside a VM with device-mapper and
// LVM (internal/vmtest, or a VM made by hand) as root, with
// VMTEST_IN_VM=1; they make their volume groups on loop devices.

// requireVM fails or skips (testenv) unless the test runs in such a VM,
// and says that it does.
func requireVM(t testing.TB) {
	t.Helper()
	if !vmtest.InVM() && os.Getenv("VMTEST_IN_VM") != "1" {
		t.Fatalf("LVM tests run in the test VM (go test -run TestInVM ./lvm; %s=1, or VMTEST_IN_VM=1 in a VM made by hand)", vmtest.EnvInVM)
	}
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "lvm", "losetup", "blkdiscard")
}

var vgSeq atomic.Int64

// reusable holds the volume groups of the default shape (suiteVGSize,
// no extra arguments) that a finished test emptied: making a volume group
// and its thin pool costs several seconds in the VM, emptying one a
// single lvm process.
var reusable struct {
	sync.Mutex
	vgs []string
}

// suiteVGSize is the thin pool size of the reusable volume groups.
const suiteVGSize = 256 << 20

// newVG returns a volume group of its own, on a sparse loop device, with
// a thin pool "pool" of poolSize bytes (extra: more lvcreate arguments)
// and 1 MiB extents (LV sizes round up to the extent size, 4 MiB by
// default, and the conformance suite resizes by 1 MiB);
// at cleanup the volume group is removed, or, for the default shape,
// emptied and kept for the next test. Each conformance case gets one:
// vids name their volume group, and the cases use the same VM names.
func newVG(t testing.TB, poolSize int64, extra ...string) (vg, thin string) {
	t.Helper()
	requireVM(t)
	shared := poolSize == suiteVGSize && len(extra) == 0
	if shared {
		reusable.Lock()
		if n := len(reusable.vgs); n > 0 {
			vg = reusable.vgs[n-1]
			reusable.vgs = reusable.vgs[:n-1]
		}
		reusable.Unlock()
		if vg != "" {
			t.Cleanup(func() { release(t, vg) })
			return vg, "pool"
		}
	}
	vg = fmt.Sprintf("vmp%d", vgSeq.Add(1))
	dir, err := os.MkdirTemp("", "vmpool-vg-")
	require.NoError(t, err)
	img := filepath.Join(dir, vg+".img")
	require.NoError(t, os.WriteFile(img, nil, 0o600))
	require.NoError(t, os.Truncate(img, poolSize+64<<20))
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	require.NoError(t, err, "losetup: %s", out)
	dev := strings.TrimSpace(string(out))
	create := append([]string{"lvcreate", "--type", "thin-pool", "--size", fmt.Sprintf("%dB", poolSize), "--name", "pool"}, extra...)
	create = append(create, vg)
	out2, err := lvm.ExecRunner{}.LVM(context.Background(), [][]string{{"vgcreate", "--physicalextentsize", "1M", vg, dev}, create})
	require.NoError(t, err, "vgcreate, lvcreate: %s", out2.Stderr)
	if _, ok := lvs(t, vg)["pool"]; !ok {
		require.Fail(t, "no thin pool", "vgcreate: %s; lvcreate: %s", out2.Stderr[0], out2.Stderr[1])
	}
	if shared {
		destroyAtExit.Lock()
		destroyAtExit.fns = append(destroyAtExit.fns, func() error { return destroyVG(vg, dev, dir) })
		destroyAtExit.Unlock()
		t.Cleanup(func() { release(t, vg) })
	} else {
		t.Cleanup(func() {
			if err := destroyVG(vg, dev, dir); err != nil {
				t.Error(err)
			}
		})
	}
	return vg, "pool"
}

// destroyAtExit holds the removal of the reusable volume groups, run by
// TestMain.
var destroyAtExit struct {
	sync.Mutex
	fns []func() error
}

func destroyVG(vg, dev, dir string) error {
	var errs []error
	if out, err := exec.Command("lvm", "vgremove", "--force", "--force", vg).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("vgremove %s: %v: %s", vg, err, out))
	}
	if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("losetup -d %s: %v: %s", dev, err, out))
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// release removes every LV of vg but its thin pool and keeps vg for the
// next test.
func release(t testing.TB, vg string) {
	out, err := exec.Command("lvm", "lvremove", "--yes", "--force", "--select", "lv_name=~^vm-", vg).CombinedOutput()
	if err != nil {
		t.Errorf("empty %s: %v: %s", vg, err, out)
		return
	}
	reusable.Lock()
	reusable.vgs = append(reusable.vgs, vg)
	reusable.Unlock()
}

func TestMain(m *testing.M) {
	code := m.Run()
	destroyAtExit.Lock()
	for _, fn := range destroyAtExit.fns {
		if err := fn(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	destroyAtExit.Unlock()
	os.Exit(code)
}

// lvmRun runs lvm commands in one process and fails on an error.
func lvmRun(t testing.TB, cmds ...[]string) string {
	t.Helper()
	var out []byte
	for _, c := range cmds {
		o, err := exec.Command("lvm", c...).CombinedOutput()
		require.NoError(t, err, "lvm %v: %s", c, o)
		out = append(out, o...)
	}
	return string(out)
}

// openPool opens an lvm_thin pool on vg/thin.
func openPool(t testing.TB, vg, thin string, params map[string]string) storage.Pool {
	t.Helper()
	ps := map[string]string{"volume_group": vg, "thin_pool": thin}
	for k, v := range params {
		ps[k] = v
	}
	p, err := pool.Open(context.Background(), lvm.DriverName, storage.PoolConfig{Name: "lvm-" + vg, Params: ps})
	require.NoError(t, err)
	return p
}

// lvs returns the report of vg as LV name → field → value.
func lvs(t testing.TB, vg string) map[string]map[string]string {
	t.Helper()
	out, err := exec.Command("lvm", "lvs", "--nameprefixes", "--noheadings", "--units", "b", "--nosuffix",
		"-o", "lv_name,lv_size,lv_attr,origin,lv_uuid,pool_lv", vg).CombinedOutput()
	require.NoError(t, err, "lvs: %s", out)
	res := make(map[string]map[string]string)
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := make(map[string]string)
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			f[strings.TrimPrefix(k, "LVM2_")] = strings.Trim(v, "'")
		}
		res[f["LV_NAME"]] = f
	}
	return res
}
