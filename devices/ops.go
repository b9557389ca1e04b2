package devices

import (
	"context"
	"fmt"
	"strings"
)

// Attach attaches the device a names to the running frontend, live (not
// persistently: use Assign for that). The device must be exposed by an
// existing backend and be the only one a matches: none is
// ErrUnknownDevice, several ErrAmbiguousDevice. A halted frontend is
// ErrNotRunning, a device attached already ErrAlreadyAttached. Then the
// pre-attach hooks run (and may veto), the bus attaches, and the attach
// hooks run.
func (m *Manager) Attach(ctx context.Context, frontend string, a Assignment) error {
	m.op.Lock()
	defer m.op.Unlock()
	class := a.Device.Port.DevClass()
	wrap := func(err error) error { return fmt.Errorf("attach %s to %s: %w", a.Device, frontend, err) }
	b, err := m.bus(class)
	if err != nil {
		return wrap(err)
	}
	if err := m.checkBackend(a.Device.Port, true); err != nil {
		return wrap(err)
	}
	if err := checkOptions(a.Options); err != nil {
		return wrap(err)
	}
	fe, err := m.frontend(frontend)
	if err != nil {
		return wrap(err)
	}
	if fe.Halted() {
		return wrap(fmt.Errorf("%w: %s is halted; assign the device instead", ErrNotRunning, frontend))
	}
	dev, err := m.resolve(b, a)
	if err != nil {
		return wrap(err)
	}
	for _, at := range m.attached(b, frontend) {
		if at.Device.equal(dev.Virtual()) {
			return wrap(ErrAlreadyAttached)
		}
	}
	if other := dev.Attachment(); other != "" {
		return wrap(fmt.Errorf("%w to %s", ErrAlreadyAttached, other))
	}

	ev := Event{Kind: EventPreAttach, Class: class, Frontend: frontend, Device: dev.Virtual(), Options: copyMap(a.Options)}
	return wrapErr(m.around(ctx, ev, EventAttach, func() error {
		return b.Attach(ctx, frontend, dev, copyMap(a.Options))
	}), wrap)
}

// around fires the pre-event ev, runs change unless a hook vetoed it, then
// fires ev again as the post-event of kind post.
func (m *Manager) around(ctx context.Context, ev Event, post EventKind, change func() error) error {
	if err := m.fire(ctx, ev); err != nil {
		return err
	}
	if err := change(); err != nil {
		return err
	}
	ev.Kind = post
	return m.fire(ctx, ev)
}

// wrapErr applies wrap to a non-nil err.
func wrapErr(err error, wrap func(error) error) error {
	if err != nil {
		return wrap(err)
	}
	return nil
}

// resolve returns the one exposed device a names (Qubes'
// DeviceAssignment.device).
func (m *Manager) resolve(b Bus, a Assignment) (Device, error) {
	p, id := a.Device.Port, a.Device.ID()
	var found []Device
	if p.ID != Any {
		dev, ok := b.Device(p.Backend, p.ID)
		if !ok || !dev.Port().equal(p) {
			return Device{}, fmt.Errorf("%w: %s not exposed by %s", ErrUnknownDevice, p.ID, p.Backend)
		}
		if id == Any || id == dev.DeviceID() {
			return dev, nil
		}
	}
	if id != UnknownDeviceID {
		for _, dev := range b.Exposed(p.Backend) {
			if dev.Port().Backend == p.Backend && a.Matches(dev) {
				found = append(found, dev)
			}
		}
	}
	switch len(found) {
	case 0:
		return Device{}, fmt.Errorf("%w: no %s device matches %s", ErrUnknownDevice, p.DevClass(), a.Device)
	case 1:
		return found[0], nil
	}
	return Device{}, fmt.Errorf("%w: %d %s devices match %s", ErrAmbiguousDevice, len(found), p.DevClass(), a.Device)
}

// Detach detaches the device at port from frontend. A device that is not
// attached is ErrNotAssigned; one a Required assignment of the running
// frontend matches is ErrNotHalted (unassign it first).
func (m *Manager) Detach(ctx context.Context, frontend string, port Port) error {
	m.op.Lock()
	defer m.op.Unlock()
	class := port.DevClass()
	wrap := func(err error) error { return fmt.Errorf("detach %s from %s: %w", port, frontend, err) }
	b, err := m.bus(class)
	if err != nil {
		return wrap(err)
	}
	fe, err := m.frontend(frontend)
	if err != nil {
		return wrap(err)
	}
	var dev VirtualDevice
	found := false
	for _, at := range m.attached(b, frontend) {
		if at.Device.Port.equal(port) {
			dev, found = at.Device, true
			break
		}
	}
	if !found {
		return wrap(fmt.Errorf("%w: not attached", ErrNotAssigned))
	}
	if !fe.Halted() {
		for _, as := range m.assignments(frontend, class) {
			if as.Required() && as.Matches(UnknownDevice(dev.Port, dev.DeviceID)) {
				return wrap(fmt.Errorf("%w: %s requires the device; unassign it first", ErrNotHalted, frontend))
			}
		}
	}
	ev := Event{Kind: EventPreDetach, Class: class, Frontend: frontend, Device: dev}
	return wrapErr(m.around(ctx, ev, EventDetach, func() error {
		return b.Detach(ctx, frontend, dev.Port)
	}), wrap)
}

