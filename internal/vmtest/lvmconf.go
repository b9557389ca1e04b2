package vmtest

import (
	"fmt"
	"strconv"
	"strings"
)

// lvmSetting is one "name = value" line of lvm.conf; value is an int or
// a string.
type lvmSetting struct {
	name  string
	value any
}

// lvmSection is one "section { ... }" of lvm.conf.
type lvmSection struct {
	name     string
	settings []lvmSetting
}

// guestLVMConf is the lvm.conf of the VM, which has no udev, no lvmpolld
// and no dmeventd: libdevmapper makes the /dev/mapper nodes and /dev/VG/LV
// links itself, no devices file restricts the PVs to the host's, and thin
// pools are not monitored (nothing would extend them).
var guestLVMConf = []lvmSection{
	{"devices", []lvmSetting{
		{"obtain_device_list_from_udev", 0},
		{"external_device_info_source", "none"},
		{"use_devicesfile", 0},
	}},
	{"activation", []lvmSetting{
		{"udev_sync", 0},
		{"udev_rules", 0},
		{"verify_udev_operations", 0},
		{"monitoring", 0},
	}},
	{"global", []lvmSetting{
		{"use_lvmpolld", 0},
	}},
}

// formatLVMConf renders sections in lvm.conf syntax. Names must be
// identifiers ([a-z0-9_]); strings are quoted with '"' and '\' escaped.
func formatLVMConf(sections []lvmSection) (string, error) {
	var b strings.Builder
	b.WriteString("# written by vmpool's internal/vmtest: this VM has no udev, lvmpolld or dmeventd\n")
	for _, s := range sections {
		if !lvmIdent(s.name) {
			return "", fmt.Errorf("lvm.conf: bad section name %q", s.name)
		}
		fmt.Fprintf(&b, "%s {\n", s.name)
		for _, st := range s.settings {
			if !lvmIdent(st.name) {
				return "", fmt.Errorf("lvm.conf: bad setting name %q in %s", st.name, s.name)
			}
			var v string
			switch x := st.value.(type) {
			case int:
				v = strconv.Itoa(x)
			case string:
				v = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(x) + `"`
				if strings.ContainsAny(x, "\n\x00") {
					return "", fmt.Errorf("lvm.conf: %s/%s: a value cannot hold a newline or NUL", s.name, st.name)
				}
			default:
				return "", fmt.Errorf("lvm.conf: %s/%s: unsupported value type %T", s.name, st.name, st.value)
			}
			fmt.Fprintf(&b, "\t%s = %s\n", st.name, v)
		}
		b.WriteString("}\n")
	}
	return b.String(), nil
}

func lvmIdent(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}
