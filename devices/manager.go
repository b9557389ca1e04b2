package devices

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/rs/zerolog"
)

// Domain is what the Manager needs to know of a domain (VM). The caller
// implements it.
type Domain interface {
	Name() string
	// Halted reports whether the domain is shut down (Qubes' is_halted).
	Halted() bool
}

// Domains finds the caller's domains by name.
type Domains interface {
	Domain(name string) (Domain, bool)
}

// Attached is a device a bus reports as attached to a frontend, with the
// options it was attached with.
type Attached struct {
	Device  Device
	Options map[string]string
}

// Bus is a device class plugin (Qubes' device extension). Listing methods
// must be cheap and must not block (Qubes forbids asynchronous listing);
// Attach and Detach do the real work.
type Bus interface {
	// Class is the device class the bus handles ("block", "usb", ...).
	Class() string
	// Exposed lists the devices backend exposes.
	Exposed(backend string) []Device
	// Device returns the device at a port of backend (Qubes' device-get).
	Device(backend, portID string) (Device, bool)
	// Attached lists the devices attached to frontend.
	Attached(frontend string) []Attached
	// Attach attaches dev to the running frontend. The bus validates the
	// options and refuses what it cannot do.
	Attach(ctx context.Context, frontend string, dev Device, options map[string]string) error
	// Detach detaches the device at port from frontend.
	Detach(ctx context.Context, frontend string, port Port) error
}

// EventKind names a device event; the values are Qubes' event names
// without the ":<class>" suffix.
type EventKind string

// The device events. Pre-events run before the change and may veto it by
// returning an error.
const (
	EventPreAttach         EventKind = "device-pre-attach"
	EventAttach            EventKind = "device-attach"
	EventPreDetach         EventKind = "device-pre-detach"
	EventDetach            EventKind = "device-detach"
	EventPreAssign         EventKind = "device-pre-assign"
	EventAssign            EventKind = "device-assign"
	EventUnassign          EventKind = "device-unassign"
	EventAssignmentChanged EventKind = "device-assignment-changed"
)

func (k EventKind) pre() bool {
	return k == EventPreAttach || k == EventPreDetach || k == EventPreAssign
}

// Event describes one device change of a frontend.
type Event struct {
	Kind     EventKind
	Class    string
	Frontend string
	Device   VirtualDevice     // the device (for detach: its port and id)
	Options  map[string]string // attach and assign events
	Mode     Mode              // assign and assignment-changed events
}

// Hook handles an Event. Hooks run without the Manager's locks held but
// inside its operation, so they may list devices but must not attach,
// detach, assign or unassign.
type Hook func(ctx context.Context, e Event) error

// Options configures a Manager.
type Options struct {
	// Logger receives warnings about what buses report wrongly (devices
	// without a backend). nil means no logging.
	Logger *zerolog.Logger
}

// Manager holds the buses and the persistent assignments of all domains
// and carries out attach, detach, assign and unassign with their events.
// It enforces that every device belongs to an existing backend domain,
// whatever buses and callers pass it. It is safe for concurrent use;
// changing operations run one at a time.
type Manager struct {
	domains Domains
	log     zerolog.Logger

	op sync.Mutex // serialises changing operations

	mu       sync.RWMutex
	buses    map[string]Bus
	assigned map[string][]Assignment // by frontend
	hooks    []hookEntry
	nextHook int
}

type hookEntry struct {
	id    int
	kind  EventKind
	class string
	fn    Hook
}

// NewManager returns a Manager over the caller's domains, with no buses.
func NewManager(domains Domains, opts Options) *Manager {
	log := zerolog.Nop()
	if opts.Logger != nil {
		log = *opts.Logger
	}
	return &Manager{domains: domains, log: log, buses: map[string]Bus{}, assigned: map[string][]Assignment{}}
}

// AddBus registers a bus for its class. A second bus for the same class
// is an error.
func (m *Manager) AddBus(b Bus) error {
	class := b.Class()
	if !validPortID(class, false) {
		return fmt.Errorf("add bus: %w: invalid class %q", ErrProtocol, class)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.buses[class]; dup {
		return fmt.Errorf("add bus %s: already registered", class)
	}
	m.buses[class] = b
	return nil
}

// On subscribes fn to events of kind for the device class ("*" for every
// class) and returns a function that removes the subscription.
func (m *Manager) On(kind EventKind, class string, fn Hook) (remove func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextHook++
	id := m.nextHook
	m.hooks = append(m.hooks, hookEntry{id: id, kind: kind, class: class, fn: fn})
	return func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		for i, h := range m.hooks {
			if h.id == id {
				m.hooks = append(m.hooks[:i:i], m.hooks[i+1:]...)
				return
			}
		}
	}
}

func (m *Manager) fire(ctx context.Context, e Event) error {
	m.mu.RLock()
	var fns []Hook
	for _, h := range m.hooks {
		if h.kind == e.Kind && (h.class == "*" || h.class == e.Class) {
			fns = append(fns, h.fn)
		}
	}
	m.mu.RUnlock()
	var errs []error
	for _, fn := range fns {
		if err := fn(ctx, e); err != nil {
			if e.Kind.pre() {
				return fmt.Errorf("%s: %w", e.Kind, err)
			}
			errs = append(errs, fmt.Errorf("%s: %w", e.Kind, err))
		}
	}
	return errors.Join(errs...)
}

