package features

import (
	"fmt"
	"sort"
)

// Guest is a VM whose tools send feature requests: a VM plus the few
// properties a request may change. The caller implements it; the request
// handler calls nothing else.
type Guest interface {
	VM
	// IsTemplate reports whether the VM is a template (a TemplateVM, which
	// in Qubes also has the appvm_default_bootmode property).
	IsTemplate() bool
	// SetMaxMem sets the maxmem property (MiB; 0 disables memory balancing).
	SetMaxMem(mib int) error
	// SetQrexecTimeout sets the qrexec_timeout property (seconds).
	SetQrexecTimeout(seconds int) error
	// DefaultUser returns the default_user property and whether it is set
	// explicitly (false when it has its default value).
	DefaultUser() (user string, set bool)
	// SetDefaultUser sets the default_user property.
	SetDefaultUser(user string) error
}

// Result tells the caller what a feature request did beyond changing
// features and properties.
type Result struct {
	// PostInstall is true when qrexec was advertised for the first time:
	// the caller should now finish the template's setup (Qubes' event
	// template-postinstall).
	PostInstall bool
	// Rejected lists, sorted, the requested keys that are understood but
	// whose values failed their check and were left out (Qubes logs a
	// warning for these). Keys nobody handles are ignored, not listed.
	// Every entry is a valid feature name.
	Rejected []string
	// InvalidKeys lists, sorted, the request's keys that are not valid
	// feature names (ValidName): their entries were dropped before any
	// handler ran, and the rest of the request was applied. The keys are
	// the VM's bytes as sent, so quote them (%q) when printing them.
	InvalidKeys []string
}

// requestSafe is the set of characters a qubes.FeaturesRequest value may
// contain; notifySafe the stricter set of qubes.NotifyTools.
const (
	notifySafe  = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	requestSafe = notifySafe + "-.,_= "
)

// notifyToolsKeys are the only keys qubes.NotifyTools reads.
var notifyToolsKeys = []string{"qrexec", "gui", "gui-emulated", "default-user", "os"}

// ParseFeaturesRequest validates an untrusted qubes.FeaturesRequest (the
// VM's /features-request/ entries, keyed without that prefix). Every value,
// whatever its key, must be strict ASCII and use only letters, digits and
// "-.,_= ", as in Qubes' qubes_features_request (qubes/api/misc.py): one
// bad value refuses the whole request with ErrInvalidRequest. Keys Qubes
// does not check; here an entry whose key is not a valid feature name
// (ValidName) is dropped alone, since keys such as supported-feature.<x>
// become feature names. It returns the valid entries and, sorted, the
// dropped keys.
func ParseFeaturesRequest(untrusted map[string][]byte) (req map[string]string, invalidKeys []string, err error) {
	req = make(map[string]string, len(untrusted))
	for _, key := range sortedKeys(untrusted) {
		v, err := checkRequestValue(key, untrusted[key], requestSafe)
		if err != nil {
			return nil, nil, err
		}
		if ValidName(key) != nil {
			invalidKeys = append(invalidKeys, key)
			continue
		}
		req[key] = v
	}
	return req, invalidKeys, nil
}

// ParseNotifyTools validates an untrusted legacy qubes.NotifyTools request
// (the VM's /qubes-tools/ entries, keyed without that prefix). Only the keys
// qrexec, gui, gui-emulated, default-user and os are read; empty or missing
// ones are skipped; values must be ASCII letters and digits, else the whole
// request is refused with ErrInvalidRequest.
func ParseNotifyTools(untrusted map[string][]byte) (map[string]string, error) {
	req := map[string]string{}
	for _, key := range notifyToolsKeys {
		raw := untrusted[key]
		if len(raw) == 0 {
			continue
		}
		v, err := checkRequestValue(key, raw, notifySafe)
		if err != nil {
			return nil, err
		}
		req[key] = v
	}
	return req, nil
}

