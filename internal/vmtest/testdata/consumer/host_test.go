package consumer

import (
	"testing"

	"github.com/vmpool/vmpool/internal/vmtest"
)

// TestHostOnly is untagged: it is compiled into the in-VM binary too, but
// RunTests must not run it there.
func TestHostOnly(t *testing.T) {
	if vmtest.InVM() {
		t.Fatal("an untagged test ran in the VM")
	}
}
