package devices

import (
	"fmt"
	"strings"
)

// Interface is one interface of a device in Qubes' 7-character encoding: a
// class letter (p pci, u usb, b block, m mic; '?' unknown) and six
// characters of class, subclass and programming interface in hex, '*'
// where unknown. It is used for device ids and for deny lists.
type Interface struct{ code string }

var unknownInterface = Interface{"?******"}

// NewInterface returns the interface of a device of the given class with
// up to six hex digits (or '*') of class code, padded with '*'.
func NewInterface(class, code string) (Interface, error) {
	if len(code) > 6 {
		return Interface{}, fmt.Errorf("%w: interface %q longer than 6 characters", ErrProtocol, code)
	}
	code += strings.Repeat("*", 6-len(code))
	for i := 0; i < len(code); i++ {
		if !isHex(code[i]) && code[i] != '*' {
			return Interface{}, fmt.Errorf("%w: invalid characters in interface encoding %q", ErrProtocol, code)
		}
	}
	if class == "" || class[0] < 'a' || class[0] > 'z' {
		return Interface{}, fmt.Errorf("%w: invalid device class %q for an interface", ErrProtocol, class)
	}
	return Interface{class[:1] + code}, nil
}

// ParseInterfaces splits Qubes' concatenated interface encodings (a
// multiple of 7 characters, as serialised).
func ParseInterfaces(s string) ([]Interface, error) {
	if len(s)%7 != 0 {
		return nil, fmt.Errorf("%w: interfaces %q: length %d is not a multiple of 7", ErrProtocol, s, len(s))
	}
	out := make([]Interface, 0, len(s)/7)
	for i := 0; i < len(s); i += 7 {
		out = append(out, Interface{s[i : i+7]})
	}
	return out, nil
}

// String returns the 7-character encoding.
func (i Interface) String() string {
	if i.code == "" {
		return unknownInterface.code
	}
	return i.code
}

// Class returns the bus the interface's first letter names, "" if none.
func (i Interface) Class() string {
	switch i.String()[0] {
	case 'p':
		return "pci"
	case 'u':
		return "usb"
	case 'b':
		return "block"
	case 'm':
		return "mic"
	}
	return ""
}

// Describe returns a generic name for the interface ("Block Device", "USB
// device", "Microphone"), or its encoding. Qubes also looks PCI and USB
// classes up in /usr/share/hwdata; we do not.
func (i Interface) Describe() string {
	switch c := i.Class(); c {
	case "block":
		return "Block Device"
	case "usb", "pci":
		return strings.ToUpper(c) + " device"
	case "mic":
		return "Microphone"
	}
	return i.String()
}

// categories are Qubes' DeviceCategory patterns, in its order.
var categories = []struct {
	name     string
	patterns []string
}{
	{"Other", []string{"*******"}},
	{"Network", []string{"u02****", "p0703**", "p02****", "ue0****"}},
	{"Keyboard", []string{"u03**01", "p0900**"}},
	{"Mouse", []string{"u03**02", "p0902**"}},
	{"Input", []string{"u03****", "p09****"}},
	{"Printer", []string{"u07****"}},
	{"Camera", []string{"p0903**", "u06****", "u0e****"}},
	{"Microphone", []string{"m******"}},
	{"Audio", []string{"p0403**", "p0401**", "p0408**", "u01****", "m******"}},
	{"Multimedia", []string{"u10****", "p03****", "p04****"}},
	{"USB_Storage", []string{"u08****"}},
	{"Block_Storage", []string{"b******"}},
	{"Storage", []string{"b******", "u08****", "p01****"}},
	{"Bluetooth", []string{"ue00101", "p0d11**"}},
	{"Smart_Card_Readers", []string{"u0b****"}},
	{"Display", []string{"p0300**", "p0380**"}},
	{"Memory", []string{"p05****"}},
	{"PCI_Bridge", []string{"p06****"}},
	{"Docking_Station", []string{"p0a****"}},
	{"Processor", []string{"p0b****", "p40****"}},
	{"PCI_Serial_Bus", []string{"p0c****"}},
	{"PCI_USB", []string{"p0c03**"}},
}

// Category returns the name of the category the interface falls in
// ("Mouse", "Block_Storage", ...; "Other" when none fits): the pattern
// with the most exactly matching characters wins, as in Qubes.
func (i Interface) Category() string {
	code := i.String()
	best, bestScore := "Other", 0
	if len(code) != 7 {
		return best
	}
	for _, c := range categories {
		for _, p := range c.patterns {
			score := 0
			for k := 0; k < 7; k++ {
				if code[k] == p[k] {
					score++
				} else if p[k] != '*' {
					score = -1
					break
				}
			}
			if score > bestScore {
				best, bestScore = c.name, score
			}
		}
	}
	return best
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
