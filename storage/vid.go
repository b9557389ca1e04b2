package storage

import (
	"fmt"
	"strings"
)

// FileVIDDirs returns the first parts of a vid of the file drivers (file
// and file-reflink), as Qubes' dir_path_prefix of AppVMs (and every other
// kind of VM) and of TemplateVMs: "appvms", "vm-templates".
func FileVIDDirs() []string { return []string{fileVIDApp, fileVIDTemplate} }

const (
	fileVIDApp      = "appvms"
	fileVIDTemplate = "vm-templates"
)

// FileVID is a parsed vid of the file drivers: "appvms/VM/VOLUME" or
// "vm-templates/VM/VOLUME", the path of the volume's images below the
// pool's directory.
type FileVID struct {
	Dir    string // "appvms" or "vm-templates"
	VM     string // the VM's name
	Volume string // the volume's name
}

// String returns the vid.
func (v FileVID) String() string { return v.Dir + "/" + v.VM + "/" + v.Volume }

// ParseFileVID parses a vid of the file drivers. The VM's and the
// volume's names are checked with ValidateVMName and ValidateVolumeName,
// so a vid that parses is a safe relative path of exactly three parts: no
// "..", no empty part, no NUL, not absolute. Errors wrap ErrInvalidConfig
// and say what is wrong. The CLI, file-reflink and file share it.
func ParseFileVID(vid string) (FileVID, error) {
	bad := func(why string) (FileVID, error) {
		return FileVID{}, fmt.Errorf("%w: vid %q %s; want appvms/VM/VOLUME or vm-templates/VM/VOLUME", ErrInvalidConfig, vid, why)
	}
	if vid == "" {
		return bad("is empty")
	}
	if strings.ContainsRune(vid, 0) {
		return bad("contains a NUL byte")
	}
	if strings.HasPrefix(vid, "/") {
		return bad("starts with /")
	}
	parts := strings.Split(vid, "/")
	for _, p := range parts {
		switch p {
		case "":
			return bad("has an empty part")
		case ".", "..":
			return bad("has a " + p + " part")
		}
	}
	if len(parts) != 3 {
		return bad("does not have three parts")
	}
	if parts[0] != fileVIDApp && parts[0] != fileVIDTemplate {
		return bad("does not start with appvms/ or vm-templates/")
	}
	if err := ValidateVMName(parts[1]); err != nil {
		return FileVID{}, fmt.Errorf("vid %q: %w", vid, err)
	}
	if err := ValidateVolumeName(parts[2]); err != nil {
		return FileVID{}, fmt.Errorf("vid %q: %w", vid, err)
	}
	return FileVID{Dir: parts[0], VM: parts[1], Volume: parts[2]}, nil
}

// LVMVID is a parsed vid of the lvm_thin driver: "VG/vm-VM-VOLUME", the
// volume group and the name of the volume's logical volume, as Qubes'
// ThinPool.init_volume makes it.
type LVMVID struct {
	VG     string // the volume group
	VM     string // the VM's name
	Volume string // the volume's name
}

// String returns the vid.
func (v LVMVID) String() string { return v.VG + "/" + v.LV() }

// LV returns the name of the volume's committed logical volume,
// "vm-VM-VOLUME".
func (v LVMVID) LV() string { return "vm-" + v.VM + "-" + v.Volume }

// ParseLVMVID parses a vid of the lvm_thin driver, "VG/vm-VM-VOLUME". A
// VM name may contain '-' and a volume name may not, so the logical
// volume's name is split at its last '-'. The VM's and the volume's names
// are checked with ValidateVMName and ValidateVolumeName, the volume
// group's name with LVM's rules (A-Z a-z 0-9 + _ . -, not starting with
// '-', not "." or ".."). Errors wrap ErrInvalidConfig.
func ParseLVMVID(vid string) (LVMVID, error) {
	bad := func(why string) (LVMVID, error) {
		return LVMVID{}, fmt.Errorf("%w: vid %q %s; want VG/vm-VM-VOLUME", ErrInvalidConfig, vid, why)
	}
	vg, lv, ok := strings.Cut(vid, "/")
	if !ok {
		return bad("has no /")
	}
	if err := ValidateVGName(vg); err != nil {
		return LVMVID{}, fmt.Errorf("vid %q: %w", vid, err)
	}
	rest, ok := strings.CutPrefix(lv, "vm-")
	if !ok {
		return bad("does not name a logical volume vm-...")
	}
	i := strings.LastIndexByte(rest, '-')
	if i < 0 {
		return bad("has no -VOLUME")
	}
	vm, vol := rest[:i], rest[i+1:]
	if err := ValidateVMName(vm); err != nil {
		return LVMVID{}, fmt.Errorf("vid %q: %w", vid, err)
	}
	if err := ValidateVolumeName(vol); err != nil {
		return LVMVID{}, fmt.Errorf("vid %q: %w", vid, err)
	}
	return LVMVID{VG: vg, VM: vm, Volume: vol}, nil
}

// ValidateVGName checks an LVM volume group's name as LVM does: 1 to 127
// characters of A-Z a-z 0-9 + _ . -, not starting with '-', not "." or
// "..". Errors wrap ErrInvalidConfig.
func ValidateVGName(name string) error {
	if name == "" || len(name) > 127 || name[0] == '-' || name == "." || name == ".." ||
		!allOf(name, func(c byte) bool { return isNameByte(c) || c == '+' }) {
		return fmt.Errorf("%w: volume group name %q: want up to 127 of A-Z a-z 0-9 + _ . -, not starting with -", ErrInvalidConfig, name)
	}
	return nil
}

// ParseVID parses a vid of any of vmpool's drivers: a file drivers' vid
// (see ParseFileVID) or an lvm_thin one (see ParseLVMVID), and returns
// the VM's and the volume's names. Callers that do not know the pool's
// driver (the CLI) use it; each driver checks its own form.
func ParseVID(vid string) (vm, volume string, err error) {
	f, ferr := ParseFileVID(vid)
	if ferr == nil {
		return f.VM, f.Volume, nil
	}
	if _, lv, ok := strings.Cut(vid, "/"); !ok || !strings.HasPrefix(lv, "vm-") {
		return "", "", ferr // not an lvm_thin vid: say what a file vid lacks
	}
	l, err := ParseLVMVID(vid)
	if err != nil {
		return "", "", err
	}
	return l.VM, l.Volume, nil
}
