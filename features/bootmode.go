package features

import (
	"sort"
	"strings"
)

// Boot modes a VM advertises (qubes/ext/core_features.py): a batch of
// boot-mode.kernelopts.<id>, boot-mode.name.<id> and
// boot-mode.default-user.<id> entries replaces the VM's current batch, and
// boot-mode.active, boot-mode.appvm-default and
// boot-mode.standalone-default point at one of its ids (or "default").
const (
	bootKernelopts     = "boot-mode.kernelopts."
	bootName           = "boot-mode.name."
	bootDefaultUser    = "boot-mode.default-user."
	maxBootModeEntries = 64
)

// bootModeSelectors are the keys that name a boot mode id; appvm-default
// exists only on templates.
var bootModeSelectors = []struct {
	key          string
	templateOnly bool
}{
	{"boot-mode.active", false},
	{"boot-mode.appvm-default", true},
	{"boot-mode.standalone-default", false},
}

// bootModeID returns the <id> of boot-mode.<kind>.<id>; ok is false unless
// the key has exactly three dot-separated parts and a non-empty id.
func bootModeID(key string) (id string, ok bool) {
	parts := strings.Split(key, ".")
	if len(parts) != 3 || parts[2] == "" {
		return "", false
	}
	return parts[2], true
}

func bootModes(vm Guest, req map[string]string, res *Result) error {
	f := vm.Features()
	batch := map[string]string{}
	for _, k := range sortedKeys(req) {
		if !strings.HasPrefix(k, bootKernelopts) {
			continue
		}
		if id, ok := bootModeID(k); ok && id != "default" {
			batch[k] = req[k]
		}
	}
	var labels []string // names and users together must be unique
	for _, k := range sortedKeys(req) {
		isName, isUser := strings.HasPrefix(k, bootName), strings.HasPrefix(k, bootDefaultUser)
		if !isName && !isUser {
			continue
		}
		id, ok := bootModeID(k)
		if !ok {
			continue
		}
		if _, known := batch[bootKernelopts+id]; !known && id != "default" {
			continue
		}
		if isUser && (id == "default" || ValidUser(req[k]) != nil) {
			continue
		}
		batch[k] = req[k]
		labels = append(labels, req[k])
	}

	if len(batch) > 0 && len(batch) <= maxBootModeEntries && unique(labels) {
		for _, k := range f.Names() {
			if isBootModeEntry(k) {
				if _, keep := batch[k]; !keep {
					if err := f.Delete(k); err != nil {
						return err
					}
				}
			}
		}
		// kernelopts first, so that names never point at a missing mode
		keys := sortedKeys(batch)
		sort.SliceStable(keys, func(i, j int) bool {
			return strings.HasPrefix(keys[i], bootKernelopts) && !strings.HasPrefix(keys[j], bootKernelopts)
		})
		for _, k := range keys {
			if err := f.Set(k, batch[k]); err != nil {
				return err
			}
		}
	}

	for _, sel := range bootModeSelectors {
		id, ok := req[sel.key]
		if !ok {
			continue
		}
		_, exists := f.Get(bootKernelopts + id)
		if (!exists && id != "default") || (sel.templateOnly && !vm.IsTemplate()) {
			res.Rejected = append(res.Rejected, sel.key)
			continue
		}
		if err := f.Set(sel.key, id); err != nil {
			return err
		}
	}

	for k := range req {
		if !isBootModeEntry(k) {
			continue
		}
		got, ok := f.Get(k)
		if _, inBatch := batch[k]; !inBatch || !ok || got != req[k] {
			res.Rejected = append(res.Rejected, k)
		}
	}
	return nil
}

func isBootModeEntry(k string) bool {
	return strings.HasPrefix(k, bootKernelopts) || strings.HasPrefix(k, bootName) ||
		strings.HasPrefix(k, bootDefaultUser)
}

func unique(values []string) bool {
	seen := make(map[string]bool, len(values))
	for _, v := range values {
		if seen[v] {
			return false
		}
		seen[v] = true
	}
	return true
}
