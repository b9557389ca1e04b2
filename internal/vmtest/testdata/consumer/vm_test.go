//go:build vmtest

package consumer

import (
	"os"
	"testing"

	"github.com/vmpool/vmpool/internal/vmtest"
)

func TestAnswerInVM(t *testing.T) {
	if !vmtest.InVM() {
		t.Fatal("runs only in the VM")
	}
	if Answer != 42 {
		t.Fatal(Answer)
	}
	if os.Getenv("VMTEST_VG") != "" {
		t.Fatalf("SetupNone, yet VMTEST_VG=%s", os.Getenv("VMTEST_VG"))
	}
	if os.Getenv("CONSUMER") != "yes" {
		t.Fatalf("CONSUMER=%q", os.Getenv("CONSUMER"))
	}
	wd, _ := os.Getwd()
	t.Logf("consumer in-VM test ran in %s", wd)
}
