// Command featuresdemo wires the features and devices packages to a toy
// list of domains, the way an admin daemon embeds them: it processes the
// feature requests the VMs' tools send, shows how a VM based on an old
// R3.x template would start, and attaches devices, one from a toy USB bus
// and, if this host has any, a loop device from the block bus.
//
//	go run ./examples/featuresdemo            # reads /sys for loop devices
//	go run ./examples/featuresdemo -sysfs ''  # toy USB bus only
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/vmpool/vmpool/devices"
	"github.com/vmpool/vmpool/devices/block"
	"github.com/vmpool/vmpool/features"
)

func main() {
	sysfs := flag.String("sysfs", "/sys", "sysfs to read loop devices from; empty to skip the block bus")
	flag.Parse()
	if err := run(os.Stdout, *sysfs); err != nil {
		fmt.Fprintln(os.Stderr, "featuresdemo:", err)
		os.Exit(1)
	}
}

// vm is the daemon's own VM type: it implements features.Guest and
// devices.Domain.
type vm struct {
	name        string
	features    *features.Features
	template    *vm
	isTemplate  bool
	running     bool
	maxmem      int
	timeout     int
	defaultUser string
}

func (v *vm) Name() string                     { return v.name }
func (v *vm) Halted() bool                     { return !v.running }
func (v *vm) Features() *features.Features     { return v.features }
func (v *vm) NetVM() features.VM               { return nil }
func (v *vm) IsTemplate() bool                 { return v.isTemplate }
func (v *vm) SetMaxMem(mib int) error          { v.maxmem = mib; return nil }
func (v *vm) SetQrexecTimeout(s int) error     { v.timeout = s; return nil }
func (v *vm) DefaultUser() (string, bool)      { return v.defaultUser, v.defaultUser != "" }
func (v *vm) SetDefaultUser(user string) error { v.defaultUser = user; return nil }

func (v *vm) Template() features.VM {
	if v.template == nil {
		return nil
	}
	return v.template
}

// domains is the toy domain list.
type domains map[string]*vm

func (d domains) Domain(name string) (devices.Domain, bool) {
	v, ok := d[name]
	return v, ok
}

func (d domains) add(hooks *features.Hooks, v *vm) *vm {
	v.features = features.New(v.name, hooks)
	d[v.name] = v
	return v
}

