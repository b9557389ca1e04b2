package features

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFeatures reproduces qubes/tests/vm/init.py TC_21_Features.
func TestFeatures(t *testing.T) {
	setup := func(t *testing.T) (*Features, *recorder) {
		h := &Hooks{}
		return New("vm", h), newRecorder(h)
	}

	t.Run("000_set", func(t *testing.T) {
		f, rec := setup(t)
		require.NoError(t, f.Set("testfeature", "value"))
		assert.Equal(t, []Event{
			{Kind: KindPreSet, VM: "vm", Feature: "testfeature", Value: "value"},
			{Kind: KindSet, VM: "vm", Feature: "testfeature", Value: "value"},
		}, rec.events)
	})

	t.Run("001_set_existing", func(t *testing.T) {
		f, rec := setup(t)
		require.NoError(t, f.Set("test", "oldvalue"))
		rec.reset()
		require.NoError(t, f.Set("test", "value"))
		want := Event{VM: "vm", Feature: "test", Value: "value", OldValue: "oldvalue", HadOld: true}
		pre, post := want, want
		pre.Kind, post.Kind = KindPreSet, KindSet
		assert.Equal(t, []Event{pre, post}, rec.events)
	})

	t.Run("002_unset", func(t *testing.T) {
		f, rec := setup(t)
		require.NoError(t, f.Set("test", "value"))
		rec.reset()
		require.NoError(t, f.Delete("test"))
		assert.Equal(t, []Event{
			{Kind: KindPreDelete, VM: "vm", Feature: "test"},
			{Kind: KindDelete, VM: "vm", Feature: "test"},
		}, rec.events)
		_, ok := f.Get("test")
		assert.False(t, ok)
	})

	t.Run("003_unset_not_present", func(t *testing.T) {
		f, rec := setup(t)
		err := f.Delete("test")
		assert.ErrorIs(t, err, ErrNotFound)
		for _, e := range rec.events {
			assert.NotEqual(t, KindDelete, e.Kind, "no delete event for an absent feature")
		}
	})

	for _, tc := range []struct {
		name  string
		value any
		want  string
	}{
		{"004_set_bool_true", true, "1"},
		{"005_set_bool_false", false, ""},
		{"006_set_int", 123, "123"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, rec := setup(t)
			require.NoError(t, f.Set("test", tc.value))
			got, ok := f.Get("test")
			require.True(t, ok)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.want != "", f.Enabled("test"))
			assert.Equal(t, []string{"set test=" + tc.want}, rec.changes())
		})
	}

	t.Run("007_clear", func(t *testing.T) {
		f, rec := setup(t)
		require.NoError(t, f.Set("test", "value1"))
		require.NoError(t, f.Set("test2", "value2"))
		rec.reset()
		require.NoError(t, f.Clear())
		assert.Equal(t, []Event{
			{Kind: KindPreDelete, VM: "vm", Feature: "test"},
			{Kind: KindDelete, VM: "vm", Feature: "test"},
			{Kind: KindPreDelete, VM: "vm", Feature: "test2"},
			{Kind: KindDelete, VM: "vm", Feature: "test2"},
		}, rec.events)
		assert.Empty(t, f.Names())
	})

	t.Run("008_update", func(t *testing.T) {
		f, rec := setup(t)
		require.NoError(t, f.Set("test", "value"))
		require.NoError(t, f.Set("test2", "value2"))
		rec.reset()
		require.NoError(t, f.Update(map[string]string{"test2": "value3", "test3": "value4"}))
		assert.Equal(t, map[string]string{"test": "value", "test2": "value3", "test3": "value4"}, f.All())
		var sets []Event
		for _, e := range rec.events {
			if e.Kind == KindSet {
				sets = append(sets, e)
			}
		}
		assert.Equal(t, []Event{
			{Kind: KindSet, VM: "vm", Feature: "test2", Value: "value3", OldValue: "value2", HadOld: true},
			{Kind: KindSet, VM: "vm", Feature: "test3", Value: "value4"},
		}, sets)
	})
}

