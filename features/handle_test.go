package features

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func raw(m map[string]string) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = []byte(v)
	}
	return out
}

// TestAPIMisc reproduces qubes/tests/api_misc.py (TC_00_API_Misc 000-016):
// what qubes.FeaturesRequest and qubes.NotifyTools hand to the handlers,
// and what they refuse before any handler runs.
func TestAPIMisc(t *testing.T) {
	t.Run("000_features_request", func(t *testing.T) {
		req, invalidKeys, err := ParseFeaturesRequest(raw(map[string]string{
			"feature1": "1", "feature2": "", "feature3": "other with spaces",
		}))
		require.NoError(t, err)
		assert.Empty(t, invalidKeys)
		assert.Equal(t, map[string]string{"feature1": "1", "feature2": "", "feature3": "other with spaces"}, req)
	})
	t.Run("000_features_request/safe_set", func(t *testing.T) {
		v := "azAZ09-.,_= "
		req, _, err := ParseFeaturesRequest(map[string][]byte{"k": []byte(v)})
		require.NoError(t, err)
		assert.Equal(t, v, req["k"])
	})
	t.Run("001_features_request_empty", func(t *testing.T) {
		req, _, err := ParseFeaturesRequest(map[string][]byte{})
		require.NoError(t, err)
		assert.Equal(t, map[string]string{}, req)
	})
	t.Run("002_features_request_invalid1", func(t *testing.T) {
		vm, rec := newVM(t, "vm", nil)
		res, err := HandleFeaturesRequest(vm, map[string][]byte{"feature1": []byte("test$chars"), "qrexec": []byte("1")})
		assert.ErrorIs(t, err, ErrInvalidRequest)
		assert.Equal(t, Result{}, res)
		assert.Empty(t, rec.events, "nothing changes")
		assert.Empty(t, vm.f.Names())
	})
	t.Run("003_features_request_invalid2", func(t *testing.T) {
		vm, rec := newVM(t, "vm", nil)
		_, err := HandleFeaturesRequest(vm, map[string][]byte{"feature1": {0xfe, 0x01}, "qrexec": []byte("1")})
		assert.ErrorIs(t, err, ErrInvalidRequest)
		assert.ErrorContains(t, err, "not ASCII")
		assert.Empty(t, rec.events)
	})

	tools := map[string]string{"qrexec": "1", "gui": "1", "os": "Linux", "default-user": "user"}
	t.Run("010_notify_tools", func(t *testing.T) {
		in := raw(tools)
		in["version"] = []byte("1")
		req, err := ParseNotifyTools(in)
		require.NoError(t, err)
		assert.Equal(t, tools, req, "only the fixed keys are read")
	})
	t.Run("013_notify_tools_no_version", func(t *testing.T) {
		req, err := ParseNotifyTools(raw(tools))
		require.NoError(t, err)
		assert.Equal(t, tools, req)
		req, err = ParseNotifyTools(map[string][]byte{"gui-emulated": []byte("1"), "gui": nil})
		require.NoError(t, err)
		assert.Equal(t, map[string]string{"gui-emulated": "1"}, req, "empty values are skipped")
	})
	for _, tc := range []struct{ name, key string }{
		{"015_notify_tools_invalid_value_qrexec", "qrexec"},
		{"016_notify_tools_invalid_value_gui", "gui"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := raw(map[string]string{"version": "1", "qrexec": "1", "gui": "0", "os": "Linux", "default-user": "user"})
			in[tc.key] = []byte("invalid value")
			vm, rec := newVM(t, "vm", nil)
			_, err := HandleNotifyTools(vm, in)
			assert.ErrorIs(t, err, ErrInvalidRequest)
			assert.Empty(t, rec.events)
			_, err = ParseNotifyTools(map[string][]byte{tc.key: []byte("a-b")})
			assert.ErrorIs(t, err, ErrInvalidRequest, "NotifyTools allows letters and digits only")
		})
	}
}

