package devices

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
)

// The serialisation of devices and assignments of the Admin API
// (qubes/device_protocol.py): key='value' pairs separated by spaces, a
// quote inside a value written as \', keys starting with '_' carrying
// options (of an assignment) or bus-specific data (of a device). Keys use
// printable ASCII without space, quotes, '=' and '`'; values any printable
// ASCII, except that a value cannot end with '=' (the "='" that would
// follow is the separator; Qubes' serialiser produces it and its parser
// then misreads the line).

// keyPunct is the punctuation allowed in a property name.
const keyPunct = `!#$%&()*+,-./:;<>?@[\]^_{|}~`

func isKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte(keyPunct, c) >= 0
}

func isValueChar(c byte) bool { return c >= 0x20 && c <= 0x7e }

// validPortID reports whether id is a port id: [A-Za-z0-9._-]+, or Any
// when any is true.
func validPortID(id string, any bool) bool {
	if id == Any {
		return any
	}
	if id == "" {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// writer builds a serialisation, keeping the first error.
type writer struct {
	b   strings.Builder
	err error
}

func (w *writer) prop(key, value string) {
	if w.err != nil {
		return
	}
	if key == "" || strings.IndexFunc(key, func(r rune) bool { return r > 0x7e || !isKeyChar(byte(r)) }) >= 0 {
		w.err = fmt.Errorf("%w: invalid chars in property name %q", ErrProtocol, key)
		return
	}
	for i := 0; i < len(value); i++ {
		if !isValueChar(value[i]) {
			w.err = fmt.Errorf("%w: invalid chars in value of property %s", ErrProtocol, key)
			return
		}
	}
	if strings.HasSuffix(value, "=") {
		// "='" is the separator: Qubes' parser (and ours) would split there
		w.err = fmt.Errorf("%w: value of property %s ends with '='", ErrProtocol, key)
		return
	}
	if w.b.Len() > 0 {
		w.b.WriteByte(' ')
	}
	w.b.WriteString(key + "='" + strings.ReplaceAll(value, "'", `\'`) + "'")
}

// extra writes m as "_key" properties, in key order.
func (w *writer) extra(m map[string]string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		w.prop("_"+k, m[k])
	}
}

func (w *writer) virtual(v VirtualDevice, deviceID string) {
	w.prop("device_id", deviceID)
	w.prop("port_id", v.Port.ID)
	w.prop("devclass", v.Port.DevClass())
	w.prop("backend_domain", v.Port.Backend)
}

func (w *writer) result() ([]byte, error) {
	if w.err != nil {
		return nil, w.err
	}
	return []byte(w.b.String()), nil
}

// Serialize returns the device in the Admin API format (as the
// admin.vm.device.<class>.Available reply carries it after the port id).
// Characters outside the allowed sets are ErrProtocol.
func (d Device) Serialize() ([]byte, error) {
	p := d.props()
	var w writer
	w.virtual(d.Virtual(), d.DeviceID())
	for _, kv := range [][2]string{
		{"vendor", p.Vendor}, {"product", p.Product}, {"manufacturer", p.Manufacturer},
		{"name", p.Name}, {"serial", p.Serial},
	} {
		if kv[1] != "" && kv[1] != "unknown" {
			w.prop(kv[0], kv[1])
		}
	}
	if p.Attachment != "" {
		w.prop("attachment", p.Attachment)
	}
	var ifs strings.Builder
	for _, i := range d.Interfaces() {
		ifs.WriteString(i.String())
	}
	w.prop("interfaces", ifs.String())
	if p.Parent != nil {
		w.prop("parent_port_id", p.Parent.ID)
		w.prop("parent_devclass", p.Parent.DevClass())
	}
	w.extra(p.Data)
	return w.result()
}

// Serialize returns the assignment in the Admin API format.
func (a Assignment) Serialize() ([]byte, error) {
	var w writer
	w.virtual(a.Device, a.Device.ID())
	w.prop("mode", string(a.mode()))
	if a.Frontend != "" {
		w.prop("frontend_domain", a.Frontend)
	}
	w.extra(a.Options)
	return w.result()
}

// ParseDevice reads a device of backend from the Admin API format: the
// port id (optionally ":<device id>") and a space, then its properties
// (the lines of admin.vm.device.<class>.Available). class may be "" to
// take the class the serialisation names.
//
// The input is untrusted. If the head is valid but the properties are
// malformed or contradict the head, ParseDevice returns, with an error
// wrapping ErrProtocol, the UnknownDevice of that port, as Qubes does, so
// a caller can still show (and detach) it. If the head itself is invalid
// it returns the zero Device.
func ParseDevice(untrusted []byte, backend, class string) (Device, error) {
	head, rest, _ := bytes.Cut(untrusted, []byte(" "))
	portID, devID, _ := strings.Cut(string(head), ":")
	if portID == "_" {
		portID = Any
	}
	if devID == "_" || devID == "" {
		devID = Any
	}
	if !validPortID(portID, false) || !validDeviceID(devID) {
		return Device{}, fmt.Errorf("%w: invalid device %q", ErrProtocol, head)
	}
	if class != "" && !validPortID(class, false) {
		return Device{}, fmt.Errorf("%w: invalid device class %q", ErrProtocol, class)
	}
	expected := VirtualDevice{Port: Port{Backend: backend, ID: portID, Class: class}, DeviceID: devID}
	dev, err := parseDevice(rest, expected)
	if err != nil {
		return UnknownDevice(expected.Port, devID), err
	}
	return dev, nil
}

func parseDevice(untrusted []byte, expected VirtualDevice) (Device, error) {
	v, props, opts, err := unpackFor(untrusted, expected)
	if err != nil {
		return Device{}, err
	}
	p := Properties{Data: opts}
	for key, field := range map[string]*string{
		"vendor": &p.Vendor, "product": &p.Product, "manufacturer": &p.Manufacturer,
		"name": &p.Name, "serial": &p.Serial, "attachment": &p.Attachment,
	} {
		*field = props[key]
		delete(props, key)
	}
	if s, ok := props["interfaces"]; ok {
		if p.Interfaces, err = ParseInterfaces(s); err != nil {
			return Device{}, err
		}
		delete(props, "interfaces")
	}
	parentID, hasID := props["parent_port_id"]
	parentClass, hasClass := props["parent_devclass"]
	if hasID != hasClass {
		return Device{}, fmt.Errorf("%w: parent_port_id and parent_devclass go together", ErrProtocol)
	}
	if hasID {
		if !validPortID(parentID, false) {
			return Device{}, fmt.Errorf("%w: invalid parent port %q", ErrProtocol, parentID)
		}
		p.Parent = &Port{Backend: v.Port.Backend, ID: parentID, Class: parentClass}
		delete(props, "parent_port_id")
		delete(props, "parent_devclass")
	}
	for k, val := range props { // Qubes keeps unknown properties as data
		if _, dup := p.Data[k]; !dup {
			p.Data[k] = val
		}
	}
	return StaticDevice(v.Port, v.DeviceID, p), nil
}

// ParseAssignment reads an assignment of the device expected from the
// Admin API format. The input is untrusted: malformed input, a property
// contradicting expected, an unknown mode or an unknown property is
// ErrProtocol. The frontend is returned by name; the Manager checks it.
func ParseAssignment(untrusted []byte, expected VirtualDevice) (Assignment, error) {
	v, props, opts, err := unpackFor(untrusted, expected)
	if err != nil {
		return Assignment{}, err
	}
	a := Assignment{Device: v, Options: opts, Mode: Manual}
	for k, val := range props {
		switch k {
		case "mode":
			if a.Mode, err = ParseMode(val); err != nil {
				return Assignment{}, fmt.Errorf("%w: %w", ErrProtocol, err)
			}
		case "frontend_domain":
			a.Frontend = val
		default:
			return Assignment{}, fmt.Errorf("%w: unexpected property %q", ErrProtocol, k)
		}
	}
	return a, nil
}

// unpackFor unpacks a serialisation of the device expected and checks its
// identity properties (see checkIdentity); props holds the rest.
func unpackFor(untrusted []byte, expected VirtualDevice) (v VirtualDevice, props, extra map[string]string, err error) {
	if props, extra, err = unpackProperties(untrusted); err != nil {
		return v, nil, nil, err
	}
	v, err = checkIdentity(expected, props)
	return v, props, extra, err
}

// checkIdentity compares the identity properties of a serialisation with
// the device expected, removes them from props and returns the device they
// describe (expected with the class and device id filled in).
func checkIdentity(expected VirtualDevice, props map[string]string) (VirtualDevice, error) {
	got := expected
	unexpected := func(what, have, want string) error {
		return fmt.Errorf("%w: %w: %s %q, expected %q", ErrProtocol, ErrUnexpectedProperty, what, have, want)
	}
	if b, ok := props["backend_domain"]; ok && b != expected.Port.Backend {
		return got, unexpected("backend", b, expected.Port.Backend)
	}
	if p, ok := props["port_id"]; ok && p != expected.Port.ID {
		return got, unexpected("port", p, expected.Port.ID)
	}
	if c, ok := props["devclass"]; ok {
		if expected.Port.Class == "" {
			if !validPortID(c, false) {
				return got, fmt.Errorf("%w: invalid device class %q", ErrProtocol, c)
			}
			got.Port.Class = c
		} else if c != expected.Port.DevClass() {
			return got, unexpected("class", c, expected.Port.DevClass())
		}
	}
	if d, ok := props["device_id"]; ok {
		if expected.ID() != Any && d != expected.ID() {
			return got, unexpected("device id", d, expected.ID())
		}
		got.DeviceID = d
	}
	for _, k := range []string{"backend_domain", "port_id", "devclass", "device_id"} {
		delete(props, k)
	}
	return got, nil
}

// validDeviceID reports whether a device id is printable ASCII without
// space or quote, and can be serialised (does not end with '=').
func validDeviceID(id string) bool {
	for i := 0; i < len(id); i++ {
		if !isValueChar(id[i]) || id[i] == ' ' || id[i] == '\'' {
			return false
		}
	}
	return id != "" && !strings.HasSuffix(id, "=")
}

// unpackProperties splits a serialisation into properties and the
// "_"-prefixed ones (options or data, without the '_'). It follows
// Qubes' parser: split at every "='" (which a value never contains, as its
// quotes are escaped), then take the value of each piece up to its last
// "' ". It is stricter in three ways: input that is not ASCII, a piece
// without "' ", a last value without its closing quote and an empty name
// are errors.
func unpackProperties(untrusted []byte) (props, extra map[string]string, err error) {
	props, extra = map[string]string{}, map[string]string{}
	for _, c := range untrusted {
		if c >= 0x80 {
			return nil, nil, fmt.Errorf("%w: non-ASCII serialisation", ErrProtocol)
		}
	}
	s := strings.TrimSpace(string(untrusted))
	if s == "" {
		return props, extra, nil
	}
	key, rest, found := strings.Cut(s, "='")
	if !found {
		return nil, nil, fmt.Errorf("%w: no key='value' pair", ErrProtocol)
	}
	var keys, values []string
	keys = append(keys, strings.TrimSpace(key))
	for {
		piece, after, more := strings.Cut(rest, "='")
		if !more {
			break
		}
		i := strings.LastIndex(piece, "' ")
		if i < 0 {
			return nil, nil, fmt.Errorf("%w: value without closing quote", ErrProtocol)
		}
		values = append(values, piece[:i])
		keys = append(keys, strings.TrimSpace(piece[i+2:]))
		rest = after
	}
	if !strings.HasSuffix(rest, "'") {
		return nil, nil, fmt.Errorf("%w: value without closing quote", ErrProtocol)
	}
	values = append(values, rest[:len(rest)-1])
	for i, k := range keys {
		if k == "" || strings.IndexFunc(k, func(r rune) bool { return !isKeyChar(byte(r)) }) >= 0 {
			return nil, nil, fmt.Errorf("%w: invalid chars in property name %q", ErrProtocol, k)
		}
		v := strings.ReplaceAll(values[i], `\'`, "'")
		if strings.IndexFunc(v, func(r rune) bool { return !isValueChar(byte(r)) }) >= 0 {
			return nil, nil, fmt.Errorf("%w: invalid chars in value of property %s", ErrProtocol, k)
		}
		if name, ok := strings.CutPrefix(k, "_"); ok {
			if name == "" {
				return nil, nil, fmt.Errorf("%w: empty option name", ErrProtocol)
			}
			extra[name] = v
		} else {
			props[k] = v
		}
	}
	return props, extra, nil
}
