package features

import (
	"errors"
	"fmt"
	"sort"
	"sync"
)

// Features is the feature map of one VM: names mapped to string values.
//
// A feature has three states: absent, present with the empty string (false)
// and present with a non-empty string (true). Set converts Go values the way
// Qubes does: true is "1", false and nil are "", anything else is formatted
// with fmt (so the number 0 is "0", which is true).
//
// Reads fire no events. Set, Delete, Clear and Update fire the pre- and
// post-events of the Hooks the map was created with; Load does not (it is
// for restoring saved state). A Features is safe for concurrent use; hooks
// run without its lock held, so they may read or change the map.
type Features struct {
	owner string
	hooks *Hooks

	mu     sync.RWMutex
	values map[string]string
}

// New returns an empty feature map for the VM named owner. Events go to
// hooks; nil hooks means no events.
func New(owner string, hooks *Hooks) *Features {
	return &Features{owner: owner, hooks: hooks, values: map[string]string{}}
}

// Owner returns the name of the VM the map belongs to.
func (f *Features) Owner() string { return f.owner }

// Get returns the value of the feature name and whether it is present.
func (f *Features) Get(name string) (string, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.values[name]
	return v, ok
}

// Enabled reports whether the feature name is present and true (non-empty).
func (f *Features) Enabled(name string) bool {
	v, _ := f.Get(name)
	return v != ""
}

// Names returns the names of all present features, sorted.
func (f *Features) Names() []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	names := make([]string, 0, len(f.values))
	for k := range f.values {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// All returns a copy of the whole map.
func (f *Features) All() map[string]string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	m := make(map[string]string, len(f.values))
	for k, v := range f.values {
		m[k] = v
	}
	return m
}

// Load replaces the map's contents with values, firing no events: it is for
// restoring saved state (Qubes loads qubes.xml with events disabled). Every
// name must be valid (see ValidName).
func (f *Features) Load(values map[string]string) error {
	m := make(map[string]string, len(values))
	for k, v := range values {
		if err := ValidName(k); err != nil {
			return fmt.Errorf("load features of %s: %w", f.owner, err)
		}
		m[k] = v
	}
	f.mu.Lock()
	f.values = m
	f.mu.Unlock()
	return nil
}

// Set stores value under name. It fires the pre-set event first; if a
// pre-set hook returns an error nothing is stored and the error is returned.
// Then it stores the value and fires the set event; errors of set hooks are
// returned, but the value stays stored. Setting the current value again
// fires both events again. An invalid name is refused with ErrInvalidName.
func (f *Features) Set(name string, value any) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("set feature of %s: %w", f.owner, err)
	}
	v := format(value)
	old, had := f.Get(name)
	ev := Event{VM: f.owner, Feature: name, Value: v, OldValue: old, HadOld: had}
	ev.Kind = KindPreSet
	if err := f.hooks.fire(ev); err != nil {
		return fmt.Errorf("set feature %s of %s: %w", name, f.owner, err)
	}
	f.mu.Lock()
	f.values[name] = v
	f.mu.Unlock()
	ev.Kind = KindSet
	if err := f.hooks.fire(ev); err != nil {
		return fmt.Errorf("set feature %s of %s: %w", name, f.owner, err)
	}
	return nil
}

// Delete removes the feature name. The pre-delete event fires first, even
// for an absent feature; then an absent feature is ErrNotFound (and no
// delete event fires). A pre-delete hook error keeps the feature.
func (f *Features) Delete(name string) error {
	ev := Event{Kind: KindPreDelete, VM: f.owner, Feature: name}
	if err := f.hooks.fire(ev); err != nil {
		return fmt.Errorf("delete feature %s of %s: %w", name, f.owner, err)
	}
	f.mu.Lock()
	_, ok := f.values[name]
	delete(f.values, name)
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("delete feature %s of %s: %w", name, f.owner, ErrNotFound)
	}
	ev.Kind = KindDelete
	if err := f.hooks.fire(ev); err != nil {
		return fmt.Errorf("delete feature %s of %s: %w", name, f.owner, err)
	}
	return nil
}

// Clear deletes every feature, one by one and with events, in name order.
// It goes on past errors and returns them joined.
func (f *Features) Clear() error {
	var errs []error
	for _, name := range f.Names() {
		if err := f.Delete(name); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Update sets every entry of values with Set, in name order, and stops at
// the first error.
func (f *Features) Update(values map[string]string) error {
	names := make([]string, 0, len(values))
	for k := range values {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if err := f.Set(k, values[k]); err != nil {
			return err
		}
	}
	return nil
}

// format converts a Go value to a feature value by Qubes' rules.
func format(value any) string {
	switch v := value.(type) {
	case nil:
		return ""
	case bool:
		if v {
			return "1"
		}
		return ""
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}
