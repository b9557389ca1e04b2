package devices

import (
	"bytes"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fields splits a serialisation into its space-separated fields, sorted,
// after protecting the one value with spaces the Qubes tests use (they
// compare sets of fields the same way).
func fields(b []byte) []string {
	s := strings.ReplaceAll(string(b), "Some untrusted garbage", "Some_untrusted_garbage")
	f := strings.Split(s, " ")
	sort.Strings(f)
	return f
}

func mustInterfaces(t *testing.T, s string) []Interface {
	t.Helper()
	ifs, err := ParseInterfaces(s)
	require.NoError(t, err)
	return ifs
}

// TestDeviceInfo reproduces TC_02_DeviceInfo.
func TestDeviceInfo(t *testing.T) {
	port := Port{Backend: "vm", ID: "1-1.1.1", Class: "bus"}
	props := func(t *testing.T) Properties {
		return Properties{
			Vendor: "ITL", Product: "Qubes", Manufacturer: "", Name: "Some untrusted garbage",
			Interfaces: mustInterfaces(t, " ******u03**01"),
			Data:       map[string]string{"additional_info": "", "date": "06.12.23"},
		}
	}
	const base = "device_id='0000:0000::?******' port_id='1-1.1.1' product='Qubes' " +
		"vendor='ITL' name='Some untrusted garbage' devclass='bus' " +
		"backend_domain='vm' interfaces=' ******u03**01' " +
		"_additional_info='' _date='06.12.23'"

	t.Run("010_serialize", func(t *testing.T) {
		got, err := StaticDevice(port, UnknownDeviceID, props(t)).Serialize()
		require.NoError(t, err)
		assert.Equal(t, fields([]byte(base)), fields(got))
	})
	t.Run("011_serialize_with_parent", func(t *testing.T) {
		p := props(t)
		p.Parent = &Port{Backend: "vm", ID: "1-1.1", Class: "pci"}
		got, err := StaticDevice(port, UnknownDeviceID, p).Serialize()
		require.NoError(t, err)
		assert.Equal(t, fields([]byte(base+" parent_port_id='1-1.1' parent_devclass='pci'")), fields(got))
	})
	t.Run("012_invalid_serialize", func(t *testing.T) {
		d := StaticDevice(Port{Backend: "vm", ID: "1-1.1.1", Class: "testclass"}, "", Properties{
			Vendor: "malicious", Product: "suspicious", Name: "Some='untrusted' garbage=\"5%\n\" ?",
		})
		_, err := d.Serialize()
		assert.ErrorIs(t, err, ErrProtocol)
		_, err = StaticDevice(port, "", Properties{Data: map[string]string{"bad key": "x"}}).Serialize()
		assert.ErrorIs(t, err, ErrProtocol)
		_, err = StaticDevice(port, "", Properties{Vendor: "ünicode"}).Serialize()
		assert.ErrorIs(t, err, ErrProtocol)
		_, err = StaticDevice(port, "", Properties{Serial: "c2VyaWFs="}).Serialize()
		assert.ErrorIs(t, err, ErrProtocol, "a value ending with '=' would be misread")
	})
	t.Run("020_deserialize", func(t *testing.T) {
		in := "1-1.1.1 " +
			"device_id='0000:0000::?******' port_id='1-1.1.1' product='Qubes' " +
			"vendor='ITL' name='Some untrusted garbage' devclass='bus' " +
			"backend_domain='vm' interfaces=' ******u03**01' " +
			"_additional_info='' _date='06.12.23' " +
			"parent_port_id='1-1.1' parent_devclass='bus'"
		d, err := ParseDevice([]byte(in), "vm", "")
		require.NoError(t, err)
		assert.False(t, d.Unknown())
		assert.Equal(t, port, d.Port())
		assert.Equal(t, "ITL", d.Vendor())
		assert.Equal(t, "Qubes", d.Product())
		assert.Equal(t, "unknown", d.Manufacturer())
		assert.Equal(t, "Some untrusted garbage", d.Name())
		assert.Equal(t, "unknown", d.Serial())
		assert.Equal(t, mustInterfaces(t, " ******u03**01"), d.Interfaces())
		assert.Equal(t, UnknownDeviceID, d.DeviceID())
		assert.Equal(t, map[string]string{"additional_info": "", "date": "06.12.23"}, d.Data())
		parent, ok := d.Parent()
		assert.True(t, ok)
		assert.Equal(t, Port{Backend: "vm", ID: "1-1.1", Class: "bus"}, parent)
		assert.Equal(t, "Keyboard: ITL Qubes", d.Description())
	})
	t.Run("021_invalid_deserialize", func(t *testing.T) {
		in := "1-1.1.1 " +
			"manufacturer='unknown' device_id='0000:0000::?******' " +
			"serial='unknown' port_id='1-1.1.1' product='Qubes' " +
			"vendor='ITL' name='Some untrusted garbage' devclass='bus' " +
			"backend_domain='vm' interfaces=' ******u03**01' " +
			"_additional_info='' _date='06.12.23' " +
			"parent_ident='1-1.1' parent_devclass='None' add'tional='info'"
		d, err := ParseDevice([]byte(in), "vm", "")
		assert.ErrorIs(t, err, ErrProtocol)
		assert.True(t, d.Unknown())
		assert.Equal(t, Port{Backend: "vm", ID: "1-1.1.1"}, d.Port())
		assert.Equal(t, "peripheral", d.Port().DevClass())
	})
	t.Run("021_invalid_deserialize/contradiction", func(t *testing.T) {
		for _, in := range []string{
			"1-1 backend_domain='sys-usb' port_id='1-1'",
			"1-1 port_id='1-2'",
			"1-1:dev1 device_id='dev2'",
			"1-1 interfaces='u03**0'",
			"1-1 parent_port_id='1'",
		} {
			d, err := ParseDevice([]byte(in), "vm", "usb")
			assert.ErrorIs(t, err, ErrProtocol, in)
			assert.True(t, d.Unknown(), in)
		}
		_, err := ParseDevice([]byte("1-1 devclass='pci'"), "vm", "usb")
		assert.ErrorIs(t, err, ErrUnexpectedProperty)
		d, err := ParseDevice([]byte("bad/port vendor='x'"), "vm", "usb")
		assert.ErrorIs(t, err, ErrProtocol)
		assert.Equal(t, Device{}, d, "an invalid head gives no device")
	})
	t.Run("030_serialize_and_deserialize", func(t *testing.T) {
		orig := StaticDevice(Port{Backend: "vm", ID: "1-1.1.1", Class: "testclass"}, "", Properties{
			Vendor: "malicious", Product: "suspicious", Name: `Some='untrusted' garbage="5%\n" ?`,
			Interfaces: mustInterfaces(t, " 112233&012345"),
			Data:       map[string]string{"additional_info": "and='more'", "date": "06.12.23"},
		})
		ser, err := orig.Serialize()
		require.NoError(t, err)
		got, err := ParseDevice(append([]byte("1-1.1.1 "), ser...), "vm", "")
		require.NoError(t, err)
		assert.Equal(t, orig.Port(), got.Port())
		assert.Equal(t, orig.Vendor(), got.Vendor())
		assert.Equal(t, orig.Product(), got.Product())
		assert.Equal(t, orig.Manufacturer(), got.Manufacturer())
		assert.Equal(t, orig.Name(), got.Name())
		assert.Equal(t, orig.Serial(), got.Serial())
		assert.Equal(t, orig.Data(), got.Data())
		assert.Equal(t, orig.Interfaces(), got.Interfaces())
	})
}

// TestDeviceAssignment reproduces TC_03_DeviceAssignment.
func TestDeviceAssignment(t *testing.T) {
	dev := VirtualDevice{Port: Port{Backend: "vm", ID: "1-1.1.1", Class: "bus"}}
	const base = "device_id='*' port_id='1-1.1.1' devclass='bus' backend_domain='vm'"
	for _, tc := range []struct {
		name string
		a    Assignment
		want string
	}{
		{"010_serialize", Assignment{Device: dev}, base + " mode='manual'"},
		{"011_serialize_required", Assignment{Device: dev, Mode: Required}, base + " mode='required'"},
		{"012_serialize_fronted", Assignment{Device: dev, Frontend: "vm"}, base + " frontend_domain='vm' mode='manual'"},
		{"013_serialize_options", Assignment{Device: dev, Options: map[string]string{"read-only": "yes"}},
			base + " _read-only='yes' mode='manual'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.a.Serialize()
			require.NoError(t, err)
			assert.Equal(t, fields([]byte(tc.want)), fields(got))
		})
	}
	t.Run("014_invalid_serialize", func(t *testing.T) {
		_, err := Assignment{Device: dev, Options: map[string]string{"read'only": "yes"}}.Serialize()
		assert.ErrorIs(t, err, ErrProtocol)
	})

	const full = "device_id='*' port_id='1-1.1.1' frontend_domain='vm' " +
		"devclass='bus' backend_domain='vm' mode='auto-attach' "
	t.Run("020_deserialize", func(t *testing.T) {
		a, err := ParseAssignment([]byte(full+"_read-only='yes'"), dev)
		require.NoError(t, err)
		assert.Equal(t, dev.Port, a.Device.Port)
		assert.Equal(t, Any, a.Device.ID())
		assert.Equal(t, "vm", a.Frontend)
		assert.True(t, a.AttachAutomatically())
		assert.False(t, a.Required())
		assert.Equal(t, map[string]string{"read-only": "yes"}, a.Options)
	})
	for _, tc := range []struct{ name, in string }{
		{"021_invalid_deserialize", full + "_read'only='yes'"},
		{"022_invalid_deserialize_2", full + "read-only='yes'"},
		{"022_invalid_deserialize_2/mode", "mode='always'"},
		{"022_invalid_deserialize_2/backend", "backend_domain='dom0' mode='required'"},
		{"022_invalid_deserialize_2/unterminated", "mode='required"},
		{"022_invalid_deserialize_2/no_pair", "garbage"},
		{"022_invalid_deserialize_2/non_ascii", "mode='required' _x='\xff'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAssignment([]byte(tc.in), dev)
			assert.ErrorIs(t, err, ErrProtocol)
		})
	}
	t.Run("030_serialize_and_deserialize", func(t *testing.T) {
		want := Assignment{Device: dev, Frontend: "vm", Mode: Auto, Options: map[string]string{"read-only": "yes", "q": `it's`}}
		ser, err := want.Serialize()
		require.NoError(t, err)
		got, err := ParseAssignment(ser, dev)
		require.NoError(t, err)
		want.Device.DeviceID = Any
		assert.Equal(t, want, got)
	})
}

