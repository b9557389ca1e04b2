package devices

import (
	"fmt"
	"strings"
)

// Any is the wildcard port id or device id of an assignment.
const Any = "*"

// UnknownDeviceID is the device id of a device that did not say what it
// is (Qubes' default "0000:0000::?******").
const UnknownDeviceID = "0000:0000::?******"

// defaultClass is the class of a port that names none.
const defaultClass = "peripheral"

// Port is where a device sits: a port id, unique among the ports of one
// class in one backend domain. A device's identity is its Port; every
// device belongs to a backend domain.
type Port struct {
	Backend string // name of the backend domain that exposes the port
	ID      string // port id, [A-Za-z0-9._-]; Any in an assignment means any port
	Class   string // device class, the bus (e.g. "block"); "" reads as "peripheral"
}

// DevClass returns the port's class, "peripheral" when it has none.
func (p Port) DevClass() string {
	if p.Class == "" {
		return defaultClass
	}
	return p.Class
}

// String returns "backend:port".
func (p Port) String() string { return p.Backend + ":" + p.ID }

func (p Port) equal(o Port) bool {
	return p.Backend == o.Backend && p.ID == o.ID && p.DevClass() == o.DevClass()
}

// VirtualDevice names a device by its port and its device id, the identity
// the device presents itself with (vendor, product, serial, interfaces).
// Either may be Any in an assignment; an empty DeviceID means Any.
type VirtualDevice struct {
	Port     Port
	DeviceID string
}

// ID returns the device id, Any when it is empty.
func (v VirtualDevice) ID() string {
	if v.DeviceID == "" {
		return Any
	}
	return v.DeviceID
}

// String returns "backend:port:deviceid".
func (v VirtualDevice) String() string { return v.Port.String() + ":" + v.ID() }

func (v VirtualDevice) equal(o VirtualDevice) bool {
	return v.Port.equal(o.Port) && v.ID() == o.ID()
}

// Properties are what a bus plugin knows about a device beyond its port
// and id. Empty strings read as "unknown".
type Properties struct {
	Vendor, Product, Manufacturer, Name, Serial string
	// Description, if set, replaces the description derived from the
	// other properties (e.g. a PCI plugin's lookup in pci.ids).
	Description string
	Interfaces  []Interface
	Parent      *Port
	// Attachment is the frontend domain the device is attached to, "" if
	// none.
	Attachment string
	// Data holds the bus-specific properties (serialised as "_key").
	Data map[string]string
}

// Device is a device a backend domain exposes (Qubes' DeviceInfo). Its
// port and device id are fixed when the plugin creates it; its other
// properties are dynamic and read-only: every accessor asks the plugin's
// load function afresh, and nothing lets a caller set them.
type Device struct {
	port Port
	id   string
	load func() Properties
}

// NewDevice returns the device at port with the given device id ("" means
// UnknownDeviceID) whose properties load computes on each access. A nil
// load gives a device with no properties.
func NewDevice(port Port, deviceID string, load func() Properties) Device {
	if load == nil {
		load = func() Properties { return Properties{} }
	}
	return Device{port: port, id: deviceID, load: load}
}

// StaticDevice returns a device whose properties are the fixed props (a
// copy is kept; Data is copied too).
func StaticDevice(port Port, deviceID string, props Properties) Device {
	props.Data = copyMap(props.Data)
	props.Interfaces = append([]Interface(nil), props.Interfaces...)
	return NewDevice(port, deviceID, func() Properties {
		p := props
		p.Data = copyMap(props.Data)
		return p
	})
}

// UnknownDevice returns the placeholder for a device no backend reports at
// port: for example a device of a halted backend, or one unplugged but still
// attached, which must stay detachable.
func UnknownDevice(port Port, deviceID string) Device {
	return Device{port: port, id: deviceID}
}

// Unknown reports whether d is a placeholder from UnknownDevice.
func (d Device) Unknown() bool { return d.load == nil }

// Port returns the device's port.
func (d Device) Port() Port { return d.port }

// DeviceID returns the device id, UnknownDeviceID when the plugin gave none.
func (d Device) DeviceID() string {
	if d.id == "" || d.id == Any {
		return UnknownDeviceID
	}
	return d.id
}

// Virtual returns the device's port and device id.
func (d Device) Virtual() VirtualDevice {
	return VirtualDevice{Port: d.port, DeviceID: d.DeviceID()}
}

// String returns "backend:port".
func (d Device) String() string { return d.port.String() }

func (d Device) props() Properties {
	if d.load == nil {
		return Properties{}
	}
	return d.load()
}

// Vendor returns the vendor's name, or "unknown".
func (d Device) Vendor() string { return orUnknown(d.props().Vendor) }

// Product returns the product's name, or "unknown".
func (d Device) Product() string { return orUnknown(d.props().Product) }

// Manufacturer returns the manufacturer the device reports, or "unknown".
func (d Device) Manufacturer() string { return orUnknown(d.props().Manufacturer) }

// Name returns the name the device reports, or "unknown".
func (d Device) Name() string { return orUnknown(d.props().Name) }

// Serial returns the serial number the device reports, or "unknown".
func (d Device) Serial() string { return orUnknown(d.props().Serial) }

// Interfaces returns the device's interfaces: at least one, the unknown
// interface "?******" when the plugin reports none.
func (d Device) Interfaces() []Interface {
	ifs := d.props().Interfaces
	if len(ifs) == 0 {
		return []Interface{unknownInterface}
	}
	return append([]Interface(nil), ifs...)
}

// Parent returns the port of the device this one is part of (a partition's
// disk, a USB interface's device).
func (d Device) Parent() (Port, bool) {
	p := d.props().Parent
	if p == nil {
		return Port{}, false
	}
	return *p, true
}

// Attachment returns the frontend domain the device is attached to, "" if
// none.
func (d Device) Attachment() string { return d.props().Attachment }

// Data returns a copy of the bus-specific properties.
func (d Device) Data() map[string]string { return copyMap(d.props().Data) }

// Description returns a short human-readable description, as Qubes builds
// it: "<category>: <vendor> <product>".
func (d Device) Description() string {
	p := d.props()
	if p.Description != "" {
		return p.Description
	}
	class := d.port.DevClass()
	var prod string
	switch {
	case p.Product != "" && p.Product != "unknown":
		prod = p.Product
	case p.Name != "" && p.Name != "unknown":
		prod = p.Name
	case p.Serial != "" && p.Serial != "unknown":
		prod = p.Serial
	case p.Parent != nil:
		return "sub-device of " + p.Parent.String()
	default:
		prod = "unknown " + class + " device"
	}
	vendor := "unknown vendor"
	switch {
	case p.Vendor != "" && p.Vendor != "unknown":
		vendor = p.Vendor
	case p.Manufacturer != "" && p.Manufacturer != "unknown":
		vendor = p.Manufacturer
	}
	return fmt.Sprintf("%s: %s %s", d.category(class), vendor, prod)
}

func (d Device) category(class string) string {
	ifs := d.Interfaces()
	for _, i := range ifs {
		if c := i.Category(); c != "Other" {
			return c
		}
	}
	generic := strings.ToUpper(class) + " device"
	for _, i := range ifs {
		if s := i.Describe(); s != generic {
			return strings.ReplaceAll(s, "_", " ")
		}
	}
	return generic
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
