package features

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// testVM implements Guest for the tests.
type testVM struct {
	f             *Features
	tpl, net      *testVM
	template      bool
	maxmem        int
	qrexecTimeout int
	user          string
	userSet       bool
	failProps     bool
}

func (v *testVM) Features() *Features { return v.f }

func (v *testVM) Template() VM {
	if v.tpl == nil {
		return nil
	}
	return v.tpl
}

func (v *testVM) NetVM() VM {
	if v.net == nil {
		return nil
	}
	return v.net
}

func (v *testVM) IsTemplate() bool { return v.template }

var errPropRefused = errors.New("property refused")

func (v *testVM) SetMaxMem(mib int) error {
	if v.failProps {
		return errPropRefused
	}
	v.maxmem = mib
	return nil
}

func (v *testVM) SetQrexecTimeout(s int) error {
	if v.failProps {
		return errPropRefused
	}
	v.qrexecTimeout = s
	return nil
}

func (v *testVM) DefaultUser() (string, bool) {
	if v.userSet {
		return v.user, true
	}
	return "user", false
}

func (v *testVM) SetDefaultUser(u string) error {
	v.user, v.userSet = u, true
	return nil
}

// recorder records the events fired on a Hooks, as "pre-set k=v",
// "set k=v (old)", "pre-delete k", "delete k".
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func newRecorder(h *Hooks) *recorder {
	r := &recorder{}
	for _, k := range []Kind{KindPreSet, KindSet, KindPreDelete, KindDelete} {
		h.On(k, "*", func(e Event) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.events = append(r.events, e)
			return nil
		})
	}
	return r
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = nil
}

// changes returns the post-events only, as "set k=v" and "del k", in order:
// the equivalent of the __setitem__/__delitem__ calls Qubes' tests list.
func (r *recorder) changes() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := []string{}
	for _, e := range r.events {
		switch e.Kind {
		case KindSet:
			out = append(out, fmt.Sprintf("set %s=%s", e.Feature, e.Value))
		case KindDelete:
			out = append(out, "del "+e.Feature)
		}
	}
	return out
}

// newVM returns a template-less VM named name with the given features
// loaded silently, and a recorder of its events.
func newVM(t *testing.T, name string, before map[string]string) (*testVM, *recorder) {
	t.Helper()
	h := &Hooks{}
	rec := newRecorder(h)
	vm := &testVM{f: New(name, h)}
	require.NoError(t, vm.f.Load(before))
	return vm, rec
}

// templateBasedVM returns a VM based on a fresh template.
func templateBasedVM(t *testing.T) (*testVM, *recorder) {
	t.Helper()
	vm, rec := newVM(t, "appvm", nil)
	vm.tpl = &testVM{f: New("template", nil), template: true}
	return vm, rec
}