func run(w io.Writer, sysfs string) error {
	ctx := context.Background()
	hooks := &features.Hooks{}
	hooks.On(features.KindPreSet, "service.*", features.CheckServiceName)
	hooks.On(features.KindSet, "*", func(e features.Event) error {
		fmt.Fprintf(w, "  event %s: %s=%q\n", e.VM, e.Feature, e.Value)
		return nil
	})

	doms := domains{}
	doms.add(hooks, &vm{name: "dom0", running: true})
	doms.add(hooks, &vm{name: "sys-usb", running: true})
	debian := doms.add(hooks, &vm{name: "debian-12", isTemplate: true, running: true})
	work := doms.add(hooks, &vm{name: "work", template: debian, running: true})
	win := doms.add(hooks, &vm{name: "win10", running: true, maxmem: 4000, timeout: 60})
	old := doms.add(hooks, &vm{name: "fedora-23", isTemplate: true})
	legacy := doms.add(hooks, &vm{name: "legacy", template: old})

	fmt.Fprintln(w, "== feature requests")
	fmt.Fprintln(w, "debian-12 reports its tools (qubes.FeaturesRequest):")
	res, err := features.HandleFeaturesRequest(debian, map[string][]byte{
		"qrexec": []byte("1"), "gui": []byte("1"), "default-user": []byte("user"),
		"os-distribution": []byte("debian"), "os-version": []byte("12"),
		"supported-service.shutdown-idle": []byte("1"), "version": []byte("4"),
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  post-install: %v, default_user: %s\n", res.PostInstall, debian.defaultUser)

	fmt.Fprintln(w, "work (based on debian-12) asks for gui=0: ignored, template-based")
	if _, err := features.HandleFeaturesRequest(work, map[string][]byte{"gui": []byte("0")}); err != nil {
		return err
	}
	gui, _ := features.CheckWithTemplate(work, "gui")
	fmt.Fprintf(w, "  work gui (through its template): %q\n", gui)

	fmt.Fprintln(w, "win10 reports Windows tools (qubes.NotifyTools):")
	if _, err := features.HandleNotifyTools(win, map[string][]byte{
		"qrexec": []byte("1"), "gui": []byte("1"), "os": []byte("Windows"), "default-user": []byte("Admin"),
	}); err != nil {
		return err
	}
	fmt.Fprintf(w, "  maxmem=%d qrexec_timeout=%d default_user=%s\n", win.maxmem, win.timeout, win.defaultUser)

	fmt.Fprintln(w, "a hostile request is refused whole:")
	_, err = features.HandleFeaturesRequest(debian, map[string][]byte{"gui": []byte("0"), "os-version": []byte("1;reboot")})
	fmt.Fprintf(w, "  %v\n", err)

	fmt.Fprintln(w, "starting legacy (based on an R3.x template that never advertised qrexec):")
	fmt.Fprintf(w, "  qrexec-daemon env: %v\n", features.QrexecEnv(legacy, 60))
	entries := features.R3Entries(legacy, features.R3Info{BaseTemplate: "fedora-23"})
	fmt.Fprintf(w, "  R3 QubesDB entries: %s\n", formatMap(entries))
	fmt.Fprintf(w, "  work waits for qrexec: %v\n", features.QrexecWait(work))

	fmt.Fprintln(w, "== devices")
	m := devices.NewManager(doms, devices.Options{})
	if err := m.AddBus(newUSBBus()); err != nil {
		return err
	}
	m.On(devices.EventAttach, "*", func(_ context.Context, e devices.Event) error {
		fmt.Fprintf(w, "  event: %s device %s attached to %s %s\n", e.Class, e.Device.Port, e.Frontend, formatMap(e.Options))
		return nil
	})
	usb, err := m.Exposed("sys-usb", "usb")
	if err != nil {
		return err
	}
	for _, d := range usb {
		fmt.Fprintf(w, "sys-usb exposes %s: %s\n", d.Port(), d.Description())
		if err := m.Attach(ctx, "work", devices.Assignment{Device: d.Virtual()}); err != nil {
			return err
		}
		fmt.Fprintf(w, "  %s is now attached to %s\n", d.Port(), d.Attachment())
	}
	orphan := devices.Assignment{Device: devices.VirtualDevice{Port: devices.Port{ID: "2-1", Class: "usb"}}}
	fmt.Fprintf(w, "a device without a backend: %v\n", m.Attach(ctx, "work", orphan))

	if sysfs == "" {
		return nil
	}
	if err := m.AddBus(block.New(block.Options{SysFS: sysfs})); err != nil {
		return err
	}
	loops, err := m.Exposed("dom0", block.Class)
	if err != nil {
		return err
	}
	if len(loops) == 0 {
		fmt.Fprintln(w, "no loop devices on this host (losetup --find --show FILE makes one)")
		return nil
	}
	d := loops[0]
	fmt.Fprintf(w, "dom0 exposes %s: %s (%s bytes, mode %s)\n", d.Port(), d.Description(), d.Data()["size"], d.Data()["mode"])
	a := devices.Assignment{Device: d.Virtual(), Options: map[string]string{"read-only": "yes"}}
	if err := m.Attach(ctx, "work", a); err != nil {
		return err
	}
	return m.Detach(ctx, "work", d.Port())
}

func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// usbBus is a toy bus: sys-usb exposes one security key.
type usbBus struct{ attachedTo map[string]string }

func newUSBBus() *usbBus { return &usbBus{attachedTo: map[string]string{}} }

func (b *usbBus) Class() string { return "usb" }

func (b *usbBus) key() devices.Device {
	port := devices.Port{Backend: "sys-usb", ID: "2-1", Class: "usb"}
	ifc, _ := devices.NewInterface("usb", "030000")
	return devices.NewDevice(port, "1050:0407::u030000", func() devices.Properties {
		return devices.Properties{Vendor: "Yubico", Product: "YubiKey OTP+FIDO+CCID",
			Interfaces: []devices.Interface{ifc}, Attachment: b.attachedTo[port.ID]}
	})
}

func (b *usbBus) Exposed(backend string) []devices.Device {
	if backend != "sys-usb" {
		return nil
	}
	return []devices.Device{b.key()}
}

func (b *usbBus) Device(backend, port string) (devices.Device, bool) {
	return b.key(), backend == "sys-usb" && port == "2-1"
}

func (b *usbBus) Attached(frontend string) []devices.Attached {
	if b.attachedTo["2-1"] != frontend {
		return nil
	}
	return []devices.Attached{{Device: b.key()}}
}

func (b *usbBus) Attach(_ context.Context, frontend string, dev devices.Device, _ map[string]string) error {
	b.attachedTo[dev.Port().ID] = frontend
	return nil
}

func (b *usbBus) Detach(_ context.Context, _ string, port devices.Port) error {
	delete(b.attachedTo, port.ID)
	return nil
}