func checkRequestValue(key string, raw []byte, safe string) (string, error) {
	for _, c := range raw {
		if c >= 0x80 {
			return "", fmt.Errorf("%w: value of %s is not ASCII", ErrInvalidRequest, key)
		}
	}
	for _, c := range raw {
		if !containsByte(safe, c) {
			return "", fmt.Errorf("%w: value of %s outside safe set %q", ErrInvalidRequest, key, safe)
		}
	}
	return string(raw), nil
}

// HandleFeaturesRequest processes a qubes.FeaturesRequest from vm's tools:
// it validates the untrusted request first (ParseFeaturesRequest) and
// changes nothing if a value is bad; entries whose key is not a valid
// feature name are dropped and listed in Result.InvalidKeys. Then it
// applies every handler to the remaining entries (see the package
// documentation for the keys and their rules). The outcome depends only on
// vm and the request, never on who calls it.
//
// If a change fails (a hook vetoes it, a property setter refuses) the error
// is returned at once; changes made before it stay, as in Qubes, and the
// caller should not save.
func HandleFeaturesRequest(vm Guest, untrusted map[string][]byte) (Result, error) {
	req, invalidKeys, err := ParseFeaturesRequest(untrusted)
	if err != nil {
		return Result{}, err
	}
	res, err := apply(vm, req)
	res.InvalidKeys = invalidKeys
	return res, err
}

// HandleNotifyTools processes a legacy qubes.NotifyTools request: it reads
// the fixed keys with ParseNotifyTools and then takes the same path as
// HandleFeaturesRequest. Other entries are never read, so its
// Result.InvalidKeys is always empty.
func HandleNotifyTools(vm Guest, untrusted map[string][]byte) (Result, error) {
	req, err := ParseNotifyTools(untrusted)
	if err != nil {
		return Result{}, err
	}
	return apply(vm, req)
}

// handler is one of the request handlers (one Qubes extension each).
type handler func(vm Guest, req map[string]string, res *Result) error

// handlers run in this order for every request.
var handlers = []handler{
	coreFeatures,
	windowsFeatures,
	supportedServices,
	supportedFeatures,
	supportedRPC,
	defaultUser,
}

func apply(vm Guest, req map[string]string) (Result, error) {
	var res Result
	for _, h := range handlers {
		if err := h(vm, req, &res); err != nil {
			sort.Strings(res.Rejected)
			return res, fmt.Errorf("features request of %s: %w", vm.Features().Owner(), err)
		}
	}
	sort.Strings(res.Rejected)
	return res, nil
}

// policy says when an accepted key is written.
type policy int

const (
	overwrite  policy = iota // always written
	ifAbsent                 // written only if the VM's own map lacks it
	onlyEnable               // written only to turn it on; never cleared
)

// rule is an accepted key of the core handler: its check, the value to
// store for a raw value that passed it, and its write policy.
type rule struct {
	key    string
	valid  func(string) bool
	store  func(string) any
	policy policy
}

// coreRules are the keys of qubes/ext/core_features.py, in Qubes' order.
// A key absent from the request, or present but empty where Qubes skips
// empty values, is not touched.
var coreRules = []rule{
	{"os-distribution", nonEmpty, asString, overwrite},
	{"os-distribution-like", nonEmpty, asString, overwrite},
	{"os-version", validOSVersion, asString, overwrite},
	{"os-eol", validDate, asString, overwrite},
	{"qubes-agent-version", validAgentVersion, asString, overwrite},
	{"anon-timezone", isOne, asBool, onlyEnable},
}

// toolRules are the 0/1 flags; they are applied after boot modes, with
// qrexec's first appearance reported as PostInstall.
var toolRules = []rule{
	{"qrexec", isBit, asBool, ifAbsent},
	{"gui", isBit, asBool, ifAbsent},
	{"gui-emulated", isBit, asBool, ifAbsent},
	{"qubes-firewall", isBit, asBool, overwrite},
	{"vmexec", isBit, asBool, overwrite},
}

