//go:build !vmtest

package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestInVM runs this package's in-VM tests (vm_test.go) in a VM with a
// thin pool.
func TestInVM(t *testing.T) {
	RunTests(t, Options{})
}

// TestRunPackageTests runs the in-VM tests of another package, the
// fixture testdata/consumer: its tagged test runs in the VM, in the
// package's directory, with the caller's environment; its untagged test,
// which fails in the VM, is not run there.
func TestRunPackageTests(t *testing.T) {
	RunPackageTests(t, Options{Setup: SetupNone, Env: []string{"CONSUMER=yes"}}, "./testdata/consumer")
}

// slowWriter is a reader of the command's output that lags behind.
type slowWriter struct{ bytes.Buffer }

func (w *slowWriter) Write(p []byte) (int, error) {
	time.Sleep(20 * time.Millisecond)
	return w.Buffer.Write(p)
}

// TestRunResult checks what Run hands back: the exit status, stdout and
// stderr byte for byte (3 MB of it, read slower than the guest writes, so
// that QEMU holds the end when the command exits), the environment, the
// working directory, and that SetupNone leaves VMTEST_VG unset.
func TestRunResult(t *testing.T) {
	RequireVM(t, SetupNone)
	var stdout slowWriter
	var stderr bytes.Buffer
	res, err := Run(t.Context(), Options{
		Setup:  SetupNone,
		Env:    []string{"FOO=bar  baz'q", "LANG=C"},
		Dir:    "/usr/share",
		Stdout: &stdout,
		Stderr: &stderr,
	}, "sh", "-c", `printf '%s|%s|%s|%s|%s|%s\n' "$VMPOOL_IN_VM" "${VMTEST_VG-unset}" "$FOO" "$PWD" "$LANG" "$VMTEST_DISK"
seq 1 450000
printf 'to stderr\n' >&2
exit 3`)
	require.NoError(t, err)
	var want strings.Builder
	want.WriteString("1|unset|bar  baz'q|/usr/share|C|/dev/vda\n")
	for i := 1; i <= 450000; i++ {
		fmt.Fprintf(&want, "%d\n", i)
	}
	assert.Equal(t, 3, res.ExitCode)
	if got := stdout.String(); got != want.String() {
		i := 0
		for i < len(got) && i < want.Len() && got[i] == want.String()[i] {
			i++
		}
		t.Errorf("stdout: %d bytes, want %d; they differ from byte %d: got %q, want %q",
			len(got), want.Len(), i, got[i:min(i+40, len(got))], want.String()[i:min(i+40, want.Len())])
	}
	assert.Equal(t, "to stderr\n", stderr.String())
	assert.NotEmpty(t, res.Kernel)
	assert.Greater(t, res.Boot, time.Duration(0))
	t.Logf("kernel %s: boot %v, command %v, wall %v", res.Kernel, res.Boot, res.Command, res.Wall)
}

// TestRunOptions checks Options.Modules (dm-crypt with the xts and ecb
// templates it asks the crypto API for, and ext4: an aes-xts-plain64
// device works and holds an ext4 filesystem)
// and Options.RW (a file written there in the VM is on the host), and
// that a write to /tmp stays in the VM. The run directory and the shared
// one have a comma in their paths (QEMU's option syntax).
func TestRunOptions(t *testing.T) {
	RequireVM(t, SetupNone)
	base := t.TempDir()
	rw := filepath.Join(base, "rw, 1")
	tmp := filepath.Join(base, "tmp,2")
	require.NoError(t, os.Mkdir(rw, 0o755))
	require.NoError(t, os.Mkdir(tmp, 0o755))
	probe := filepath.Join(os.TempDir(), fmt.Sprintf("vmtest-probe-%d", time.Now().UnixNano()))
	var stdout, stderr bytes.Buffer
	t.Setenv("TMPDIR", tmp) // where Run makes its run directory
	res, err := Run(t.Context(), Options{
		Setup:   SetupNone,
		Modules: []string{"dm-crypt", "xts", "ecb", "ext4"},
		RW:      []string{rw},
		Stdout:  &stdout,
		Stderr:  &stderr,
	}, "sh", "-euc", `echo in-vm >"$1/written"
: >"$2"
truncate -s 8M /tmp/crypt.img
dev=$(losetup --find --show /tmp/crypt.img)
dmsetup create vmtestcrypt --table "0 16384 crypt aes-xts-plain64 $(printf '%064d' 0) 0 $dev 0"
dmsetup table vmtestcrypt | cut -d' ' -f3,4
mkfs.ext4 -q /dev/mapper/vmtestcrypt
mkdir /tmp/mnt
mount /dev/mapper/vmtestcrypt /tmp/mnt
findmnt -n -o FSTYPE /tmp/mnt
umount /tmp/mnt
dmsetup remove vmtestcrypt
losetup -d "$dev"`, "sh", rw, probe)
	require.NoError(t, err)
	require.Equal(t, 0, res.ExitCode, "stderr: %s", stderr.String())
	assert.Equal(t, "crypt aes-xts-plain64\next4\n", stdout.String())
	left, err := os.ReadDir(tmp)
	require.NoError(t, err)
	assert.Empty(t, left, "the run directory is removed")
	data, err := os.ReadFile(filepath.Join(rw, "written"))
	require.NoError(t, err)
	assert.Equal(t, "in-vm\n", string(data))
	assert.NoFileExists(t, probe, "a write to /tmp in the VM reached the host")
}