// TestFeaturesHooks covers what TC_21 leaves implicit: vetoes, patterns,
// post-hook errors, silent Load and re-entrant hooks.
func TestFeaturesHooks(t *testing.T) {
	errVeto := errors.New("veto")

	t.Run("pre_set_veto_stores_nothing", func(t *testing.T) {
		h := &Hooks{}
		h.On(KindPreSet, "locked.*", func(Event) error { return errVeto })
		f := New("vm", h)
		assert.ErrorIs(t, f.Set("locked.x", "1"), errVeto)
		_, ok := f.Get("locked.x")
		assert.False(t, ok)
		assert.NoError(t, f.Set("other", "1"), "pattern must not match other names")
	})

	t.Run("pre_delete_veto_keeps", func(t *testing.T) {
		h := &Hooks{}
		f := New("vm", h)
		require.NoError(t, f.Set("x", "1"))
		h.On(KindPreDelete, "x", func(Event) error { return errVeto })
		assert.ErrorIs(t, f.Delete("x"), errVeto)
		assert.True(t, f.Enabled("x"))
	})

	t.Run("post_error_keeps_value", func(t *testing.T) {
		h := &Hooks{}
		h.On(KindSet, "*", func(Event) error { return errVeto })
		f := New("vm", h)
		assert.ErrorIs(t, f.Set("x", "v"), errVeto)
		v, _ := f.Get("x")
		assert.Equal(t, "v", v)
	})

	t.Run("remove_subscription", func(t *testing.T) {
		h := &Hooks{}
		remove := h.On(KindPreSet, "*", func(Event) error { return errVeto })
		f := New("vm", h)
		assert.Error(t, f.Set("x", "1"))
		remove()
		assert.NoError(t, f.Set("x", "1"))
	})

	t.Run("load_is_silent_and_checks_names", func(t *testing.T) {
		h := &Hooks{}
		rec := newRecorder(h)
		f := New("vm", h)
		require.NoError(t, f.Load(map[string]string{"a": "1", "b": ""}))
		assert.Empty(t, rec.events)
		assert.Equal(t, []string{"a", "b"}, f.Names())
		assert.ErrorIs(t, f.Load(map[string]string{"bad name": "1"}), ErrInvalidName)
		assert.Equal(t, []string{"a", "b"}, f.Names(), "a failed load changes nothing")
	})

	t.Run("set_refuses_invalid_name", func(t *testing.T) {
		f := New("vm", nil)
		assert.ErrorIs(t, f.Set("a/b", "1"), ErrInvalidName)
		assert.ErrorIs(t, f.Set("", "1"), ErrInvalidName)
		assert.Empty(t, f.Names())
	})

	t.Run("hook_may_change_the_map", func(t *testing.T) {
		// Qubes' services extension deletes service.meminfo-writer from
		// inside its own set handler.
		h := &Hooks{}
		var f *Features
		h.On(KindSet, "service.meminfo-writer", func(e Event) error { return f.Delete(e.Feature) })
		f = New("vm", h)
		require.NoError(t, f.Set("service.meminfo-writer", "1"))
		_, ok := f.Get("service.meminfo-writer")
		assert.False(t, ok)
	})
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{"*", "", true},
		{"*", "a/b", true},
		{"service.*", "service.a/b", true},
		{"service.*", "service.", true},
		{"service.*", "services", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"*.x.*", "a.x.b", true},
		{"*.x.*", "a.y.b", false},
		{"[", "[", true},
		{"abc", "abcd", false},
	} {
		assert.Equal(t, tc.want, match(tc.pattern, tc.name), "match(%q, %q)", tc.pattern, tc.name)
	}
}

// adminVMs builds the VMs of qubes/tests/api_admin.py: test-vm1 based on
// test-template, an optional netvm, and dom0.
func adminVMs() (vm, tpl, netvm, dom0 *testVM) {
	tpl = &testVM{f: New("test-template", nil), template: true}
	netvm = &testVM{f: New("test-netvm1", nil), tpl: tpl}
	vm = &testVM{f: New("test-vm1", nil), tpl: tpl}
	dom0 = &testVM{f: New("dom0", nil)}
	return vm, tpl, netvm, dom0
}

// adminSet does what admin.vm.feature.Set does with its argument and
// payload: permission check, name and value checks, then Set.
func adminSet(f *Features, name string, payload []byte) error {
	if err := CheckAdminChange(name); err != nil {
		return err
	}
	value, err := ParseValue(payload)
	if err != nil {
		return err
	}
	if err := ValidName(name); err != nil {
		return err
	}
	return f.Set(name, value)
}

