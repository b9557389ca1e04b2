package storage

import (
	"fmt"
	"strings"
)

// ValidateVMName checks a VM name as Qubes does: it starts with a letter,
// has at most 31 characters of A-Z a-z 0-9 _ . -, is not "none",
// "default" or "Domain-0" and does not end with "-dm". Errors wrap
// ErrInvalidConfig.
func ValidateVMName(name string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: VM name %q %s", ErrInvalidConfig, name, why)
	}
	switch {
	case name == "":
		return bad("is empty")
	case len(name) > 31:
		return bad("must be shorter than 32 characters")
	case !isLetter(name[0]):
		return bad("must start with a letter")
	case !allOf(name, isNameByte):
		return bad("contains illegal characters")
	case name == "none" || name == "default" || name == "Domain-0":
		return bad("is reserved")
	case strings.HasSuffix(name, "-dm"):
		return bad("cannot end with -dm")
	}
	return nil
}

// ValidateVolumeName checks a volume name (root, private, volatile, ...):
// a letter, then at most 30 letters, digits or underscores. Hyphens and
// dots are refused because the file drivers append "-dirty.img",
// "-cow.img" and ".img" to it. Errors wrap ErrInvalidConfig.
func ValidateVolumeName(name string) error {
	if name == "" || len(name) > 31 || !isLetter(name[0]) ||
		!allOf(name, func(c byte) bool { return isLetter(c) || isDigit(c) || c == '_' }) {
		return fmt.Errorf("%w: volume name %q: want a letter followed by up to 30 letters, digits or underscores", ErrInvalidConfig, name)
	}
	return nil
}

// ValidatePoolName checks a pool name as the Admin API's admin.pool.Add
// does: one or more of A-Z a-z 0-9 . _ -. Errors wrap ErrInvalidConfig.
func ValidatePoolName(name string) error {
	if name == "" || !allOf(name, isNameByte) {
		return fmt.Errorf("%w: pool name %q: want one or more of A-Z a-z 0-9 . _ -", ErrInvalidConfig, name)
	}
	return nil
}

// ValidateRevisionID checks the characters of a revision id as the Qubes
// Admin API does: non-empty, only A-Z a-z 0-9 : . _ -. Errors wrap
// ErrInvalidConfig; whether the revision exists is the volume's business.
func ValidateRevisionID(id string) error {
	if id == "" || len(id) > 64 || !allOf(id, func(c byte) bool { return isNameByte(c) || c == ':' }) {
		return fmt.Errorf("%w: revision id %q: want up to 64 characters of A-Z a-z 0-9 : . _ -", ErrInvalidConfig, id)
	}
	return nil
}

func isLetter(c byte) bool   { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool    { return '0' <= c && c <= '9' }
func isNameByte(c byte) bool { return isLetter(c) || isDigit(c) || c == '_' || c == '.' || c == '-' }

func allOf(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return true
}

// ParsePropertyBool parses a boolean as Qubes' qubes.property.bool does
// (the Admin API's Set calls and qvm-* tools): 0/no/false/off and
// 1/yes/true/on, in any case. Other text wraps ErrInvalidConfig.
func ParsePropertyBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "0", "no", "false", "off":
		return false, nil
	case "1", "yes", "true", "on":
		return true, nil
	}
	return false, fmt.Errorf("%w: %q is not a boolean (yes/no, true/false, on/off, 1/0)", ErrInvalidConfig, s)
}
