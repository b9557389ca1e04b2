package features

import (
	"errors"
	"fmt"
	"strings"
)

// Errors returned by this package; test for them with errors.Is.
var (
	// ErrNotFound: the feature is not present (Qubes'
	// QubesFeatureNotFoundError, a KeyError).
	ErrNotFound = errors.New("feature not found")
	// ErrInvalidName: a feature name outside [A-Za-z0-9_.-]+ (Qubes'
	// ProtocolError of admin.vm.feature.Set).
	ErrInvalidName = errors.New("invalid feature name")
	// ErrInvalidValue: a feature value that is not printable ASCII, or a
	// value a pre-set hook refuses (Qubes' ProtocolError or QubesValueError).
	ErrInvalidValue = errors.New("invalid feature value")
	// ErrProhibited: a feature the Admin API may not change (Qubes'
	// PermissionDenied).
	ErrProhibited = errors.New("changing this feature is prohibited")
	// ErrInvalidRequest: a feature request from a VM was refused as a whole
	// (Qubes' ProtocolError or UnicodeDecodeError in qubes.FeaturesRequest
	// and qubes.NotifyTools); nothing was changed.
	ErrInvalidRequest = errors.New("invalid feature request")
	// ErrInvalidUser: a user name the default_user property does not allow.
	ErrInvalidUser = errors.New("invalid user name")
)

// prohibited are the features the Admin API may neither set nor remove
// (qubes/ext/admin.py PROHIBITED_FEATURES).
var prohibited = []string{
	"deferred-netvm-original",
	"preload-dispvm",
	"preload-dispvm-completed",
	"preload-dispvm-in-progress",
}

// ValidName checks a feature name the way admin.vm.feature.Set does: one or
// more characters of [A-Za-z0-9_.-].
func ValidName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: expected an argument", ErrInvalidName)
	}
	for i := 0; i < len(name); i++ {
		if !isNameChar(name[i]) {
			return fmt.Errorf("%w: feature name %q contains illegal characters", ErrInvalidName, name)
		}
	}
	return nil
}

// ParseValue checks an untrusted feature value the way admin.vm.feature.Set
// does: strict ASCII, printable characters (0x20-0x7E) only; empty is
// allowed.
func ParseValue(untrusted []byte) (string, error) {
	for _, c := range untrusted {
		if c >= 0x80 {
			return "", fmt.Errorf("%w: feature value contains non-ASCII characters", ErrInvalidValue)
		}
	}
	for _, c := range untrusted {
		if c < 0x20 || c > 0x7e {
			return "", fmt.Errorf("%w: feature value contains illegal characters", ErrInvalidValue)
		}
	}
	return string(untrusted), nil
}

// CheckAdminChange refuses, with ErrProhibited, the features an Admin API
// client may not set or remove.
func CheckAdminChange(name string) error {
	for _, p := range prohibited {
		if name == p {
			return fmt.Errorf("%w: %s", ErrProhibited, name)
		}
	}
	return nil
}

// ValidUser checks a user name for the default_user property. It allows
// what Qubes' property setter allows, [A-Za-z0-9_+,.-] (no colon, space or
// quotes), and in addition refuses what is never a safe account name even
// in that set: the empty name, "." and "..", a leading '-' (it would read
// as an option) and names longer than 32 bytes (useradd's limit).
func ValidUser(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidUser)
	case len(name) > 32:
		return fmt.Errorf("%w: longer than 32 characters", ErrInvalidUser)
	case name == "." || name == "..":
		return fmt.Errorf("%w: %q", ErrInvalidUser, name)
	case name[0] == '-':
		return fmt.Errorf("%w: starts with '-'", ErrInvalidUser)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isAlnum(c) && !strings.ContainsRune("_-+,.", rune(c)) {
			return fmt.Errorf("%w: only letters, digits and _-+,. are allowed", ErrInvalidUser)
		}
	}
	return nil
}

// CheckServiceName is a pre-set Hook that refuses service.<name> features
// QubesDB cannot hold (qubes/ext/services.py): the name must be non-empty,
// have no '/', not be "." or "..", and be at most 48 bytes unless it starts
// with "app-dispvm.". Subscribe it with
//
//	hooks.On(features.KindPreSet, "service.*", features.CheckServiceName)
func CheckServiceName(e Event) error {
	service, ok := strings.CutPrefix(e.Feature, servicePrefix)
	if !ok {
		return nil
	}
	switch {
	case service == "":
		return fmt.Errorf("%w: service name cannot be empty", ErrInvalidValue)
	case strings.Contains(service, "/"):
		return fmt.Errorf("%w: service name cannot contain a slash", ErrInvalidValue)
	case service == "." || service == "..":
		return fmt.Errorf("%w: service name cannot be \".\" or \"..\"", ErrInvalidValue)
	case len(service) > maxServiceName && !strings.HasPrefix(service, "app-dispvm."):
		return fmt.Errorf("%w: service name must not exceed %d bytes", ErrInvalidValue, maxServiceName)
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isNameChar(c byte) bool {
	return isAlnum(c) || c == '_' || c == '.' || c == '-'
}
