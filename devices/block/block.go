// Package block is a devices.Bus of class "block" over this host's loop
// devices: the backend domain (dom0 by default) exposes every bound loop
// device, and the bus attaches them to frontend domains.
//
// A loop device's properties are read from sysfs each time they are asked
// for: /sys/block/loopN/loop/backing_file, /sys/block/loopN/size (512-byte
// sectors) and /sys/block/loopN/ro. A device's Name is its backing file;
// its Data holds "backing_file", "size" (bytes) and "mode" ("r" or "w"),
// as Qubes' block devices carry mode and size.
//
// Attaching records the attachment in the bus and calls the optional
// Hypervisor, which does the real work (e.g. libvirt's attachDevice); the
// options are Qubes' block options: read-only (yes/no, default from the
// device's mode, and a read-only device can only be attached read-only),
// frontend-dev (xvd* or sd*, default the first free xvdi..xvdz, or xvdd for
// a cdrom) and devtype (disk or cdrom).
package block

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/vmpool/vmpool/devices"
)

// Class is the device class of the bus.
const Class = "block"

// Errors of the bus, besides those of package devices.
var (
	// ErrInvalidOption: an unknown attach option or a bad value.
	ErrInvalidOption = errors.New("invalid block device option")
	// ErrReadOnly: a read-only loop device attached read-write.
	ErrReadOnly = errors.New("device can be attached only read-only")
)

// Loop describes a bound loop device.
type Loop struct {
	Name        string // kernel name, e.g. "loop3"; the port id
	BackingFile string
	Size        int64 // bytes
	ReadOnly    bool
}

// Node returns the device node, /dev/<name>.
func (l Loop) Node() string { return "/dev/" + l.Name }

// Disk is what the Hypervisor attaches.
type Disk struct {
	Loop
	FrontendDev string // e.g. xvdi
	DevType     string // disk or cdrom
	ReadOnly    bool   // attach read-only
}

// Hypervisor does the real attaching of a disk to a running domain.
type Hypervisor interface {
	AttachDisk(ctx context.Context, frontend string, d Disk) error
	DetachDisk(ctx context.Context, frontend string, d Disk) error
}

// Options configure a Bus.
type Options struct {
	// Backend is the domain that exposes the host's loop devices; default
	// "dom0".
	Backend string
	// SysFS is where sysfs is mounted; default "/sys". Tests point it at a
	// fake tree.
	SysFS string
	// Hypervisor, if set, is called to attach and detach; nil only records
	// attachments.
	Hypervisor Hypervisor
}

// Bus is the block bus. It is safe for concurrent use.
type Bus struct {
	backend string
	sysfs   string
	hv      Hypervisor

	mu       sync.Mutex
	attached map[string]attachment // by port id
}

type attachment struct {
	frontend string
	disk     Disk
	options  map[string]string
}

// New returns a block bus.
func New(opts Options) *Bus {
	b := &Bus{backend: opts.Backend, sysfs: opts.SysFS, hv: opts.Hypervisor, attached: map[string]attachment{}}
	if b.backend == "" {
		b.backend = "dom0"
	}
	if b.sysfs == "" {
		b.sysfs = "/sys"
	}
	return b
}

// Class returns "block".
func (b *Bus) Class() string { return Class }

