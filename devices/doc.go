// Package devices is the device core of a Qubes-OS-style admin daemon:
// device buses (classes) with plugins, the devices backend domains expose,
// live attachment to frontend domains and persistent assignments, with
// pre- and post-events, and the Admin API serialisation of devices and
// assignments. It follows the current Qubes model (qubes/devices.py and
// qubes/device_protocol.py of R4.3).
//
// # Model
//
// A device sits at a Port: a backend domain, a port id and a class. That
// is its identity, and every device belongs to a backend domain: the
// Manager refuses a device whose backend is empty, "*" or not one of the
// caller's domains, whatever a caller or a bus plugin passes it. A device
// also has a device id, the identity it presents itself with.
//
// A Bus plugin lists the devices a backend exposes and those attached to a
// frontend, and does the attaching. Device values are created by plugins
// (NewDevice); their properties (vendor, product, attachment, data, ...)
// are computed by the plugin on each access and cannot be set by callers.
// A device the backend no longer reports is an UnknownDevice, which can
// still be detached.
//
// Attach and Detach are live: they need a running frontend and do not
// persist. Assign and Unassign are persistent and work on halted and
// running frontends alike; an assignment's mode is ask-to-attach,
// auto-attach or required (manual is what a live attachment without an
// assignment shows as), and its port id or device id may be "*". The
// frontend's required devices cannot be detached while it runs.
//
// Hooks subscribe to the events per class: device-pre-attach and
// device-attach, device-pre-detach and device-detach, device-pre-assign and
// device-assign, device-unassign, device-assignment-changed. A pre-event
// hook may veto the change.
//
// # Serialisation
//
// Device.Serialize, Assignment.Serialize, ParseDevice and ParseAssignment
// implement qubes/device_protocol.py: key='value' pairs, quotes escaped as
// \', "_" marking options or bus data. Parsing is for untrusted input and
// never panics; malformed input is ErrProtocol, a property contradicting
// the expected device also ErrUnexpectedProperty. As in Qubes, a device
// line that does not parse yields the UnknownDevice of its port.
//
// # Decisions and differences from Qubes
//
//   - One Manager holds the buses of all classes and the assignments of all
//     frontends; the class of the device's port selects the bus, so Qubes'
//     "wrong class for this collection" is ErrUnknownClass here.
//   - Assignments to any backend (Qubes' "*" backend) are refused: a device
//     must name its backend domain.
//   - Detach finds the attached device by its whole port (backend, id,
//     class); Qubes compares port ids only.
//   - A pre-assign veto stores nothing (Qubes stores the assignment before
//     firing the event).
//   - A device attached to another frontend is ErrAlreadyAttached (Qubes'
//     block plugin checks this; we do for every bus).
//   - Parsing is stricter than Qubes': non-ASCII input, a value without
//     its closing quote, empty names and invalid classes are errors.
//   - Bus-specific options are validated by the bus; the Manager only
//     requires option names of [A-Za-z0-9._-] and printable ASCII values.
//
// # Tests and the Qubes test suite
//
// Go subtests are named Test<Class>/<number>_<name> after the HEAD test
// classes without their TC_NN_ prefix: TestDeviceCollection (TC_00),
// TestDeviceManager (TC_01), TestDeviceInfo (TC_02), TestDeviceAssignment
// (TC_03). The release-4.2 cases are TestDevices42/<number>_<name>; where
// they disagree with HEAD, HEAD wins:
//
//	4.2 case                              HEAD behaviour tested
//	001 attach (persistent)               Assign fires pre-assign/assign
//	002 detach (persistent)               Unassign fires unassign
//	010 empty detach: LookupError         ErrNotAssigned
//	011 double attach                     ErrAlreadyAttached
//	012 double detach: DeviceNotAttached  ErrNotAssigned
//	013 persistent only in persistent()   assigned, not attached
//	014 live only in attached()           attached, not assigned
//	015 available                         Exposed
//	020 update_persistent(False)          Unassign keeps it attached
//	021 update_persistent(True)           Assign of an attached device
//	022 halted: QubesVMNotStartedError    allowed: assignments do not need a running VM
//	023 not attached: QubesValueError     ErrNotAssigned
//
// The block bus over this host's loop devices is in package
// devices/block.
package devices