// TestAdminAPI reproduces the admin.vm.feature.* cases of
// qubes/tests/api_admin.py (TC_00_VMs 280-325) as tests of the validators
// and lookups the Admin API layer calls.
func TestAdminAPI(t *testing.T) {
	t.Run("280_feature_list", func(t *testing.T) {
		vm, _, _, _ := adminVMs()
		require.NoError(t, vm.f.Set("test-feature", "some-value"))
		assert.Equal(t, []string{"test-feature"}, vm.f.Names())
	})
	t.Run("290_feature_get", func(t *testing.T) {
		vm, _, _, _ := adminVMs()
		require.NoError(t, vm.f.Set("test-feature", "some-value"))
		v, ok := vm.f.Get("test-feature")
		assert.True(t, ok)
		assert.Equal(t, "some-value", v)
	})
	t.Run("291_feature_get_none", func(t *testing.T) {
		vm, _, _, _ := adminVMs()
		_, ok := vm.f.Get("test-feature")
		assert.False(t, ok)
	})
	t.Run("300_feature_remove", func(t *testing.T) {
		vm, _, _, _ := adminVMs()
		require.NoError(t, vm.f.Set("test-feature", "some-value"))
		require.NoError(t, vm.f.Delete("test-feature"))
		assert.NotContains(t, vm.f.Names(), "test-feature")
	})
	t.Run("301_feature_remove_none", func(t *testing.T) {
		vm, _, _, _ := adminVMs()
		assert.ErrorIs(t, vm.f.Delete("test-feature"), ErrNotFound)
	})
	t.Run("303_feature_prohibited", func(t *testing.T) {
		vm, _, _, _ := adminVMs()
		for _, name := range prohibited {
			assert.ErrorIs(t, adminSet(vm.f, name, []byte("some-value")), ErrProhibited)
			assert.ErrorIs(t, CheckAdminChange(name), ErrProhibited, "remove of %s", name)
		}
		assert.Empty(t, vm.f.Names())
		assert.NoError(t, CheckAdminChange("preload-dispvm-max"))
	})

	checks := []struct {
		name  string
		setup func(vm, tpl, netvm, dom0 *testVM)
		check func(vm, dom0 *testVM) (string, bool)
		want  string // "" means not found
	}{
		{"310_feature_checkwithtemplate",
			func(vm, _, _, _ *testVM) { _ = vm.f.Set("test-feature", "some-value") },
			func(vm, _ *testVM) (string, bool) { return CheckWithTemplate(vm, "test-feature") }, "some-value"},
		{"311_feature_checkwithtemplate_tpl",
			func(_, tpl, _, _ *testVM) { _ = tpl.f.Set("test-feature", "some-value") },
			func(vm, _ *testVM) (string, bool) { return CheckWithTemplate(vm, "test-feature") }, "some-value"},
		{"312_feature_checkwithtemplate_none",
			func(_, _, _, _ *testVM) {},
			func(vm, _ *testVM) (string, bool) { return CheckWithTemplate(vm, "test-feature") }, ""},
		{"315_feature_checkwithnetvm",
			func(vm, _, _, _ *testVM) { _ = vm.f.Set("test-feature", "some-value") },
			func(vm, _ *testVM) (string, bool) { return CheckWithNetVM(vm, "test-feature") }, "some-value"},
		{"316_feature_checkwithnetvm_netvm",
			func(vm, _, netvm, _ *testVM) { vm.net = netvm; _ = netvm.f.Set("test-feature", "some-value") },
			func(vm, _ *testVM) (string, bool) { return CheckWithNetVM(vm, "test-feature") }, "some-value"},
		{"317_feature_checkwithnetvm_none",
			func(vm, tpl, _, _ *testVM) { _ = tpl.f.Set("test-feature", "in template only") },
			func(vm, _ *testVM) (string, bool) { return CheckWithNetVM(vm, "test-feature") }, ""},
		{"318_feature_checkwithadminvm",
			func(_, _, _, dom0 *testVM) { _ = dom0.f.Set("test-feature", "some-value") },
			func(vm, dom0 *testVM) (string, bool) { return CheckWithAdminVM(vm, dom0, "test-feature") }, "some-value"},
		{"319_feature_checkwithtpladminvm/dom0",
			func(_, _, _, dom0 *testVM) { _ = dom0.f.Set("test-feature", "some-value") },
			func(vm, dom0 *testVM) (string, bool) { return CheckWithTemplateAndAdminVM(vm, dom0, "test-feature") }, "some-value"},
		{"319_feature_checkwithtpladminvm/template_wins",
			func(_, tpl, _, dom0 *testVM) {
				_ = dom0.f.Set("test-feature", "some-value")
				_ = tpl.f.Set("test-feature", "some-value2")
			},
			func(vm, dom0 *testVM) (string, bool) { return CheckWithTemplateAndAdminVM(vm, dom0, "test-feature") }, "some-value2"},
	}
	for _, tc := range checks {
		t.Run(tc.name, func(t *testing.T) {
			vm, tpl, netvm, dom0 := adminVMs()
			tc.setup(vm, tpl, netvm, dom0)
			got, ok := tc.check(vm, dom0)
			assert.Equal(t, tc.want != "", ok)
			assert.Equal(t, tc.want, got)
		})
	}

	t.Run("320_feature_set", func(t *testing.T) {
		vm, _, _, _ := adminVMs()
		require.NoError(t, adminSet(vm.f, "test-feature", []byte("some-value")))
		v, _ := vm.f.Get("test-feature")
		assert.Equal(t, "some-value", v)
	})
	t.Run("321_feature_set_empty", func(t *testing.T) {
		vm, _, _, _ := adminVMs()
		require.NoError(t, adminSet(vm.f, "test-feature", nil))
		v, ok := vm.f.Get("test-feature")
		assert.True(t, ok)
		assert.Equal(t, "", v)
	})
	t.Run("322_feature_set_invalid_value", func(t *testing.T) {
		vm, _, _, _ := adminVMs()
		err := adminSet(vm.f, "test-feature", []byte("\x02\x03\xffsome-value"))
		assert.ErrorIs(t, err, ErrInvalidValue)
		err = adminSet(vm.f, "test-feature", []byte("\u00f6"))
		assert.ErrorIs(t, err, ErrInvalidValue)
		assert.ErrorContains(t, err, "non-ASCII characters")
		err = adminSet(vm.f, "test-feature", []byte("tab\tvalue"))
		assert.ErrorContains(t, err, "illegal characters")
		assert.Empty(t, vm.f.Names())
	})
	t.Run("322_feature_set_invalid_key", func(t *testing.T) {
		vm, _, _, _ := adminVMs()
		err := adminSet(vm.f, "", []byte("value"))
		assert.ErrorIs(t, err, ErrInvalidName)
		assert.ErrorContains(t, err, "expected an argument")
		err = adminSet(vm.f, " ", nil)
		assert.ErrorIs(t, err, ErrInvalidName)
		assert.ErrorContains(t, err, "illegal characters")
		assert.Empty(t, vm.f.Names())
	})

	serviceHooks := func() *Features {
		h := &Hooks{}
		h.On(KindPreSet, "service.*", CheckServiceName)
		return New("test-vm1", h)
	}
	t.Run("323_feature_set_service_too_long", func(t *testing.T) {
		f := serviceHooks()
		name := "service." + strings.Repeat("a", 49)
		assert.ErrorIs(t, adminSet(f, name, []byte("1")), ErrInvalidValue)
		assert.Empty(t, f.Names())
		require.NoError(t, adminSet(f, "service."+strings.Repeat("a", 48), []byte("1")), "48 bytes are allowed")
		require.NoError(t, adminSet(f, "service.app-dispvm."+strings.Repeat("a", 60), []byte("1")), "app-dispvm.* may be longer")
	})
	t.Run("325_feature_set_service_empty_name", func(t *testing.T) {
		f := serviceHooks()
		assert.ErrorIs(t, adminSet(f, "service.", nil), ErrInvalidValue)
		assert.Empty(t, f.Names())
	})
}

