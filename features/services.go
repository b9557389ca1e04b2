package features

import "strings"

const (
	servicePrefix  = "service."
	maxServiceName = 48
	// ServiceDBPrefix is the QubesDB directory that holds a VM's services.
	ServiceDBPrefix = "/qubes-service/"
)

// supportedServices syncs supported-service.* (qubes/ext/services.py);
// template-based VMs are ignored. Advertising apparmor also turns the
// apparmor feature on if it is absent; withdrawing it deletes apparmor if
// that is "1".
func supportedServices(vm Guest, req map[string]string, _ *Result) error {
	if templateBased(vm) {
		return nil
	}
	f := vm.Features()
	added, removed, err := syncPrefix(f, req, "supported-service.")
	if err != nil {
		return err
	}
	const apparmor = "supported-service.apparmor"
	if contains(added, apparmor) {
		if _, present := f.Get("apparmor"); !present {
			if err := f.Set("apparmor", true); err != nil {
				return err
			}
		}
	}
	if contains(removed, apparmor) {
		if v, _ := f.Get("apparmor"); v == "1" {
			return f.Delete("apparmor")
		}
	}
	return nil
}

// supportedFeatures syncs supported-feature.*; template-based VMs are
// ignored (qubes/ext/supported_features.py).
func supportedFeatures(vm Guest, req map[string]string, _ *Result) error {
	if templateBased(vm) {
		return nil
	}
	_, _, err := syncPrefix(vm.Features(), req, "supported-feature.")
	return err
}

// supportedRPC syncs supported-rpc.*; unlike the others it also applies
// to template-based VMs, as in Qubes.
func supportedRPC(vm Guest, req map[string]string, _ *Result) error {
	_, _, err := syncPrefix(vm.Features(), req, "supported-rpc.")
	return err
}

// syncPrefix makes the set of true prefix.* features equal to the set of
// prefix.* keys the request advertises with value "1": new ones are set to
// true, ones no longer advertised are deleted, ones already true are left
// as they are. A request advertising none changes nothing (so that an
// empty or manual request does not wipe the list).
func syncPrefix(f *Features, req map[string]string, prefix string) (added, removed []string, err error) {
	advertised := map[string]bool{}
	for k, v := range req {
		if strings.HasPrefix(k, prefix) && v == "1" {
			advertised[k] = true
		}
	}
	if len(advertised) == 0 {
		return nil, nil, nil
	}
	current := map[string]bool{}
	for _, k := range f.Names() {
		if strings.HasPrefix(k, prefix) && f.Enabled(k) {
			current[k] = true
		}
	}
	for _, k := range sortedKeys(advertised) {
		if !current[k] {
			if err := f.Set(k, true); err != nil {
				return added, removed, err
			}
			added = append(added, k)
		}
	}
	for _, k := range sortedKeys(current) {
		if !advertised[k] {
			if err := f.Delete(k); err != nil {
				return added, removed, err
			}
			removed = append(removed, k)
		}
	}
	return added, removed, nil
}

// ServiceEntry maps a change of the feature service.<name> to the QubesDB
// entry a running VM sees: path /qubes-service/<name> and value "1" or
// "0" (any true value is "1"). When deleted is true the entry is to be
// removed and value is "". ok is false for features that are not services,
// and for service names QubesDB cannot hold (over 48 bytes: those are only
// app-dispvm.* services, which Qubes exports by hash instead).
func ServiceEntry(feature, value string, deleted bool) (path, qdbValue string, ok bool) {
	service, isService := strings.CutPrefix(feature, servicePrefix)
	if !isService || service == "" || len(service) > maxServiceName {
		return "", "", false
	}
	if deleted {
		return ServiceDBPrefix + service, "", true
	}
	return ServiceDBPrefix + service, bit(value != ""), true
}

// SetServiceVM keeps the servicevm feature in step with the
// provides_network property: present and true for a VM that provides
// network, absent otherwise (Qubes' set_servicevm_feature).
func SetServiceVM(f *Features, providesNetwork bool) error {
	if providesNetwork {
		return f.Set("servicevm", 1)
	}
	if _, present := f.Get("servicevm"); present {
		return f.Delete("servicevm")
	}
	return nil
}

func bit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
