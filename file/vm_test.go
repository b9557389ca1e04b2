//go:build !vmtest

package file

import (
	"os"
	"testing"

	"github.com/vmpool/vmpool/internal/vmtest"
)

// EnvVMFull, set to 1, runs the whole conformance suite on the real
// device-mapper layer in the VM (TestDMSuite: 122 cases, about half an
// hour under QEMU's TCG), not only its qubes and set groups.
const EnvVMFull = "VMPOOL_FILE_VM_FULL"

// TestInVM runs the tests of the files tagged vmtest (dm_vmtest_test.go)
// in the test VM, which has dm-snapshot: the real block layer's own
// tests, and of the conformance suite on it the groups that follow
// Qubes' storage integration tests (qubes: volatile zeroed, origin
// persists, read-only, snapshots after restart, ...) and storage.Set's
// start and stop (set). Every other suite case runs on the host with the
// emulated layer; EnvVMFull runs them all in the VM too.
func TestInVM(t *testing.T) {
	var args []string
	if os.Getenv(EnvVMFull) != "1" {
		args = append(args, "-test.run=^(TestDMOrigin|TestDMSnapshotOfRunningOrigin|TestDMResizeRunning|TestDMSuite)$/^(qubes|set)$")
	}
	vmtest.RunTests(t, vmtest.Options{Setup: vmtest.SetupNone}, args...)
}