func TestInheritance(t *testing.T) {
	t.Run("first_hit_wins_even_empty", func(t *testing.T) {
		vm, tpl, _, _ := adminVMs()
		require.NoError(t, vm.f.Set("x", false))
		require.NoError(t, tpl.f.Set("x", true))
		v, ok := CheckWithTemplate(vm, "x")
		assert.True(t, ok)
		assert.Equal(t, "", v)
	})
	t.Run("adminvm_not_consulted_for_itself", func(t *testing.T) {
		_, _, _, dom0 := adminVMs()
		_, ok := CheckWithAdminVM(dom0, dom0, "x")
		assert.False(t, ok)
		require.NoError(t, dom0.f.Set("x", "1"))
		v, ok := CheckWithAdminVM(dom0, dom0, "x")
		assert.True(t, ok)
		assert.Equal(t, "1", v)
	})
	t.Run("cycle_ends", func(t *testing.T) {
		a := &testVM{f: New("a", nil)}
		b := &testVM{f: New("b", nil), tpl: a}
		a.tpl = b
		_, ok := CheckWithTemplate(a, "x")
		assert.False(t, ok)
	})
	t.Run("nil_vm_and_typed_nil", func(t *testing.T) {
		_, ok := CheckWithTemplate(nil, "x")
		assert.False(t, ok)
		var typed *testVM
		_, ok = CheckWithTemplate(typed, "x")
		assert.False(t, ok)
	})
}
