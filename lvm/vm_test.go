//go:build !vmtest

package lvm_test

import (
	"os"
	"testing"

	"github.com/vmpool/vmpool/internal/vmtest"
)

// envVMFull, set to 1, runs the whole conformance suite on real LVM in
// the VM (TestSuiteLVM: 131 cases, about 45 minutes under QEMU's TCG),
// not only its qubes and set groups.
const envVMFull = "VMPOOL_LVM_VM_FULL"

// TestInVM runs the tests of the files tagged vmtest in the test VM, on
// real LVM thin pools that they make on loop devices: naming, old
// layouts, activation, imports from another pool, exhaustion, ephemeral
// encryption, and of the conformance suite the groups that follow Qubes'
// storage integration tests (qubes) and storage.Set's start and stop
// (set); every case of the suite runs on the host against the fake lvm
// only where it needs no LVM, so envVMFull runs them all in the VM.
func TestInVM(t *testing.T) {
	var args []string
	if os.Getenv(envVMFull) != "1" {
		args = append(args, "-test.run=^(TestVMNaming|TestVMOldLayouts|TestVMActivation|TestVMImportOtherPool|TestVMExhaustion|TestVMEphemeralEncrypted|TestSuiteLVM)$/^(qubes|set)$")
	}
	vmtest.RunTests(t, vmtest.Options{Setup: vmtest.SetupNone, Modules: []string{"dm-crypt", "xts", "ecb"}}, args...)
}
