package devices

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDeviceCollection reproduces HEAD qubes/tests/devices.py
// TC_00_DeviceCollection.
func TestDeviceCollection(t *testing.T) {
	t.Run("000_init", func(t *testing.T) {
		f := newFixture(t)
		assert.Empty(t, f.m.Assigned("vm", "testclass", false))
	})
	t.Run("001_attach", func(t *testing.T) {
		f := newFixture(t)
		f.vm.running = true
		require.NoError(t, f.m.Attach(f.ctx, "vm", f.assign))
		assert.True(t, f.ev.fired(EventPreAttach))
		assert.True(t, f.ev.fired(EventAttach))
		assert.False(t, f.ev.fired(EventPreDetach))
		assert.False(t, f.ev.fired(EventDetach))
		at, err := f.m.Attached("vm", "testclass")
		require.NoError(t, err)
		assert.Equal(t, []VirtualDevice{f.dev.Virtual()}, devicesOf(at))
		assert.Equal(t, "vm", f.dev.Attachment(), "the device's attachment is computed by the bus on access")
	})
	t.Run("002_attach_to_halted", func(t *testing.T) {
		f := newFixture(t)
		assert.ErrorIs(t, f.m.Attach(f.ctx, "vm", f.assign), ErrNotRunning)
		assert.False(t, f.ev.fired(EventPreAttach))
	})
	t.Run("003_detach", func(t *testing.T) {
		f := newFixture(t)
		f.attach(t)
		require.NoError(t, f.m.Detach(f.ctx, "vm", f.assign.Device.Port))
		assert.True(t, f.ev.fired(EventPreDetach))
		assert.True(t, f.ev.fired(EventDetach))
		at, _ := f.m.Attached("vm", "testclass")
		assert.Empty(t, at)
	})
	t.Run("004_detach_from_halted", func(t *testing.T) {
		f := newFixture(t)
		assert.ErrorIs(t, f.m.Detach(f.ctx, "vm", f.assign.Device.Port), ErrNotAssigned)
	})
	t.Run("010_empty_detach", func(t *testing.T) {
		f := newFixture(t)
		f.vm.running = true
		assert.ErrorIs(t, f.m.Detach(f.ctx, "vm", f.assign.Device.Port), ErrNotAssigned)
	})
	t.Run("011_empty_unassign", func(t *testing.T) {
		f := newFixture(t)
		for range 2 {
			assert.ErrorIs(t, f.m.Unassign(f.ctx, "vm", f.assign.Device), ErrNotAssigned)
			f.vm.running = true
		}
	})
	t.Run("012_double_attach", func(t *testing.T) {
		f := newFixture(t)
		f.attach(t)
		assert.ErrorIs(t, f.m.Attach(f.ctx, "vm", f.assign), ErrAlreadyAttached)
	})
	t.Run("013_double_detach", func(t *testing.T) {
		f := newFixture(t)
		f.attach(t)
		require.NoError(t, f.m.Detach(f.ctx, "vm", f.assign.Device.Port))
		assert.ErrorIs(t, f.m.Detach(f.ctx, "vm", f.assign.Device.Port), ErrNotAssigned)
	})
	t.Run("014_double_assign", func(t *testing.T) {
		f := newFixture(t)
		require.NoError(t, f.m.Assign(f.ctx, "vm", f.assign))
		assert.ErrorIs(t, f.m.Assign(f.ctx, "vm", f.assign), ErrAlreadyAssigned)
		assert.ErrorIs(t, f.m.Assign(f.ctx, "vm", f.with(Auto)), ErrAlreadyAssigned, "the mode is not part of the identity")
	})
	t.Run("015_double_unassign", func(t *testing.T) {
		f := newFixture(t)
		require.NoError(t, f.m.Assign(f.ctx, "vm", f.assign))
		require.NoError(t, f.m.Unassign(f.ctx, "vm", f.assign.Device))
		assert.ErrorIs(t, f.m.Unassign(f.ctx, "vm", f.assign.Device), ErrNotAssigned)
	})
	t.Run("016_list_assigned", func(t *testing.T) {
		f := newFixture(t)
		assert.Empty(t, f.m.Assigned("vm", "testclass", false))
		require.NoError(t, f.m.Assign(f.ctx, "vm", f.assign))
		assigned := f.m.Assigned("vm", "testclass", false)
		assert.Equal(t, []VirtualDevice{f.assign.Device}, devicesOf(assigned))
		assert.Equal(t, "vm", assigned[0].Frontend)
		assert.Equal(t, Required, assigned[0].Mode)
		at, err := f.m.Attached("vm", "testclass")
		require.NoError(t, err)
		assert.Empty(t, at, "assigned is not attached")
	})
	t.Run("017_list_attached", func(t *testing.T) {
		f := newFixture(t)
		f.attach(t)
		at, err := f.m.Attached("vm", "testclass")
		require.NoError(t, err)
		require.Len(t, at, 1)
		assert.Equal(t, f.assign.Device, at[0].Device)
		assert.Equal(t, Manual, at[0].Mode, "an attachment without an assignment is manual")
		assert.Empty(t, f.m.Assigned("vm", "testclass", false), "attached is not assigned")

		require.NoError(t, f.m.Assign(f.ctx, "vm", f.with(Auto)))
		at, _ = f.m.Attached("vm", "testclass")
		assert.Equal(t, Auto, at[0].Mode, "an attached device that is assigned shows its assignment")
	})
	t.Run("018_list_available", func(t *testing.T) {
		f := newFixture(t)
		exposed, err := f.m.Exposed("vm", "testclass")
		require.NoError(t, err)
		require.Len(t, exposed, 1)
		assert.Equal(t, f.dev.Virtual(), exposed[0].Virtual())
	})

	for _, tc := range []struct {
		name     string
		from, to Mode
	}{
		{"020_update_mode_to_auto", Required, Auto},
		{"021_update_mode_to_ask", Required, Ask},
		{"022_update_mode_to_required", Auto, Required},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			require.NoError(t, f.m.Assign(f.ctx, "vm", f.with(tc.from)))
			assert.Len(t, f.m.Assigned("vm", "testclass", true), boolInt(tc.from == Required))
			require.NoError(t, f.m.SetMode(f.ctx, "vm", f.assign.Device, tc.to))
			assert.Len(t, f.m.Assigned("vm", "testclass", true), boolInt(tc.to == Required))
			all := f.m.Assigned("vm", "testclass", false)
			require.Len(t, all, 1)
			assert.Equal(t, tc.to, all[0].Mode)
			assert.True(t, f.ev.fired(EventAssignmentChanged))
		})
	}

	for _, tc := range []struct {
		name     string
		running  bool
		mode     Mode
		unassign bool
		dev      func(VirtualDevice) VirtualDevice
	}{
		{name: "030_assign", running: true, mode: Auto},
		{name: "031_assign_to_halted", mode: Auto},
		{name: "032_assign_required", running: true, mode: Required},
		{name: "033_assign_required_to_halted", mode: Required},
		{name: "034_unassign_from_halted", mode: Auto, unassign: true},
		{name: "035_unassign", running: true, mode: Auto, unassign: true},
		{name: "036_assign_unassign_port", running: true, mode: Ask, unassign: true,
			dev: func(v VirtualDevice) VirtualDevice { v.Port.ID = Any; return v }},
		{name: "037_assign_unassign_device", running: true, mode: Ask, unassign: true,
			dev: func(v VirtualDevice) VirtualDevice { v.DeviceID = Any; return v }},
		{name: "042_unassign_required", running: true, mode: Required, unassign: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.vm.running = tc.running
			a := f.with(tc.mode)
			if tc.dev != nil {
				a.Device = tc.dev(a.Device)
			}
			require.NoError(t, f.m.Assign(f.ctx, "vm", a))
			assert.True(t, f.ev.fired(EventPreAssign))
			assert.True(t, f.ev.fired(EventAssign))
			assert.Equal(t, []VirtualDevice{a.Device}, devicesOf(f.m.Assigned("vm", "testclass", false)))
			if tc.unassign {
				require.NoError(t, f.m.Unassign(f.ctx, "vm", a.Device))
				assert.True(t, f.ev.fired(EventUnassign))
				assert.Empty(t, f.m.Assigned("vm", "testclass", false))
			} else {
				assert.False(t, f.ev.fired(EventUnassign))
			}
		})
	}

	t.Run("040_detach_required", func(t *testing.T) {
		f := newFixture(t)
		require.NoError(t, f.m.Assign(f.ctx, "vm", f.assign))
		f.attach(t)
		assert.ErrorIs(t, f.m.Detach(f.ctx, "vm", f.assign.Device.Port), ErrNotHalted)
		assert.False(t, f.ev.fired(EventPreDetach))
	})
	t.Run("041_detach_required_from_halted", func(t *testing.T) {
		f := newFixture(t)
		require.NoError(t, f.m.Assign(f.ctx, "vm", f.assign))
		assert.ErrorIs(t, f.m.Detach(f.ctx, "vm", f.assign.Device.Port), ErrNotAssigned)
	})
	t.Run("043_detach_assigned", func(t *testing.T) {
		f := newFixture(t)
		require.NoError(t, f.m.Assign(f.ctx, "vm", f.with(Auto)))
		f.attach(t)
		require.NoError(t, f.m.Detach(f.ctx, "vm", f.assign.Device.Port))
		assert.True(t, f.ev.fired(EventAssign))
		assert.True(t, f.ev.fired(EventPreDetach))
		assert.True(t, f.ev.fired(EventDetach))
		assert.Len(t, f.m.Assigned("vm", "testclass", false), 1, "detach does not unassign")
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestDeviceManager reproduces TC_01_DeviceManager: there is no
// collection to create; the Manager starts empty and takes assignments of
// any registered class at once.
func TestDeviceManager(t *testing.T) {
	t.Run("000_init", func(t *testing.T) {
		m := NewManager(testDomains{"vm": {name: "vm"}}, Options{})
		assert.Empty(t, m.Assigned("vm", "testclass", false))
		_, err := m.Exposed("vm", "testclass")
		assert.ErrorIs(t, err, ErrUnknownClass)
	})
	t.Run("001_missing", func(t *testing.T) {
		m := NewManager(testDomains{"vm": {name: "vm"}}, Options{})
		require.NoError(t, m.AddBus(newTestBus("testclass")))
		a := Assignment{Device: VirtualDevice{Port: Port{Backend: "vm", ID: "testdev", Class: "testclass"}}, Mode: Required}
		require.NoError(t, m.Assign(context.Background(), "vm", a))
		assert.Len(t, m.Assigned("vm", "testclass", false), 1)
		assert.Error(t, m.AddBus(newTestBus("testclass")), "one bus per class")
	})
}

// TestDevices42 maps the release-4.2 TC_00_DeviceCollection cases onto
// the HEAD model, which wins where they disagree: a persistent attach is
// Assign, a live one Attach, persistent() is Assigned and attached() is
// Attached; update_persistent(False/True) is Unassign / Assign of an
// attached device; DeviceNotAttached is ErrNotAssigned.
func TestDevices42(t *testing.T) {
	t.Run("001_attach", func(t *testing.T) {
		f := newFixture(t)
		require.NoError(t, f.m.Assign(f.ctx, "vm", f.with(Auto)), "persistent attach of a halted VM")
		assert.True(t, f.ev.fired(EventPreAssign))
		assert.True(t, f.ev.fired(EventAssign))
		assert.False(t, f.ev.fired(EventUnassign))
	})
	t.Run("002_detach", func(t *testing.T) {
		f := newFixture(t)
		require.NoError(t, f.m.Assign(f.ctx, "vm", f.with(Auto)))
		require.NoError(t, f.m.Unassign(f.ctx, "vm", f.assign.Device))
		assert.True(t, f.ev.fired(EventAssign))
		assert.True(t, f.ev.fired(EventUnassign))
	})
	t.Run("010_empty_detach", func(t *testing.T) {
		f := newFixture(t)
		assert.ErrorIs(t, f.m.Unassign(f.ctx, "vm", f.assign.Device), ErrNotAssigned)
		assert.ErrorIs(t, f.m.Detach(f.ctx, "vm", f.assign.Device.Port), ErrNotAssigned)
	})
	t.Run("011_double_attach", func(t *testing.T) {
		f := newFixture(t)
		f.vm.running = true
		require.NoError(t, f.m.Attach(f.ctx, "vm", f.assign))
		assert.ErrorIs(t, f.m.Attach(f.ctx, "vm", f.assign), ErrAlreadyAttached)
	})
	t.Run("012_double_detach", func(t *testing.T) {
		f := newFixture(t)
		f.vm.running = true
		require.NoError(t, f.m.Attach(f.ctx, "vm", f.assign))
		require.NoError(t, f.m.Detach(f.ctx, "vm", f.assign.Device.Port))
		assert.ErrorIs(t, f.m.Detach(f.ctx, "vm", f.assign.Device.Port), ErrNotAssigned)
	})
	t.Run("013_list_attached_persistent", func(t *testing.T) {
		f := newFixture(t)
		require.NoError(t, f.m.Assign(f.ctx, "vm", f.with(Auto)))
		assert.Len(t, f.m.Assigned("vm", "testclass", false), 1)
		at, err := f.m.Attached("vm", "testclass")
		require.NoError(t, err)
		assert.Empty(t, at)
	})
	t.Run("014_list_attached_non_persistent", func(t *testing.T) {
		f := newFixture(t)
		f.vm.running = true
		require.NoError(t, f.m.Attach(f.ctx, "vm", f.assign))
		at, err := f.m.Attached("vm", "testclass")
		require.NoError(t, err)
		assert.Len(t, at, 1)
		assert.Empty(t, f.m.Assigned("vm", "testclass", false))
	})
	t.Run("015_list_available", func(t *testing.T) {
		f := newFixture(t)
		exposed, err := f.m.Exposed("vm", "testclass")
		require.NoError(t, err)
		assert.Len(t, exposed, 1)
	})
	t.Run("020_update_persistent_to_false", func(t *testing.T) {
		f := newFixture(t)
		require.NoError(t, f.m.Assign(f.ctx, "vm", f.with(Auto)))
		f.attach(t)
		require.NoError(t, f.m.Unassign(f.ctx, "vm", f.assign.Device))
		assert.Empty(t, f.m.Assigned("vm", "testclass", false))
		at, _ := f.m.Attached("vm", "testclass")
		assert.Len(t, at, 1, "still attached")
	})
	t.Run("021_update_persistent_to_true", func(t *testing.T) {
		f := newFixture(t)
		f.vm.running = true
		require.NoError(t, f.m.Attach(f.ctx, "vm", f.assign))
		require.NoError(t, f.m.Assign(f.ctx, "vm", f.with(Auto)))
		assert.Len(t, f.m.Assigned("vm", "testclass", false), 1)
		at, _ := f.m.Attached("vm", "testclass")
		require.Len(t, at, 1)
		assert.Equal(t, Auto, at[0].Mode)
	})
	t.Run("022_update_persistent_reject_not_running", func(t *testing.T) {
		// 4.2 refused update_persistent on a halted VM; HEAD's assignments
		// are independent of the VM's state, so a halted VM may change them.
		f := newFixture(t)
		require.NoError(t, f.m.Assign(f.ctx, "vm", f.with(Auto)))
		require.NoError(t, f.m.SetMode(f.ctx, "vm", f.assign.Device, Required))
		require.NoError(t, f.m.Unassign(f.ctx, "vm", f.assign.Device))
	})
	t.Run("023_update_persistent_reject_not_attached", func(t *testing.T) {
		f := newFixture(t)
		f.vm.running = true
		assert.ErrorIs(t, f.m.SetMode(f.ctx, "vm", f.assign.Device, Required), ErrNotAssigned)
		assert.ErrorIs(t, f.m.Unassign(f.ctx, "vm", f.assign.Device), ErrNotAssigned)
	})
}

// TestManagerRules covers the rules beyond the Qubes cases: every device
// has an existing backend whatever buses and callers pass, modes, vetoes,
// device resolution.
func TestManagerRules(t *testing.T) {
	t.Run("refuses_device_without_backend", func(t *testing.T) {
		for _, backend := range []string{"", Any, "ghost"} {
			f := newFixture(t)
			f.vm.running = true
			a := f.assign
			a.Device.Port.Backend = backend
			assert.ErrorIs(t, f.m.Attach(f.ctx, "vm", a), ErrNoBackend, "attach, backend %q", backend)
			assert.ErrorIs(t, f.m.Assign(f.ctx, "vm", a), ErrNoBackend, "assign, backend %q", backend)
			_, err := f.m.Exposed(backend, "testclass")
			assert.ErrorIs(t, err, ErrNoBackend)
			_, err = f.m.Device(backend, "testclass", "testport")
			assert.ErrorIs(t, err, ErrNoBackend)
			assert.Empty(t, f.m.Assigned("vm", "testclass", false))
		}
	})
	t.Run("drops_bus_devices_without_backend", func(t *testing.T) {
		f := newFixture(t)
		f.bus.exposed["vm"] = append(f.bus.exposed["vm"],
			StaticDevice(Port{Backend: "", ID: "orphan", Class: "testclass"}, "x", Properties{}),
			StaticDevice(Port{Backend: "other", ID: "foreign", Class: "testclass"}, "x", Properties{}))
		f.bus.extra["vm"] = []Attached{{Device: StaticDevice(Port{ID: "orphan", Class: "testclass"}, "x", Properties{})}}
		exposed, err := f.m.Exposed("vm", "testclass")
		require.NoError(t, err)
		assert.Len(t, exposed, 1)
		at, err := f.m.Attached("vm", "testclass")
		require.NoError(t, err)
		assert.Empty(t, at)
	})
	t.Run("unknown_frontend_and_class", func(t *testing.T) {
		f := newFixture(t)
		assert.ErrorIs(t, f.m.Assign(f.ctx, "ghost", f.with(Auto)), ErrUnknownDomain)
		assert.ErrorIs(t, f.m.Attach(f.ctx, "", f.assign), ErrUnknownDomain)
		a := f.assign
		a.Device.Port.Class = "usb"
		assert.ErrorIs(t, f.m.Assign(f.ctx, "vm", a), ErrUnknownClass)
	})
	t.Run("manual_cannot_be_assigned", func(t *testing.T) {
		f := newFixture(t)
		assert.ErrorIs(t, f.m.Assign(f.ctx, "vm", f.with(Manual)), ErrInvalidMode)
		assert.ErrorIs(t, f.m.Assign(f.ctx, "vm", f.with("sometimes")), ErrInvalidMode)
		require.NoError(t, f.m.Assign(f.ctx, "vm", f.with(Auto)))
		assert.ErrorIs(t, f.m.SetMode(f.ctx, "vm", f.assign.Device, Manual), ErrInvalidMode)
	})
	t.Run("same_mode_is_a_no_op", func(t *testing.T) {
		f := newFixture(t)
		require.NoError(t, f.m.Assign(f.ctx, "vm", f.with(Auto)))
		require.NoError(t, f.m.SetMode(f.ctx, "vm", f.assign.Device, Auto))
		assert.False(t, f.ev.fired(EventAssignmentChanged))
	})
	t.Run("pre_assign_veto_stores_nothing", func(t *testing.T) {
		f := newFixture(t)
		errVeto := errors.New("veto")
		f.m.On(EventPreAssign, "testclass", func(context.Context, Event) error { return errVeto })
		assert.ErrorIs(t, f.m.Assign(f.ctx, "vm", f.with(Auto)), errVeto)
		assert.Empty(t, f.m.Assigned("vm", "testclass", false))
		assert.False(t, f.ev.fired(EventAssign))
	})
	t.Run("pre_attach_veto_skips_bus", func(t *testing.T) {
		f := newFixture(t)
		f.vm.running = true
		errVeto := errors.New("denied")
		remove := f.m.On(EventPreAttach, "*", func(context.Context, Event) error { return errVeto })
		assert.ErrorIs(t, f.m.Attach(f.ctx, "vm", f.assign), errVeto)
		assert.Equal(t, "", f.dev.Attachment())
		remove()
		assert.NoError(t, f.m.Attach(f.ctx, "vm", f.assign))
	})
	t.Run("unknown_and_ambiguous", func(t *testing.T) {
		f := newFixture(t)
		f.vm.running = true
		f.bus.expose("vm", "otherport", "testdev")
		a := f.assign
		a.Device.Port.ID = "nosuchport"
		assert.ErrorIs(t, f.m.Attach(f.ctx, "vm", a), ErrUnknownDevice)
		a = f.assign
		a.Device.DeviceID = "otherdev"
		assert.ErrorIs(t, f.m.Attach(f.ctx, "vm", a), ErrUnknownDevice)
		a.Device.Port.ID = Any
		a.Device.DeviceID = "testdev"
		assert.ErrorIs(t, f.m.Attach(f.ctx, "vm", a), ErrAmbiguousDevice)
		a.Device.DeviceID = Any
		assert.ErrorIs(t, f.m.Attach(f.ctx, "vm", a), ErrAmbiguousDevice)
	})
	t.Run("attached_elsewhere", func(t *testing.T) {
		f := newFixture(t)
		other := &testDomain{name: "other", running: true}
		f.m.domains.(testDomains)["other"] = other
		f.vm.running = true
		require.NoError(t, f.m.Attach(f.ctx, "other", f.assign))
		assert.ErrorIs(t, f.m.Attach(f.ctx, "vm", f.assign), ErrAlreadyAttached)
	})
	t.Run("stale_device_stays_detachable", func(t *testing.T) {
		f := newFixture(t)
		f.attach(t)
		f.bus.exposed["vm"] = nil // unplugged while attached
		d, err := f.m.Device("vm", "testclass", "testport")
		require.NoError(t, err)
		assert.True(t, d.Unknown())
		require.NoError(t, f.m.Detach(f.ctx, "vm", f.assign.Device.Port))
	})
	t.Run("options_checked", func(t *testing.T) {
		f := newFixture(t)
		f.vm.running = true
		a := f.assign
		a.Options = map[string]string{"read'only": "yes"}
		assert.ErrorIs(t, f.m.Attach(f.ctx, "vm", a), ErrProtocol)
		a.Options = map[string]string{"read-only": "yes\n"}
		assert.ErrorIs(t, f.m.Assign(f.ctx, "vm", a), ErrProtocol)
	})
}