// optionalEmpty are the keys whose empty value Qubes skips silently.
var optionalEmpty = map[string]bool{
	"os-distribution": true, "os-distribution-like": true, "os-version": true, "os-eol": true,
}

// coreFeatures handles what qubes-core-agent and qubes-gui-agent report.
// Template-based VMs are ignored.
func coreFeatures(vm Guest, req map[string]string, res *Result) error {
	if templateBased(vm) {
		return nil
	}
	f := vm.Features()
	if err := applyRules(f, coreRules, req, res); err != nil {
		return err
	}
	if err := bootModes(vm, req, res); err != nil {
		return err
	}
	qrexecBefore := f.Enabled("qrexec")
	if err := applyRules(f, toolRules, req, res); err != nil {
		return err
	}
	if !qrexecBefore && f.Enabled("qrexec") {
		res.PostInstall = true
	}
	return nil
}

func applyRules(f *Features, rules []rule, req map[string]string, res *Result) error {
	for _, r := range rules {
		raw, ok := req[r.key]
		if !ok || raw == "" && optionalEmpty[r.key] {
			continue
		}
		if !r.valid(raw) {
			// "0" for a flag that can only be enabled is not an error,
			// just without effect
			if r.policy != onlyEnable || raw != "0" {
				res.Rejected = append(res.Rejected, r.key)
			}
			continue
		}
		if r.policy == ifAbsent {
			if _, present := f.Get(r.key); present {
				continue
			}
		}
		if err := f.Set(r.key, r.store(raw)); err != nil {
			return err
		}
	}
	return nil
}

// windowsFeatures handles what Qubes Windows Tools report
// (qubes/ext/windows.py). Template-based VMs are ignored.
func windowsFeatures(vm Guest, req map[string]string, res *Result) error {
	if templateBased(vm) {
		return nil
	}
	guestOS := req["os"]
	if guestOS != "Windows" && guestOS != "Linux" {
		if guestOS != "" {
			res.Rejected = append(res.Rejected, "os")
		}
		return nil
	}
	f := vm.Features()
	if err := f.Set("os", guestOS); err != nil {
		return err
	}
	if guestOS != "Windows" || req["qrexec"] != "1" {
		return nil
	}
	if err := f.Set("rpc-clipboard", true); err != nil {
		return err
	}
	if err := vm.SetMaxMem(0); err != nil {
		return fmt.Errorf("set maxmem: %w", err)
	}
	if err := vm.SetQrexecTimeout(6000); err != nil {
		return fmt.Errorf("set qrexec_timeout: %w", err)
	}
	for _, d := range windowsDefaults {
		if _, ok := CheckWithTemplate(vm, d.name); ok {
			continue
		}
		if err := f.Set(d.name, d.value); err != nil {
			return err
		}
	}
	return nil
}

// windowsDefaults are set for Windows with qrexec unless the template chain
// already has them.
var windowsDefaults = []struct {
	name  string
	value any
}{
	{"stubdom-qrexec", true},
	{"audio-model", "ich6"},
	{"timezone", "localtime"},
	{"no-monitor-layout", true},
}

// defaultUser copies a valid default-user into the default_user property
// when that is not set explicitly. Qubes announced this and never built it.
// Template-based VMs are ignored; an invalid name is dropped alone.
func defaultUser(vm Guest, req map[string]string, res *Result) error {
	user, ok := req["default-user"]
	if !ok || templateBased(vm) {
		return nil
	}
	if ValidUser(user) != nil {
		res.Rejected = append(res.Rejected, "default-user")
		return nil
	}
	if _, set := vm.DefaultUser(); set {
		return nil
	}
	if err := vm.SetDefaultUser(user); err != nil {
		return fmt.Errorf("set default_user: %w", err)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func containsByte(s string, c byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return true
		}
	}
	return false
}