// Loops lists the bound loop devices, by name.
func (b *Bus) Loops() []Loop {
	paths, _ := filepath.Glob(filepath.Join(b.sysfs, "block", "loop*"))
	var out []Loop
	for _, p := range paths {
		if l, err := ReadLoop(b.sysfs, filepath.Base(p)); err == nil {
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ReadLoop reads loop device name from the sysfs tree at sysfs. An unbound
// loop device (no backing file) is os.ErrNotExist.
func ReadLoop(sysfs, name string) (Loop, error) {
	if !validLoopName(name) {
		return Loop{}, fmt.Errorf("loop device %q: %w", name, os.ErrNotExist)
	}
	dir := filepath.Join(sysfs, "block", name)
	backing, err := os.ReadFile(filepath.Join(dir, "loop", "backing_file"))
	if err != nil {
		return Loop{}, fmt.Errorf("loop device %s: %w", name, err)
	}
	sectors, err := readInt(filepath.Join(dir, "size"))
	if err != nil {
		return Loop{}, fmt.Errorf("loop device %s: size: %w", name, err)
	}
	ro, err := readInt(filepath.Join(dir, "ro"))
	if err != nil {
		return Loop{}, fmt.Errorf("loop device %s: ro: %w", name, err)
	}
	return Loop{
		Name:        name,
		BackingFile: strings.TrimRight(string(backing), "\n"),
		Size:        sectors * 512,
		ReadOnly:    ro != 0,
	}, nil
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// validLoopName: "loop" and digits only, so a port id from a caller can
// never walk out of /sys/block.
func validLoopName(name string) bool {
	digits := strings.TrimPrefix(name, "loop")
	if digits == name || digits == "" {
		return false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return false
		}
	}
	return true
}

// device returns the devices.Device of loop device name; its properties
// are read from sysfs on each access.
func (b *Bus) device(name string) devices.Device {
	port := devices.Port{Backend: b.backend, ID: name, Class: Class}
	ifc, _ := devices.NewInterface(Class, "")
	return devices.NewDevice(port, ":"+strings.TrimPrefix(name, "loop"), func() devices.Properties {
		p := devices.Properties{
			Manufacturer: "hosted by " + b.backend,
			Interfaces:   []devices.Interface{ifc},
			Attachment:   b.frontendOf(name),
		}
		l, err := ReadLoop(b.sysfs, name)
		if err != nil {
			return p
		}
		mode := "w"
		if l.ReadOnly {
			mode = "r"
		}
		p.Name = sanitize(l.BackingFile)
		p.Data = map[string]string{
			"backing_file": sanitize(l.BackingFile),
			"size":         strconv.FormatInt(l.Size, 10),
			"mode":         mode,
		}
		return p
	})
}

// sanitize replaces what the Admin API cannot carry (non-printable or
// non-ASCII bytes) with '_', as Qubes does for block descriptions.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '_'
		}
		return r
	}, s)
}

func (b *Bus) frontendOf(name string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.attached[name].frontend
}

// Exposed lists the bound loop devices if backend is the bus's backend.
func (b *Bus) Exposed(backend string) []devices.Device {
	if backend != b.backend {
		return nil
	}
	var out []devices.Device
	for _, l := range b.Loops() {
		out = append(out, b.device(l.Name))
	}
	return out
}

// Device returns the loop device named portID of backend.
func (b *Bus) Device(backend, portID string) (devices.Device, bool) {
	if backend != b.backend {
		return devices.Device{}, false
	}
	if _, err := ReadLoop(b.sysfs, portID); err != nil {
		return devices.Device{}, false
	}
	return b.device(portID), true
}

// Attached lists the loop devices attached to frontend, with their
// options. A loop device detached from the host meanwhile is listed as
// its UnknownDevice, so that it can still be detached.
func (b *Bus) Attached(frontend string) []devices.Attached {
	b.mu.Lock()
	var names []string
	opts := map[string]map[string]string{}
	for name, at := range b.attached {
		if at.frontend == frontend {
			names = append(names, name)
			opts[name] = copyOptions(at.options)
		}
	}
	b.mu.Unlock()
	sort.Strings(names)
	var out []devices.Attached
	for _, name := range names {
		dev, ok := b.Device(b.backend, name)
		if !ok {
			dev = devices.UnknownDevice(devices.Port{Backend: b.backend, ID: name, Class: Class}, "")
		}
		out = append(out, devices.Attached{Device: dev, Options: opts[name]})
	}
	return out
}

// Attach validates the options, refuses a device attached elsewhere or
// gone, and attaches the loop device to frontend.
func (b *Bus) Attach(ctx context.Context, frontend string, dev devices.Device, options map[string]string) error {
	name := dev.Port().ID
	l, err := ReadLoop(b.sysfs, name)
	if dev.Port().Backend != b.backend || err != nil {
		return fmt.Errorf("%w: %s", devices.ErrUnknownDevice, dev.Port())
	}
	disk, opts, err := diskOptions(l, options)
	if err != nil {
		return err
	}

	b.mu.Lock()
	if at, ok := b.attached[name]; ok {
		b.mu.Unlock()
		return fmt.Errorf("%w: %s to %s", devices.ErrAlreadyAttached, name, at.frontend)
	}
	if disk.FrontendDev == "" {
		disk.FrontendDev = b.freeFrontendDev(frontend, disk.DevType)
		if disk.FrontendDev == "" {
			b.mu.Unlock()
			return fmt.Errorf("%w: no free frontend device in %s", ErrInvalidOption, frontend)
		}
		opts["frontend-dev"] = disk.FrontendDev
	}
	b.attached[name] = attachment{frontend: frontend, disk: disk, options: opts}
	b.mu.Unlock()

	if b.hv != nil {
		if err := b.hv.AttachDisk(ctx, frontend, disk); err != nil {
			b.mu.Lock()
			delete(b.attached, name)
			b.mu.Unlock()
			return fmt.Errorf("attach %s: %w", name, err)
		}
	}
	return nil
}

