//go:build vmtest

package vmtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tests in this file run inside the VM (TestInVM in vmtest_test.go).

func mustInVM(t *testing.T) {
	t.Helper()
	if !InVM() {
		t.Fatalf("this test runs only inside the vmtest VM (%s=1); run it with go test -run TestInVM", EnvInVM)
	}
}

func output(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "%s %s: %s", name, strings.Join(args, " "), stderr.String())
	return string(out)
}

func TestVMEnvironment(t *testing.T) {
	mustInVM(t)
	assert.Equal(t, "/tmp", os.Getenv("TMPDIR"))
	assert.Equal(t, "C.UTF-8", os.Getenv("LANG"))
	assert.Equal(t, DefaultVG, os.Getenv("VMTEST_VG"))
	assert.Equal(t, DefaultThinPool, os.Getenv("VMTEST_THINPOOL"))
	st, err := os.Stat(os.Getenv("VMTEST_DISK"))
	require.NoError(t, err)
	assert.NotZero(t, st.Mode()&os.ModeDevice, "VMTEST_DISK %s is no block device", os.Getenv("VMTEST_DISK"))
	// The host's root is read-only, /tmp is writable.
	err = os.WriteFile("/vmtest-probe", nil, 0o644)
	assert.True(t, errors.Is(err, syscall.EROFS), "writing / gave %v, want EROFS", err)
	require.NoError(t, os.WriteFile(filepath.Join(t.TempDir(), "probe"), []byte("x"), 0o644))
	// /etc/lvm is the guest's copy with our settings.
	conf, err := os.ReadFile("/etc/lvm/lvm.conf")
	require.NoError(t, err)
	assert.Contains(t, string(conf), "use_lvmpolld = 0")
}

func TestDMTargets(t *testing.T) {
	mustInVM(t)
	targets := map[string]bool{}
	for _, line := range strings.Split(output(t, "dmsetup", "targets"), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			targets[f[0]] = true
		}
	}
	for _, want := range []string{"thin-pool", "thin", "snapshot", "snapshot-origin", "zero"} {
		assert.True(t, targets[want], "dmsetup targets lacks %s: %v", want, targets)
	}
}

func TestThinPool(t *testing.T) {
	mustInVM(t)
	out := output(t, "lvs", "--reportformat", "json", "--units", "b", "--nosuffix",
		"-o", "vg_name,lv_name,lv_attr,lv_size", os.Getenv("VMTEST_VG"))
	var report struct {
		Report []struct {
			LV []struct {
				VG   string `json:"vg_name"`
				Name string `json:"lv_name"`
				Attr string `json:"lv_attr"`
				Size string `json:"lv_size"`
			} `json:"lv"`
		} `json:"report"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &report), out)
	require.Len(t, report.Report, 1, out)
	found := false
	for _, lv := range report.Report[0].LV {
		if lv.VG == os.Getenv("VMTEST_VG") && lv.Name == os.Getenv("VMTEST_THINPOOL") {
			found = true
			assert.True(t, strings.HasPrefix(lv.Attr, "t"), "lv_attr %q of the pool", lv.Attr)
			assert.Equal(t, "4294967296", lv.Size)
		}
	}
	assert.True(t, found, "no thin pool in %s", out)
}

func TestLoopDevice(t *testing.T) {
	mustInVM(t)
	img := filepath.Join(t.TempDir(), "loop.img")
	require.True(t, strings.HasPrefix(img, "/tmp/"), img)
	require.NoError(t, os.WriteFile(img, make([]byte, 16<<20), 0o644))
	dev := strings.TrimSpace(output(t, "losetup", "--find", "--show", img))
	t.Cleanup(func() { output(t, "losetup", "-d", dev) })
	backing, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop/backing_file"))
	require.NoError(t, err)
	assert.Equal(t, img, strings.TrimSpace(string(backing)))
}

// TestChildExit checks that a child's exit status and output come back
// to its parent exactly in the guest.
func TestChildExit(t *testing.T) {
	mustInVM(t)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("sh", "-c", `printf 'out\n\001\377'; printf 'err\n' >&2; exit 3`)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, 3, exit.ExitCode())
	assert.Equal(t, "out\n\x01\xff", stdout.String())
	assert.Equal(t, "err\n", stderr.String())
}
