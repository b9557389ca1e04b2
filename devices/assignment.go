package devices

import (
	"errors"
	"fmt"
)

// Errors returned by this package; test for them with errors.Is.
var (
	// ErrAlreadyAttached: the device is attached already, to this frontend
	// or another one (Qubes' DeviceAlreadyAttached).
	ErrAlreadyAttached = errors.New("device already attached")
	// ErrAlreadyAssigned: the frontend has this assignment already.
	ErrAlreadyAssigned = errors.New("device already assigned")
	// ErrNotAssigned: detach of a device that is not attached, or unassign
	// or a mode change of one that is not assigned (Qubes'
	// DeviceNotAssigned, a LookupError).
	ErrNotAssigned = errors.New("device not assigned")
	// ErrUnknownDevice: no device exposed by the backend matches.
	ErrUnknownDevice = errors.New("unknown device")
	// ErrAmbiguousDevice: more than one exposed device matches.
	ErrAmbiguousDevice = errors.New("ambiguous device")
	// ErrNotRunning: live attach to a halted frontend (use Assign).
	ErrNotRunning = errors.New("domain not running")
	// ErrNotHalted: detach of a device the running frontend requires
	// (unassign it first).
	ErrNotHalted = errors.New("domain not halted")
	// ErrNoBackend: the device names no backend domain, or one that does
	// not exist. Every device must be exposed by a backend domain.
	ErrNoBackend = errors.New("device has no backend domain")
	// ErrUnknownDomain: the frontend domain does not exist.
	ErrUnknownDomain = errors.New("unknown domain")
	// ErrUnknownClass: no bus is registered for the device class (Qubes
	// refuses a device of the wrong class for a collection).
	ErrUnknownClass = errors.New("unknown device class")
	// ErrInvalidMode: an assignment mode that is not allowed here (manual
	// for Assign and SetMode) or not known.
	ErrInvalidMode = errors.New("invalid assignment mode")
	// ErrProtocol: malformed or hostile input: a serialisation that does
	// not parse, an invalid port id, a character outside the allowed set.
	ErrProtocol = errors.New("device protocol error")
	// ErrUnexpectedProperty: a serialised device contradicts the device
	// it was expected to describe. It is also an ErrProtocol.
	ErrUnexpectedProperty = errors.New("unexpected device property")
)

// Mode is how an assigned device is attached.
type Mode string

// The assignment modes. Manual is what a live attachment without an
// assignment has; the others are persistent assignments.
const (
	Manual   Mode = "manual"
	Ask      Mode = "ask-to-attach"
	Auto     Mode = "auto-attach"
	Required Mode = "required"
)

// ParseMode checks a mode name.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Manual, Ask, Auto, Required:
		return m, nil
	}
	return "", fmt.Errorf("%w: %q", ErrInvalidMode, s)
}

// Assignment maps a device (possibly with Any port or device id) to a
// frontend domain with options and a mode. A persistent assignment (Ask,
// Auto or Required) is kept by the Manager; a live attachment is listed
// as an assignment in Manual mode.
type Assignment struct {
	Device   VirtualDevice
	Frontend string // filled in listings; the frontend argument wins on input
	Options  map[string]string
	Mode     Mode // "" reads as Manual
}

// mode returns a.Mode, Manual when empty.
func (a Assignment) mode() Mode {
	if a.Mode == "" {
		return Manual
	}
	return a.Mode
}

// Required reports whether the frontend needs the device to start.
func (a Assignment) Required() bool { return a.mode() == Required }

// AttachAutomatically reports whether the device is attached when it
// appears (every mode but Manual).
func (a Assignment) AttachAutomatically() bool { return a.mode() != Manual }

// Matches reports whether dev is a device the assignment names: same
// class and backend, port and device id equal or Any.
func (a Assignment) Matches(dev Device) bool {
	p, dp := a.Device.Port, dev.Port()
	return p.DevClass() == dp.DevClass() && p.Backend == dp.Backend &&
		(p.ID == Any || p.ID == dp.ID) &&
		(a.Device.ID() == Any || a.Device.ID() == dev.DeviceID())
}