// Assign records a persistent assignment for frontend (halted or
// running); the device need not be present now. Its port id or device id
// may be Any, but its backend must be an existing domain. An assignment of
// the same port and device id is ErrAlreadyAssigned; Manual mode is
// ErrInvalidMode. The pre-assign hooks may veto; nothing is stored then.
func (m *Manager) Assign(ctx context.Context, frontend string, a Assignment) error {
	m.op.Lock()
	defer m.op.Unlock()
	class := a.Device.Port.DevClass()
	wrap := func(err error) error { return fmt.Errorf("assign %s to %s: %w", a.Device, frontend, err) }
	if _, err := m.bus(class); err != nil {
		return wrap(err)
	}
	if _, err := m.frontend(frontend); err != nil {
		return wrap(err)
	}
	if err := m.checkBackend(a.Device.Port, true); err != nil {
		return wrap(err)
	}
	if !validDeviceID(a.Device.ID()) {
		return wrap(fmt.Errorf("%w: invalid device id %q", ErrProtocol, a.Device.ID()))
	}
	if err := checkOptions(a.Options); err != nil {
		return wrap(err)
	}
	for _, as := range m.assignments(frontend, class) {
		if as.Device.equal(a.Device) {
			return wrap(ErrAlreadyAssigned)
		}
	}
	if _, err := ParseMode(string(a.mode())); err != nil || !a.AttachAutomatically() {
		return wrap(fmt.Errorf("%w: only auto-attachable devices (ask-to-attach, auto-attach, required) can be assigned", ErrInvalidMode))
	}
	a.Frontend, a.Options, a.Mode = frontend, copyMap(a.Options), a.mode()
	ev := Event{Kind: EventPreAssign, Class: class, Frontend: frontend, Device: a.Device, Options: copyMap(a.Options), Mode: a.Mode}
	return wrapErr(m.around(ctx, ev, EventAssign, func() error {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.assigned[frontend] = append(m.assigned[frontend], a)
		return nil
	}), wrap)
}

// Unassign removes frontend's assignment of dev (same port and device
// id); none is ErrNotAssigned. It does not detach the device.
func (m *Manager) Unassign(ctx context.Context, frontend string, dev VirtualDevice) error {
	m.op.Lock()
	defer m.op.Unlock()
	wrap := func(err error) error { return fmt.Errorf("unassign %s from %s: %w", dev, frontend, err) }
	old, ok := m.replace(frontend, dev, nil)
	if !ok {
		return wrap(ErrNotAssigned)
	}
	ev := Event{Kind: EventUnassign, Class: dev.Port.DevClass(), Frontend: frontend, Device: old.Device, Mode: old.Mode}
	return wrapErr(m.fire(ctx, ev), wrap)
}

// SetMode changes the mode of frontend's assignment of dev, keeping its
// options. Manual is ErrInvalidMode, a device not assigned ErrNotAssigned,
// the current mode changes nothing. The pre-assign hooks may veto.
func (m *Manager) SetMode(ctx context.Context, frontend string, dev VirtualDevice, mode Mode) error {
	m.op.Lock()
	defer m.op.Unlock()
	wrap := func(err error) error { return fmt.Errorf("set mode of %s for %s: %w", dev, frontend, err) }
	if _, err := ParseMode(string(mode)); err != nil || mode == Manual {
		return wrap(fmt.Errorf("%w: cannot change the assignment mode to %q", ErrInvalidMode, mode))
	}
	var cur Assignment
	found := false
	for _, as := range m.assignments(frontend, dev.Port.DevClass()) {
		if as.Device.equal(dev) {
			cur, found = as, true
		}
	}
	if !found {
		return wrap(ErrNotAssigned)
	}
	if cur.Mode == mode {
		return nil
	}
	next := cur
	next.Mode = mode
	ev := Event{Kind: EventPreAssign, Class: dev.Port.DevClass(), Frontend: frontend, Device: cur.Device, Options: copyMap(cur.Options), Mode: mode}
	return wrapErr(m.around(ctx, ev, EventAssignmentChanged, func() error {
		m.replace(frontend, dev, &next)
		return nil
	}), wrap)
}

// replace swaps frontend's assignment of dev for next (nil removes it) and
// returns the old one.
func (m *Manager) replace(frontend string, dev VirtualDevice, next *Assignment) (Assignment, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	list := m.assigned[frontend]
	for i, as := range list {
		if as.Device.equal(dev) {
			if next != nil {
				list[i] = *next
			} else {
				m.assigned[frontend] = append(list[:i:i], list[i+1:]...)
			}
			return as, true
		}
	}
	return Assignment{}, false
}

// checkOptions refuses options that could not be serialised: names of
// [A-Za-z0-9._-], printable ASCII values.
func checkOptions(opts map[string]string) error {
	for k, v := range opts {
		if !validPortID(k, false) {
			return fmt.Errorf("%w: invalid option name %q", ErrProtocol, k)
		}
		if strings.IndexFunc(v, func(r rune) bool { return r > 0x7e || !isValueChar(byte(r)) }) >= 0 {
			return fmt.Errorf("%w: invalid value of option %s", ErrProtocol, k)
		}
	}
	return nil
}
