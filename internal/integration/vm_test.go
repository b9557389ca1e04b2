//go:build !vmtest

package integration

import (
	"testing"

	"github.com/vmpool/vmpool/internal/vmtest"
)

// TestInVM runs the tests of vm_vmtest_test.go in the test VM: a file
// pool on real dm-snapshot devices migrated to file-reflink, and
// ephemeral volumes behind real dm-crypt mappings.
func TestInVM(t *testing.T) {
	vmtest.RunTests(t, vmtest.Options{Setup: vmtest.SetupNone, Modules: []string{"dm-crypt", "xts", "ecb"}})
}