func TestInterfaces(t *testing.T) {
	for _, tc := range []struct{ code, category string }{
		{"u03**01", "Keyboard"},
		{"u03**02", "Mouse"},
		{"u030000", "Input"},
		{"b******", "Block_Storage"},
		{"p020000", "Network"},
		{"p0c0330", "PCI_USB"},
		{"?******", "Other"},
		{"m******", "Microphone"},
	} {
		ifs, err := ParseInterfaces(tc.code)
		require.NoError(t, err)
		assert.Equal(t, tc.category, ifs[0].Category(), tc.code)
	}
	i, err := NewInterface("block", "")
	require.NoError(t, err)
	assert.Equal(t, "b******", i.String())
	assert.Equal(t, "Block Device", i.Describe())
	_, err = NewInterface("usb", "03zz01")
	assert.ErrorIs(t, err, ErrProtocol)
	_, err = NewInterface("usb", "0301011")
	assert.ErrorIs(t, err, ErrProtocol)
	_, err = ParseInterfaces("u03**0")
	assert.ErrorIs(t, err, ErrProtocol)

	d := StaticDevice(Port{Backend: "dom0", ID: "loop0", Class: "block"}, "", Properties{Interfaces: []Interface{i}, Name: "/tmp/disk.img"})
	assert.Equal(t, "Block_Storage: unknown vendor /tmp/disk.img", d.Description())
	d = UnknownDevice(Port{Backend: "dom0", ID: "x", Class: "usb"}, "")
	assert.Equal(t, "?******: unknown vendor unknown usb device", d.Description())
}

