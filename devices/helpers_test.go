package devices

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// testDomain and testDomains are the caller's side of the tests.
type testDomain struct {
	name    string
	running bool
}

func (d *testDomain) Name() string { return d.name }
func (d *testDomain) Halted() bool { return !d.running }

type testDomains map[string]*testDomain

func (ds testDomains) Domain(name string) (Domain, bool) {
	d, ok := ds[name]
	if !ok {
		return nil, false
	}
	return d, true
}

// testBus is an in-memory bus: backends expose devices, and it keeps a
// table of attachments (port -> frontend and options).
type testBus struct {
	class string

	mu       sync.Mutex
	exposed  map[string][]Device
	attached map[Port]Attached
	frontend map[Port]string
	extra    map[string][]Attached // attached devices reported as-is (hostile bus)
}

func newTestBus(class string) *testBus {
	return &testBus{class: class, exposed: map[string][]Device{}, attached: map[Port]Attached{},
		frontend: map[Port]string{}, extra: map[string][]Attached{}}
}

func (b *testBus) Class() string { return b.class }

// expose adds a device to backend, its attachment computed from the
// bus's table on each access (a dynamic property).
func (b *testBus) expose(backend, port, id string) Device {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := Port{Backend: backend, ID: port, Class: b.class}
	d := NewDevice(p, id, func() Properties {
		b.mu.Lock()
		defer b.mu.Unlock()
		return Properties{Product: "Qubes", Vendor: "ITL", Attachment: b.frontend[p]}
	})
	b.exposed[backend] = append(b.exposed[backend], d)
	return d
}

func (b *testBus) Exposed(backend string) []Device {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Device(nil), b.exposed[backend]...)
}

func (b *testBus) Device(backend, portID string) (Device, bool) {
	for _, d := range b.Exposed(backend) {
		if d.Port().ID == portID {
			return d, true
		}
	}
	return Device{}, false
}

func (b *testBus) Attached(frontend string) []Attached {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []Attached
	for p, at := range b.attached {
		if b.frontend[p] == frontend {
			out = append(out, at)
		}
	}
	return append(out, b.extra[frontend]...)
}

func (b *testBus) Attach(_ context.Context, frontend string, dev Device, opts map[string]string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.attached[dev.Port()] = Attached{Device: dev, Options: opts}
	b.frontend[dev.Port()] = frontend
	return nil
}

func (b *testBus) Detach(_ context.Context, frontend string, port Port) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.attached, port)
	delete(b.frontend, port)
	return nil
}

// events records the events a Manager fires.
type events struct {
	mu   sync.Mutex
	list []Event
}

func record(m *Manager) *events {
	ev := &events{}
	for _, k := range []EventKind{EventPreAttach, EventAttach, EventPreDetach, EventDetach,
		EventPreAssign, EventAssign, EventUnassign, EventAssignmentChanged} {
		m.On(k, "*", func(_ context.Context, e Event) error {
			ev.mu.Lock()
			defer ev.mu.Unlock()
			ev.list = append(ev.list, e)
			return nil
		})
	}
	return ev
}

func (ev *events) fired(k EventKind) bool {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	for _, e := range ev.list {
		if e.Kind == k {
			return true
		}
	}
	return false
}

// fixture is Qubes' TC_00_DeviceCollection setup: domain "vm", halted,
// exposing testclass device testport with id testdev, and an assignment
// of it in required mode.
type fixture struct {
	vm     *testDomain
	bus    *testBus
	m      *Manager
	ev     *events
	dev    Device
	assign Assignment
	ctx    context.Context
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{vm: &testDomain{name: "vm"}, bus: newTestBus("testclass"), ctx: context.Background()}
	f.m = NewManager(testDomains{"vm": f.vm}, Options{})
	require.NoError(t, f.m.AddBus(f.bus))
	f.ev = record(f.m)
	f.dev = f.bus.expose("vm", "testport", "testdev")
	f.assign = Assignment{Device: f.dev.Virtual(), Mode: Required}
	return f
}

// attach marks the device attached to vm in the bus, behind the
// Manager's back, as Qubes' test does.
func (f *fixture) attach(t *testing.T) {
	t.Helper()
	f.vm.running = true
	require.NoError(t, f.bus.Attach(f.ctx, "vm", f.dev, map[string]string{}))
}

func (f *fixture) with(mode Mode) Assignment {
	a := f.assign
	a.Mode = mode
	return a
}

// devicesOf returns the VirtualDevices of assignments.
func devicesOf(as []Assignment) []VirtualDevice {
	out := []VirtualDevice{}
	for _, a := range as {
		out = append(out, a.Device)
	}
	return out
}
