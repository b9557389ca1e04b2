package features

import (
	"errors"
	"sync"
)

// Kind names the event a Features map fires. The values are Qubes' event
// names without the ":<feature>" suffix.
type Kind string

// The events a Features map fires.
const (
	KindPreSet    Kind = "domain-feature-pre-set"
	KindSet       Kind = "domain-feature-set"
	KindPreDelete Kind = "domain-feature-pre-delete"
	KindDelete    Kind = "domain-feature-delete"
)

// Event describes one change of a feature.
type Event struct {
	Kind    Kind
	VM      string // owner of the feature map
	Feature string
	// Value is the new value (set events only).
	Value string
	// OldValue is the value before a set, valid only when HadOld is true
	// (Qubes passes oldvalue only when the feature existed).
	OldValue string
	HadOld   bool
}

// A Hook handles an event. An error from a pre-event hook vetoes the
// change; an error from a post-event hook is returned to the caller of
// Set or Delete after the change has been made.
type Hook func(Event) error

// Hooks is a set of event subscriptions shared by the feature maps of many
// VMs (Qubes' extensions subscribe once for all VMs). The zero value is
// ready to use; a nil *Hooks fires nothing.
type Hooks struct {
	mu   sync.RWMutex
	next int
	subs []subscription
}

type subscription struct {
	id      int
	kind    Kind
	pattern string
	fn      Hook
}

// On subscribes fn to events of kind whose feature name matches pattern
// (fnmatch style as in Qubes' "domain-feature-set:*": '*' matches any run of
// characters, '/' included, and '?' any single character). Hooks run in
// the order they were added. The returned function removes the
// subscription.
func (h *Hooks) On(kind Kind, pattern string, fn Hook) (remove func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	id := h.next
	h.subs = append(h.subs, subscription{id: id, kind: kind, pattern: pattern, fn: fn})
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		for i, s := range h.subs {
			if s.id == id {
				h.subs = append(h.subs[:i:i], h.subs[i+1:]...)
				return
			}
		}
	}
}

// fire runs the hooks subscribed to e. For pre-events the first error stops
// the run; for post-events every hook runs and the errors are joined.
func (h *Hooks) fire(e Event) error {
	if h == nil {
		return nil
	}
	h.mu.RLock()
	var fns []Hook
	for _, s := range h.subs {
		if s.kind == e.Kind && match(s.pattern, e.Feature) {
			fns = append(fns, s.fn)
		}
	}
	h.mu.RUnlock()
	pre := e.Kind == KindPreSet || e.Kind == KindPreDelete
	var errs []error
	for _, fn := range fns {
		if err := fn(e); err != nil {
			if pre {
				return err
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// match reports whether name matches the glob pattern, where '*' matches
// any run of characters and '?' any one character; everything else is
// literal. It never fails, unlike path.Match, and '*' crosses '/' as
// Python's fnmatch does.
func match(pattern, name string) bool {
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == name[n]):
			p++
			n++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
