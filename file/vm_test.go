//go:build !vmtest

package file

import (
	"testing"

	"github.com/vmpool/vmpool/internal/vmtest"
)

// TestInVM runs the tests of the files tagged vmtest (dm_vmtest_test.go:
// the real device-mapper block layer, and the conformance suite on it) in
// the test VM, which has dm-snapshot.
func TestInVM(t *testing.T) {
	vmtest.RunTests(t, vmtest.Options{Setup: vmtest.SetupNone})
}
