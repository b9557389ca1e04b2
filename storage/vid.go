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