// TestHandleRequest covers the request-level rules of the issue through the
// public entry points.
func TestHandleRequest(t *testing.T) {
	t.Run("unknown_keys_ignored", func(t *testing.T) {
		vm, rec := newVM(t, "vm", nil)
		res, err := HandleFeaturesRequest(vm, raw(map[string]string{"version": "1", "rpc-clipboard": "1", "servicevm": "1"}))
		require.NoError(t, err)
		assert.Empty(t, rec.changes())
		assert.Empty(t, res.Rejected)
	})

	t.Run("template_tools_fill_only_absent", func(t *testing.T) {
		// The template's user switched the GUI off; its tools report
		// qrexec and gui: qrexec is filled in, gui stays off.
		tpl, _ := newVM(t, "fedora", map[string]string{"gui": ""})
		tpl.template = true
		res, err := HandleFeaturesRequest(tpl, raw(map[string]string{"qrexec": "1", "gui": "1"}))
		require.NoError(t, err)
		assert.Equal(t, map[string]string{"qrexec": "1", "gui": ""}, tpl.f.All())
		assert.True(t, res.PostInstall)

		// and a later report can switch neither back
		res, err = HandleFeaturesRequest(tpl, raw(map[string]string{"qrexec": "0", "gui": "1"}))
		require.NoError(t, err)
		assert.Equal(t, map[string]string{"qrexec": "1", "gui": ""}, tpl.f.All())
		assert.False(t, res.PostInstall)
	})

	t.Run("gui_only_agent_or_off", func(t *testing.T) {
		for _, v := range []string{"emulated", "2", "true", "stubdom"} {
			vm, _ := newVM(t, "vm", nil)
			res, err := HandleFeaturesRequest(vm, raw(map[string]string{"gui": v}))
			require.NoError(t, err)
			assert.Empty(t, vm.f.All(), "gui=%s", v)
			assert.Equal(t, []string{"gui"}, res.Rejected)
		}
		vm, _ := newVM(t, "vm", nil)
		_, err := HandleFeaturesRequest(vm, raw(map[string]string{"gui": "0", "gui-emulated": "1"}))
		require.NoError(t, err)
		assert.Equal(t, map[string]string{"gui": "", "gui-emulated": "1"}, vm.f.All(),
			"a VM may turn its agent GUI off and ask for the stub-domain GUI")
	})

	t.Run("windows_through_notify_tools", func(t *testing.T) {
		vm, _ := newVM(t, "win", nil)
		res, err := HandleNotifyTools(vm, raw(map[string]string{"qrexec": "1", "gui": "1", "os": "Windows", "default-user": "Administrator"}))
		require.NoError(t, err)
		assert.True(t, res.PostInstall)
		assert.Equal(t, map[string]string{
			"qrexec": "1", "gui": "1", "os": "Windows", "rpc-clipboard": "1", "stubdom-qrexec": "1",
			"audio-model": "ich6", "timezone": "localtime", "no-monitor-layout": "1",
		}, vm.f.All())
		assert.Equal(t, 0, vm.maxmem)
		assert.Equal(t, 6000, vm.qrexecTimeout)
		user, set := vm.DefaultUser()
		assert.True(t, set)
		assert.Equal(t, "Administrator", user)
	})

	t.Run("one_path_for_both_services", func(t *testing.T) {
		// The same keys through NotifyTools and FeaturesRequest give the
		// same VM: the handlers do not know which service called them.
		in := raw(map[string]string{"qrexec": "1", "gui": "0", "gui-emulated": "1", "os": "Windows", "default-user": "admin"})
		a, _ := newVM(t, "a", nil)
		b, _ := newVM(t, "b", nil)
		ra, err := HandleNotifyTools(a, in)
		require.NoError(t, err)
		rb, err := HandleFeaturesRequest(b, in)
		require.NoError(t, err)
		assert.Equal(t, ra, rb)
		assert.Equal(t, a.f.All(), b.f.All())
		assert.Equal(t, *a, *withFeatures(b, a.f))
	})

	t.Run("veto_stops_and_reports", func(t *testing.T) {
		h := &Hooks{}
		h.On(KindPreSet, "gui", func(Event) error { return errPropRefused })
		vm := &testVM{f: New("vm", h)}
		_, err := HandleFeaturesRequest(vm, raw(map[string]string{"qrexec": "1", "gui": "1"}))
		assert.ErrorIs(t, err, errPropRefused)
		assert.Equal(t, map[string]string{"qrexec": "1"}, vm.f.All(), "changes before the veto stay, as in Qubes")
	})
}

// TestRequestInvalidKeys covers entries whose key is not a valid feature
// name: they are dropped alone and reported in Result.InvalidKeys, while a
// bad value under any key still refuses the whole request, as in Qubes.
func TestRequestInvalidKeys(t *testing.T) {
	for _, tc := range []struct {
		name        string
		notify      bool // through HandleNotifyTools
		in          map[string]string
		wantErr     error
		features    map[string]string
		invalidKeys []string
		postInstall bool
	}{
		{name: "bad_key_dropped_alone",
			in:       map[string]string{"qrexec": "1", "bad key!": "1", "supported-service.x": "1"},
			features: map[string]string{"qrexec": "1", "supported-service.x": "1"}, invalidKeys: []string{"bad key!"},
			postInstall: true},
		{name: "bad_keys_sorted",
			in: map[string]string{
				"qrexec": "1", "supported-feature.a/b": "1", "": "1", "x y": "1", "über": "1",
				"boot-mode.kernelopts.a b": "x", "supported-rpc.q\x00": "1",
			},
			features:    map[string]string{"qrexec": "1"},
			invalidKeys: []string{"", "boot-mode.kernelopts.a b", "supported-feature.a/b", "supported-rpc.q\x00", "x y", "über"},
			postInstall: true},
		{name: "only_bad_keys",
			in:          map[string]string{"qrexec!": "1", "gui\n": "1"},
			features:    map[string]string{},
			invalidKeys: []string{"gui\n", "qrexec!"}},
		{name: "bad_value_under_bad_key_refuses_all",
			in:      map[string]string{"qrexec": "1", "bad key!": "$x"},
			wantErr: ErrInvalidRequest},
		{name: "bad_value_refuses_all_despite_bad_key",
			in:      map[string]string{"qrexec": "1", "bad key!": "1", "gui": "1;reboot"},
			wantErr: ErrInvalidRequest},
		{name: "notify_tools_reads_fixed_keys_only", notify: true,
			in:       map[string]string{"qrexec": "1", "bad key!": "1", "supported-service.x": "1"},
			features: map[string]string{"qrexec": "1"}, postInstall: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm, rec := newVM(t, "vm", nil)
			handle := HandleFeaturesRequest
			if tc.notify {
				handle = HandleNotifyTools
			}
			res, err := handle(vm, raw(tc.in))
			if tc.wantErr != nil {
				assert.ErrorIs(t, err, tc.wantErr)
				assert.Equal(t, Result{}, res)
				assert.Empty(t, rec.events, "nothing changes")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.features, vm.f.All())
			assert.Equal(t, tc.invalidKeys, res.InvalidKeys)
			assert.Empty(t, res.Rejected, "invalid keys are not rejected values")
			assert.Equal(t, tc.postInstall, res.PostInstall)
		})
	}
}

