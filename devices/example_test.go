package devices_test

import (
	"context"
	"fmt"

	"github.com/vmpool/vmpool/devices"
)

type domain struct {
	name    string
	running bool
}

func (d *domain) Name() string { return d.name }
func (d *domain) Halted() bool { return !d.running }

type domainList map[string]*domain

func (l domainList) Domain(name string) (devices.Domain, bool) {
	d, ok := l[name]
	return d, ok
}

// micBus is a one-device bus: dom0 exposes a microphone.
type micBus struct{ attachedTo string }

func (b *micBus) Class() string { return "mic" }

func (b *micBus) mic() devices.Device {
	ifc, _ := devices.NewInterface("mic", "")
	return devices.NewDevice(devices.Port{Backend: "dom0", ID: "mic", Class: "mic"}, "builtin",
		func() devices.Properties {
			return devices.Properties{Name: "Internal Microphone", Interfaces: []devices.Interface{ifc}, Attachment: b.attachedTo}
		})
}

func (b *micBus) Exposed(backend string) []devices.Device {
	if backend != "dom0" {
		return nil
	}
	return []devices.Device{b.mic()}
}

func (b *micBus) Device(backend, port string) (devices.Device, bool) {
	return b.mic(), backend == "dom0" && port == "mic"
}

func (b *micBus) Attached(frontend string) []devices.Attached {
	if b.attachedTo != frontend {
		return nil
	}
	return []devices.Attached{{Device: b.mic()}}
}

func (b *micBus) Attach(_ context.Context, frontend string, _ devices.Device, _ map[string]string) error {
	b.attachedTo = frontend
	return nil
}

func (b *micBus) Detach(context.Context, string, devices.Port) error {
	b.attachedTo = ""
	return nil
}

// A device is attached live to a running VM, and assigned persistently to
// a halted one; a device without a backend domain is refused.
func Example() {
	ctx := context.Background()
	m := devices.NewManager(domainList{
		"dom0": {name: "dom0", running: true},
		"work": {name: "work", running: true},
		"tmp":  {name: "tmp"},
	}, devices.Options{})
	if err := m.AddBus(&micBus{}); err != nil {
		panic(err)
	}
	m.On(devices.EventAttach, "*", func(_ context.Context, e devices.Event) error {
		fmt.Println("attached", e.Device.Port, "to", e.Frontend)
		return nil
	})

	mic, _ := m.Device("dom0", "mic", "mic")
	fmt.Println(mic.Description())

	a := devices.Assignment{Device: mic.Virtual()}
	fmt.Println(m.Attach(ctx, "work", a))
	fmt.Println("attachment:", mic.Attachment())

	a.Mode = devices.Required
	fmt.Println(m.Assign(ctx, "tmp", a))

	orphan := devices.Assignment{Device: devices.VirtualDevice{Port: devices.Port{ID: "mic", Class: "mic"}}}
	fmt.Println(m.Attach(ctx, "work", orphan))
	// Output:
	// Microphone: unknown vendor Internal Microphone
	// attached dom0:mic to work
	// <nil>
	// attachment: work
	// <nil>
	// attach :mic:* to work: device has no backend domain: :mic
}

// Devices and assignments travel through the Admin API as key='value'
// pairs; parsing them is safe on untrusted input.
func ExampleParseAssignment() {
	dev := devices.VirtualDevice{Port: devices.Port{Backend: "sys-usb", ID: "2-1", Class: "usb"}}
	a := devices.Assignment{Device: dev, Mode: devices.Auto, Options: map[string]string{"note": "it's mine"}}
	b, _ := a.Serialize()
	fmt.Println(string(b))

	back, err := devices.ParseAssignment(b, dev)
	fmt.Println(back.Mode, back.Options["note"], err)

	_, err = devices.ParseAssignment([]byte("backend_domain='dom0' mode='required'"), dev)
	fmt.Println(err)
	// Output:
	// device_id='*' port_id='2-1' devclass='usb' backend_domain='sys-usb' mode='auto-attach' _note='it\'s mine'
	// auto-attach it's mine <nil>
	// device protocol error: unexpected device property: backend "dom0", expected "sys-usb"
}