// TestRunSetupFailure checks that a failure in the VM before the command
// is ErrVM, not an exit status, and says what failed.
func TestRunSetupFailure(t *testing.T) {
	RequireVM(t, SetupNone)
	res, err := Run(t.Context(), Options{Setup: SetupNone, Dir: "/nonexistent/vmtest"}, "true")
	var vmErr *VMError
	require.ErrorAs(t, err, &vmErr, "result %+v", res)
	assert.ErrorIs(t, err, ErrVM)
	assert.Contains(t, vmErr.SetupLog, "cd /nonexistent/vmtest")
	assert.Contains(t, err.Error(), "setup log")
}

// TestRunTimeout checks that Options.Timeout kills the VM and is
// ErrTimeout.
func TestRunTimeout(t *testing.T) {
	RequireVM(t, SetupNone)
	start := time.Now()
	_, err := Run(t.Context(), Options{Setup: SetupNone, Timeout: 3 * time.Second}, "sleep", "3600")
	assert.ErrorIs(t, err, ErrTimeout)
	assert.Less(t, time.Since(start), time.Minute)
}

// TestRunCancel checks that cancelling the context kills the VM and is
// the context's error, not a VM failure.
func TestRunCancel(t *testing.T) {
	RequireVM(t, SetupNone)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_, err := Run(ctx, Options{Setup: SetupNone}, "sleep", "3600")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.False(t, errors.Is(err, ErrTimeout) || errors.Is(err, ErrVM), "%v", err)
}

// TestRunBadOptions checks that bad options are refused before anything
// starts (no root, QEMU or kernel needed).
func TestRunBadOptions(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/file"
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	for _, tc := range []struct {
		name string
		opts Options
		argv []string
		want string
	}{
		{"no command", Options{}, nil, "no command"},
		{"empty command", Options{}, []string{""}, "no command"},
		{"= in command", Options{}, []string{"A=B"}, "contains '='"},
		{"setup", Options{Setup: 7}, []string{"true"}, "unknown Setup(7)"},
		{"vg name", Options{VG: "-vg"}, []string{"true"}, "not a valid LVM name"},
		{"pool name", Options{ThinPool: "a/b"}, []string{"true"}, "not a valid LVM name"},
		{"small disk", Options{DiskSize: 1 << 20}, []string{"true"}, "disk size"},
		{"pool too big", Options{DiskSize: 1 << 30, PoolSize: 1 << 30}, []string{"true"}, "does not fit"},
		{"memory", Options{Mem: 16}, []string{"true"}, "too little"},
		{"timeout", Options{Timeout: -time.Second}, []string{"true"}, "negative timeout"},
		{"env", Options{Env: []string{"NOVALUE"}}, []string{"true"}, "not NAME=VALUE"},
		{"env name", Options{Env: []string{"A-B=1"}}, []string{"true"}, "not NAME=VALUE"},
		{"module", Options{Modules: []string{"../x"}}, []string{"true"}, "not a kernel module name"},
		{"dir", Options{Dir: "relative"}, []string{"true"}, "not absolute"},
		{"rw relative", Options{RW: []string{"relative"}}, []string{"true"}, "not absolute"},
		{"rw missing", Options{RW: []string{dir + "/missing"}}, []string{"true"}, "no such file"},
		{"rw file", Options{RW: []string{file}}, []string{"true"}, "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvCache, dir+"/cache") // a run that went on would show here
			_, err := Run(t.Context(), tc.opts, tc.argv...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NoDirExists(t, dir+"/cache")
		})
	}
}

// TestInVMReported checks that InVM follows VMPOOL_IN_VM.
func TestInVMReported(t *testing.T) {
	t.Setenv(EnvInVM, "1")
	assert.True(t, InVM())
	t.Setenv(EnvInVM, "")
	assert.False(t, InVM())
}