// withFeatures returns a copy of v using f, so two VMs can be compared
// field by field apart from their (distinct) feature maps.
func withFeatures(v *testVM, f *Features) *testVM {
	c := *v
	c.f = f
	return &c
}

// TestDefaultUser covers default-user, which Qubes announced and never
// implemented: validated, copied into default_user only when unset.
func TestDefaultUser(t *testing.T) {
	t.Run("copied_when_unset", func(t *testing.T) {
		vm, _ := newVM(t, "vm", nil)
		_, err := HandleFeaturesRequest(vm, raw(map[string]string{"default-user": "alice.b-c_d,e"}))
		require.NoError(t, err)
		user, set := vm.DefaultUser()
		assert.True(t, set)
		assert.Equal(t, "alice.b-c_d,e", user)
	})
	t.Run("kept_when_set", func(t *testing.T) {
		vm, _ := newVM(t, "vm", nil)
		require.NoError(t, vm.SetDefaultUser("bob"))
		_, err := HandleFeaturesRequest(vm, raw(map[string]string{"default-user": "alice"}))
		require.NoError(t, err)
		user, _ := vm.DefaultUser()
		assert.Equal(t, "bob", user)
	})
	t.Run("invalid_dropped_alone", func(t *testing.T) {
		for _, bad := range []string{"root user", "a=b", "", "..", "-rf", "abcdefghijklmnopqrstuvwxyz0123456"} {
			vm, _ := newVM(t, "vm", nil)
			res, err := HandleFeaturesRequest(vm, raw(map[string]string{"default-user": bad, "qrexec": "1"}))
			require.NoError(t, err, "%q", bad)
			_, set := vm.DefaultUser()
			assert.False(t, set, "%q must not be set", bad)
			assert.Equal(t, []string{"default-user"}, res.Rejected)
			assert.True(t, vm.f.Enabled("qrexec"), "the other keys still apply")
		}
	})
	t.Run("template_based_ignored", func(t *testing.T) {
		vm, _ := templateBasedVM(t)
		_, err := HandleFeaturesRequest(vm, raw(map[string]string{"default-user": "alice"}))
		require.NoError(t, err)
		_, set := vm.DefaultUser()
		assert.False(t, set)
	})
}

func TestValidUser(t *testing.T) {
	for _, ok := range []string{"user", "a", "A_b-c+d,e.f", "0123456789", "abcdefghijklmnopqrstuvwxyz012345"} {
		assert.NoError(t, ValidUser(ok), "%q", ok)
	}
	for _, bad := range []string{"", ".", "..", "-x", "a:b", "a b", `a"b`, "a'b", "a/b", "a=b", "ü", "a\x00", "abcdefghijklmnopqrstuvwxyz0123456"} {
		assert.ErrorIs(t, ValidUser(bad), ErrInvalidUser, "%q", bad)
	}
}

func TestChecks(t *testing.T) {
	for _, tc := range []struct {
		check func(string) bool
		in    string
		want  bool
	}{
		{validOSVersion, "12", true},
		{validOSVersion, "22.04-1", true},
		{validOSVersion, ".1", false},
		{validOSVersion, "", false},
		{validDate, "2026-06-10", true},
		{validDate, "2024-02-29", true},
		{validDate, "2023-02-29", false},
		{validDate, "0000-01-01", false},
		{validDate, "2026-6-10", false},
		{validDate, "2026-06-10x", false},
		{validAgentVersion, "4.1", true},
		{validAgentVersion, "999.999", true},
		{validAgentVersion, "4.", false},
		{validAgentVersion, ".1", false},
		{validAgentVersion, "1000.1", false},
	} {
		assert.Equal(t, tc.want, tc.check(tc.in), "%q", tc.in)
	}
}