// FuzzParseDevice feeds untrusted lines to ParseDevice: it must not panic,
// must return the UnknownDevice or a device of the asked backend and
// class, and what it returns must serialise and parse back to the same.
func FuzzParseDevice(f *testing.F) {
	for _, s := range []string{
		"1-1.1.1 device_id='0000:0000::?******' port_id='1-1.1.1' product='Qubes' vendor='ITL' name='Some untrusted garbage' devclass='bus' backend_domain='vm' interfaces=' ******u03**01' _additional_info='' _date='06.12.23' parent_port_id='1-1.1' parent_devclass='bus'",
		"1-1.1.1 name='Some=\\'untrusted\\' garbage=\"5%\\n\" ?' _a='and=\\'more\\''",
		"loop0:dev x='\\' y='",
		"sda add'tional='info'",
		"_ a='b'",
		"",
	} {
		f.Add([]byte(s), "bus")
	}
	f.Fuzz(func(t *testing.T, data []byte, class string) {
		d, err := ParseDevice(data, "vm", class)
		if d.Port().Backend != "" && d.Port().Backend != "vm" {
			t.Fatalf("device of backend %q", d.Port().Backend)
		}
		if err != nil {
			return
		}
		if class != "" && d.Port().DevClass() != class {
			t.Fatalf("class %q, asked %q", d.Port().DevClass(), class)
		}
		ser, err := d.Serialize()
		if err != nil {
			t.Fatalf("parsed device does not serialise: %v", err)
		}
		again, err := ParseDevice(append([]byte(d.Port().ID+" "), ser...), "vm", class)
		if err != nil {
			t.Fatalf("round trip of %q: %v", ser, err)
		}
		ser2, _ := again.Serialize()
		if !bytes.Equal(ser, ser2) {
			t.Fatalf("round trip changed %q to %q", ser, ser2)
		}
	})
}

// FuzzParseAssignment does the same for assignments.
func FuzzParseAssignment(f *testing.F) {
	for _, s := range []string{
		"device_id='*' port_id='1-1.1.1' frontend_domain='vm' devclass='bus' backend_domain='vm' mode='auto-attach' _read-only='yes'",
		"mode='required' _q='it\\'s'",
		"read-only='yes'",
		"x",
	} {
		f.Add([]byte(s))
	}
	expected := VirtualDevice{Port: Port{Backend: "vm", ID: "1-1", Class: "bus"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseAssignment(data, expected)
		if err != nil {
			return
		}
		if !a.Device.Port.equal(expected.Port) {
			t.Fatalf("assignment of %v, expected %v", a.Device, expected)
		}
		ser, err := a.Serialize()
		if err != nil {
			t.Fatalf("parsed assignment does not serialise: %v", err)
		}
		again, err := ParseAssignment(ser, expected)
		if err != nil {
			t.Fatalf("round trip of %q: %v", ser, err)
		}
		ser2, _ := again.Serialize()
		if !bytes.Equal(ser, ser2) {
			t.Fatalf("round trip changed %q to %q", ser, ser2)
		}
	})
}