// bus returns the bus of class.
func (m *Manager) bus(class string) (Bus, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if b, ok := m.buses[class]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownClass, class)
}

// frontend returns the existing frontend domain name.
func (m *Manager) frontend(name string) (Domain, error) {
	if d, ok := m.domains.Domain(name); ok && name != "" {
		return d, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownDomain, name)
}

// checkBackend enforces that p belongs to an existing backend domain and
// has a valid port id (Any allowed when any is true).
func (m *Manager) checkBackend(p Port, any bool) error {
	if p.Backend == "" || p.Backend == Any {
		return fmt.Errorf("%w: %s", ErrNoBackend, p)
	}
	if _, ok := m.domains.Domain(p.Backend); !ok {
		return fmt.Errorf("%w: domain %q does not exist", ErrNoBackend, p.Backend)
	}
	if !validPortID(p.ID, any) {
		return fmt.Errorf("%w: invalid port id %q", ErrProtocol, p.ID)
	}
	return nil
}

// Exposed lists the devices of class that backend exposes, sorted by port.
// Devices the bus reports for another backend or class are dropped.
func (m *Manager) Exposed(backend, class string) ([]Device, error) {
	b, err := m.bus(class)
	if err != nil {
		return nil, err
	}
	if err := m.checkBackend(Port{Backend: backend, ID: "x", Class: class}, false); err != nil {
		return nil, err
	}
	var out []Device
	for _, d := range b.Exposed(backend) {
		if p := d.Port(); p.Backend != backend || p.DevClass() != class || !validPortID(p.ID, false) {
			m.log.Warn().Str("bus", class).Str("backend", backend).Str("device", p.String()).
				Msg("bus listed a device that backend does not expose; dropped")
			continue
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Port().ID < out[j].Port().ID })
	return out, nil
}

// Device returns the device of class at backend's port, or its
// UnknownDevice when the backend does not expose it.
func (m *Manager) Device(backend, class, portID string) (Device, error) {
	b, err := m.bus(class)
	if err != nil {
		return Device{}, err
	}
	port := Port{Backend: backend, ID: portID, Class: class}
	if err := m.checkBackend(port, false); err != nil {
		return Device{}, err
	}
	if d, ok := b.Device(backend, portID); ok && d.Port().equal(port) {
		return d, nil
	}
	return UnknownDevice(port, ""), nil
}

// Attached lists the devices of class attached to frontend as assignments:
// the frontend's assignment of the device where it has one, else a Manual
// assignment with the options the bus reports. Devices the bus reports
// without an existing backend are dropped.
func (m *Manager) Attached(frontend, class string) ([]Assignment, error) {
	b, err := m.bus(class)
	if err != nil {
		return nil, err
	}
	if _, err := m.frontend(frontend); err != nil {
		return nil, err
	}
	return m.attached(b, frontend), nil
}

func (m *Manager) attached(b Bus, frontend string) []Assignment {
	class := b.Class()
	assigned := m.assignments(frontend, class)
	var out []Assignment
	for _, at := range b.Attached(frontend) {
		v := at.Device.Virtual()
		if err := m.checkBackend(v.Port, false); err != nil || v.Port.DevClass() != class {
			m.log.Warn().Str("bus", class).Str("frontend", frontend).Str("device", v.Port.String()).
				Msg("bus listed an attached device without a valid backend; dropped")
			continue
		}
		a := Assignment{Device: v, Frontend: frontend, Options: copyMap(at.Options), Mode: Manual}
		for _, as := range assigned {
			if as.Device.equal(v) {
				a = as
				break
			}
		}
		out = append(out, a)
	}
	sortAssignments(out)
	return out
}

// Assigned lists frontend's persistent assignments of class, sorted;
// with requiredOnly, only the Required ones.
func (m *Manager) Assigned(frontend, class string, requiredOnly bool) []Assignment {
	var out []Assignment
	for _, a := range m.assignments(frontend, class) {
		if !requiredOnly || a.Required() {
			out = append(out, a)
		}
	}
	sortAssignments(out)
	return out
}

func (m *Manager) assignments(frontend, class string) []Assignment {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Assignment
	for _, a := range m.assigned[frontend] {
		if a.Device.Port.DevClass() == class {
			a.Options = copyMap(a.Options)
			out = append(out, a)
		}
	}
	return out
}

// sortAssignments orders by backend, port and device id, Any before a
// specific value (Qubes' order).
func sortAssignments(as []Assignment) {
	sort.Slice(as, func(i, j int) bool {
		a, b := as[i].Device, as[j].Device
		if a.Port.Backend != b.Port.Backend {
			return a.Port.Backend < b.Port.Backend
		}
		if a.Port.ID != b.Port.ID {
			return a.Port.ID < b.Port.ID
		}
		return a.ID() < b.ID()
	})
}
