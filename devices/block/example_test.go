package block_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vmpool/vmpool/devices"
	"github.com/vmpool/vmpool/devices/block"
)

type vm struct{ name string }

func (v vm) Name() string { return v.name }
func (v vm) Halted() bool { return false }

type vms map[string]vm

func (l vms) Domain(name string) (devices.Domain, bool) { v, ok := l[name]; return v, ok }

// The bus lists the host's loop devices as block devices of dom0 and
// attaches them to running domains. Here sysfs is a small fake tree with
// one loop device; by default the bus reads /sys.
func Example() {
	sys, _ := os.MkdirTemp("", "sysfs")
	defer os.RemoveAll(sys)
	dir := filepath.Join(sys, "block", "loop3")
	_ = os.MkdirAll(filepath.Join(dir, "loop"), 0o755)
	_ = os.WriteFile(filepath.Join(dir, "loop", "backing_file"), []byte("/srv/images/debian.iso\n"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "size"), []byte("2048\n"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, "ro"), []byte("1\n"), 0o644)

	m := devices.NewManager(vms{"dom0": {"dom0"}, "work": {"work"}}, devices.Options{})
	_ = m.AddBus(block.New(block.Options{SysFS: sys}))

	list, _ := m.Exposed("dom0", block.Class)
	for _, d := range list {
		fmt.Println(d.Port(), d.Description(), d.Data()["size"], d.Data()["mode"])
	}
	port := devices.Port{Backend: "dom0", ID: "loop3", Class: block.Class}
	err := m.Attach(context.Background(), "work", devices.Assignment{Device: devices.VirtualDevice{Port: port}})
	attached, _ := m.Attached("work", block.Class)
	fmt.Println(err, attached[0].Options["read-only"], attached[0].Options["frontend-dev"])
	// Output:
	// dom0:loop3 Block_Storage: hosted by dom0 /srv/images/debian.iso 1048576 r
	// <nil> yes xvdi
}