// Detach detaches the loop device at port from frontend.
func (b *Bus) Detach(ctx context.Context, frontend string, port devices.Port) error {
	b.mu.Lock()
	at, ok := b.attached[port.ID]
	if !ok || at.frontend != frontend || port.Backend != b.backend {
		b.mu.Unlock()
		return fmt.Errorf("%w: %s not attached to %s", devices.ErrNotAssigned, port, frontend)
	}
	b.mu.Unlock()
	if b.hv != nil {
		if err := b.hv.DetachDisk(ctx, frontend, at.disk); err != nil {
			return fmt.Errorf("detach %s: %w", port.ID, err)
		}
	}
	b.mu.Lock()
	delete(b.attached, port.ID)
	b.mu.Unlock()
	return nil
}

// diskOptions checks Qubes' block options and returns the disk to attach
// and the options as recorded (read-only normalised to yes/no).
func diskOptions(l Loop, options map[string]string) (Disk, map[string]string, error) {
	d := Disk{Loop: l, DevType: "disk", ReadOnly: l.ReadOnly}
	opts := map[string]string{}
	for k, v := range options {
		switch k {
		case "frontend-dev":
			if !strings.HasPrefix(v, "xvd") && !strings.HasPrefix(v, "sd") || !validDevName(v) {
				return Disk{}, nil, fmt.Errorf("%w: frontend-dev %q", ErrInvalidOption, v)
			}
			d.FrontendDev = v
		case "read-only":
			ro, ok := parseBool(v)
			if !ok {
				return Disk{}, nil, fmt.Errorf("%w: read-only %q", ErrInvalidOption, v)
			}
			d.ReadOnly = ro
		case "devtype":
			if v != "disk" && v != "cdrom" {
				return Disk{}, nil, fmt.Errorf("%w: devtype can only be disk or cdrom", ErrInvalidOption)
			}
			d.DevType = v
		default:
			return Disk{}, nil, fmt.Errorf("%w: unsupported option %q", ErrInvalidOption, k)
		}
		opts[k] = v
	}
	if l.ReadOnly && !d.ReadOnly {
		return Disk{}, nil, fmt.Errorf("%w: %s", ErrReadOnly, l.Name)
	}
	opts["read-only"] = "no"
	if d.ReadOnly {
		opts["read-only"] = "yes"
	}
	return d, opts, nil
}

// freeFrontendDev returns the first frontend device name not used by
// frontend's attachments: xvdd for a cdrom if free, else xvdi..xvdz then
// xvdaa..xvdzz (Qubes' AVAILABLE_FRONTENDS). b.mu must be held.
func (b *Bus) freeFrontendDev(frontend, devtype string) string {
	used := map[string]bool{}
	for _, at := range b.attached {
		if at.frontend == frontend {
			used[at.disk.FrontendDev] = true
		}
	}
	if devtype == "cdrom" && !used["xvdd"] {
		return "xvdd"
	}
	for c := 'i'; c <= 'z'; c++ {
		if n := "xvd" + string(c); !used[n] {
			return n
		}
	}
	for c := 'a'; c <= 'z'; c++ {
		for d := 'a'; d <= 'z'; d++ {
			if n := "xvd" + string(c) + string(d); !used[n] {
				return n
			}
		}
	}
	return ""
}

func validDevName(s string) bool {
	for i := 0; i < len(s); i++ {
		if !(s[i] >= 'a' && s[i] <= 'z' || s[i] >= '0' && s[i] <= '9') {
			return false
		}
	}
	return len(s) <= 16
}

// parseBool reads a boolean option as Qubes' property.bool does.
func parseBool(s string) (value, ok bool) {
	switch strings.ToLower(s) {
	case "0", "no", "false", "off":
		return false, true
	case "1", "yes", "true", "on":
		return true, true
	}
	return false, false
}

func copyOptions(m map[string]string) map[string]string {
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
