package features

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// coreCase is one case of qubes/tests/ext.py TC_00_CoreFeatures: the VM's
// features before, the (already validated) request, and the feature
// changes Qubes' mock records, in order.
type coreCase struct {
	name          string
	templateBased bool
	isTemplate    bool
	before        map[string]string
	req           map[string]string
	want          []string // "set k=v" / "del k", in order
	postInstall   bool
	rejected      []string
}

func runCoreCases(t *testing.T, cases []coreCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			vm, rec := newVM(t, "vm", tc.before)
			vm.template = tc.isTemplate
			if tc.templateBased {
				vm.tpl = &testVM{f: New("template", nil), template: true}
			}
			var res Result
			require.NoError(t, coreFeatures(vm, tc.req, &res))
			want := tc.want
			if want == nil {
				want = []string{}
			}
			assert.Equal(t, want, rec.changes())
			assert.Equal(t, tc.postInstall, res.PostInstall, "template-postinstall")
			assert.ElementsMatch(t, tc.rejected, res.Rejected)
		})
	}
}

func TestCoreFeatures(t *testing.T) {
	qrexecOn := map[string]string{"qrexec": "1"}
	runCoreCases(t, []coreCase{
		{name: "010_notify_tools",
			req:  map[string]string{"gui": "1", "version": "1", "default-user": "user", "qrexec": "1", "vmexec": "1"},
			want: []string{"set qrexec=1", "set gui=1", "set vmexec=1"}, postInstall: true},
		{name: "011_notify_tools_uninstall",
			req:  map[string]string{"gui": "0", "version": "1", "default-user": "user", "qrexec": "0", "vmexec": "0"},
			want: []string{"set qrexec=", "set gui=", "set vmexec="}},
		{name: "012_notify_tools_uninstall2",
			req: map[string]string{"version": "1", "default-user": "user"}},
		{name: "013_notify_tools_no_version",
			req:  map[string]string{"qrexec": "1", "gui": "1", "default-user": "user"},
			want: []string{"set qrexec=1", "set gui=1"}, postInstall: true},
		{name: "015_notify_tools_invalid_value_qrexec",
			req:  map[string]string{"version": "1", "qrexec": "invalid", "gui": "1", "default-user": "user"},
			want: []string{"set gui=1"}, rejected: []string{"qrexec"}},
		{name: "016_notify_tools_invalid_value_gui",
			req:  map[string]string{"version": "1", "qrexec": "1", "gui": "invalid", "default-user": "user"},
			want: []string{"set qrexec=1"}, postInstall: true, rejected: []string{"gui"}},
		{name: "017_notify_tools_template_based", templateBased: true,
			req: map[string]string{"version": "1", "qrexec": "1", "gui": "1", "default-user": "user"}},
		{name: "018_notify_tools_already_installed",
			before: map[string]string{"qrexec": "1", "gui": "1"},
			req:    map[string]string{"gui": "1", "version": "1", "default-user": "user", "qrexec": "1"}},
		{name: "20_version", before: qrexecOn,
			req:  map[string]string{"qubes-agent-version": "4.1"},
			want: []string{"set qubes-agent-version=4.1"}},
		{name: "21_version_invalid/4", before: qrexecOn,
			req: map[string]string{"qubes-agent-version": "4"}, rejected: []string{"qubes-agent-version"}},
		{name: "21_version_invalid/4.1.1", before: qrexecOn,
			req: map[string]string{"qubes-agent-version": "4.1.1"}, rejected: []string{"qubes-agent-version"}},
		{name: "21_version_invalid/notnumeric", before: qrexecOn,
			req: map[string]string{"qubes-agent-version": "notnumeric"}, rejected: []string{"qubes-agent-version"}},
		{name: "21_version_invalid/40000000", before: qrexecOn,
			req: map[string]string{"qubes-agent-version": "40000000"}, rejected: []string{"qubes-agent-version"}},
		{name: "30_distro_meta", before: qrexecOn,
			req:  map[string]string{"os": "Linux", "os-distribution": "debian", "os-version": "12", "os-eol": "2026-06-10"},
			want: []string{"set os-distribution=debian", "set os-version=12", "set os-eol=2026-06-10"}},
		{name: "031_distro_meta_ubuntu", before: qrexecOn,
			req: map[string]string{"os": "Linux", "os-distribution": "ubuntu", "os-distribution-like": "debian",
				"os-version": "22.04", "os-eol": "2027-06-01"},
			want: []string{"set os-distribution=ubuntu", "set os-distribution-like=debian",
				"set os-version=22.04", "set os-eol=2027-06-01"}},
		{name: "032_distro_meta_invalid", before: qrexecOn,
			req: map[string]string{"os": "Linux", "os-distribution": "ubuntu", "os-distribution-like": "debian",
				"os-version": "123aaa", "os-eol": "20270601"},
			want:     []string{"set os-distribution=ubuntu", "set os-distribution-like=debian"},
			rejected: []string{"os-version", "os-eol"}},
		{name: "033_distro_meta_invalid2", before: qrexecOn,
			req: map[string]string{"os": "Linux", "os-distribution": "ubuntu", "os-distribution-like": "debian",
				"os-version": "a123", "os-eol": "2027-06-40"},
			want:     []string{"set os-distribution=ubuntu", "set os-distribution-like=debian"},
			rejected: []string{"os-version", "os-eol"}},
		{name: "034_distro_meta_empty", before: qrexecOn,
			req: map[string]string{"os": "", "os-distribution": "", "os-distribution-like": "", "os-version": "", "os-eol": ""}},
	})
}

func TestCoreFeaturesBootModes(t *testing.T) {
	flood := func(from, to int) map[string]string {
		m := map[string]string{}
		for i := from; i <= to; i++ {
			m[fmt.Sprintf("boot-mode.kernelopts.garbage%d", i)] = fmt.Sprintf("garbage%d", i)
		}
		return m
	}
	// expected changes for 047: the 10 old entries deleted, the 55 new set,
	// each group in name order.
	var want047 []string
	for _, k := range sortedKeys(flood(1, 10)) {
		want047 = append(want047, "del "+k)
	}
	for _, k := range sortedKeys(flood(11, 65)) {
		want047 = append(want047, "set "+k+"="+flood(11, 65)[k])
	}
	var rejected046 []string
	for k := range flood(1, 65) {
		rejected046 = append(rejected046, k)
	}

	runCoreCases(t, []coreCase{
		{name: "040_bootmode_noname",
			req:  map[string]string{"boot-mode.kernelopts.vmreq": "vmreq1 vmreq2"},
			want: []string{"set boot-mode.kernelopts.vmreq=vmreq1 vmreq2"}},
		{name: "041_bootmode_withname",
			req:  map[string]string{"boot-mode.name.vmreq": "VMReq", "boot-mode.kernelopts.vmreq": "vmreq1 vmreq2"},
			want: []string{"set boot-mode.kernelopts.vmreq=vmreq1 vmreq2", "set boot-mode.name.vmreq=VMReq"}},
		{name: "042_bootmode_extraname",
			req: map[string]string{
				"boot-mode.name.vmreq1": "VMReq1", "boot-mode.kernelopts.vmreq1": "vmreq1-1 vmreq1-2",
				"boot-mode.name.bad":    "Bad Entry",
				"boot-mode.name.vmreq2": "VMReq2", "boot-mode.kernelopts.vmreq2": "vmreq2-1 vmreq2-2"},
			want: []string{
				"set boot-mode.kernelopts.vmreq1=vmreq1-1 vmreq1-2", "set boot-mode.kernelopts.vmreq2=vmreq2-1 vmreq2-2",
				"set boot-mode.name.vmreq1=VMReq1", "set boot-mode.name.vmreq2=VMReq2"},
			rejected: []string{"boot-mode.name.bad"}},
		{name: "043_bootmode_extrakernelopts",
			req: map[string]string{
				"boot-mode.name.vmreq1": "VMReq1", "boot-mode.kernelopts.vmreq1": "vmreq1-1 vmreq1-2",
				"boot-mode.kernelopts.extra": "extra-opts",
				"boot-mode.name.vmreq2":      "VMReq2", "boot-mode.kernelopts.vmreq2": "vmreq2-1 vmreq2-2"},
			want: []string{
				"set boot-mode.kernelopts.extra=extra-opts",
				"set boot-mode.kernelopts.vmreq1=vmreq1-1 vmreq1-2", "set boot-mode.kernelopts.vmreq2=vmreq2-1 vmreq2-2",
				"set boot-mode.name.vmreq1=VMReq1", "set boot-mode.name.vmreq2=VMReq2"}},
		{name: "044_bootmode_discard_old",
			before: map[string]string{"boot-mode.name.old": "Old", "boot-mode.kernelopts.old": "old1 old2"},
			req:    map[string]string{"boot-mode.name.vmreq1": "VMReq1", "boot-mode.kernelopts.vmreq1": "vmreq1-1 vmreq1-2"},
			want: []string{"del boot-mode.kernelopts.old", "del boot-mode.name.old",
				"set boot-mode.kernelopts.vmreq1=vmreq1-1 vmreq1-2", "set boot-mode.name.vmreq1=VMReq1"}},
		{name: "045_bootmode_update_old",
			before: map[string]string{
				"boot-mode.name.old1": "Old1", "boot-mode.kernelopts.old1": "old1-1 old1-2",
				"boot-mode.name.old2": "Old2", "boot-mode.kernelopts.old2": "old2-1 old2-2"},
			req: map[string]string{
				"boot-mode.name.vmreq1": "VMReq1", "boot-mode.kernelopts.vmreq1": "vmreq1-1 vmreq1-2",
				"boot-mode.kernelopts.old1": "old-newer1-1 old-newer1-2"},
			want: []string{"del boot-mode.kernelopts.old2", "del boot-mode.name.old1", "del boot-mode.name.old2",
				"set boot-mode.kernelopts.old1=old-newer1-1 old-newer1-2",
				"set boot-mode.kernelopts.vmreq1=vmreq1-1 vmreq1-2", "set boot-mode.name.vmreq1=VMReq1"}},
		{name: "046_bootmode_flood1", req: flood(1, 65), rejected: rejected046},
		{name: "047_bootmode_flood2", before: flood(1, 10), req: flood(11, 65), want: want047},
		{name: "048_bootmode_defaultname",
			req: map[string]string{"boot-mode.name.vmreq": "VMReq", "boot-mode.kernelopts.vmreq": "vmreq1 vmreq2",
				"boot-mode.name.default": "No Params"},
			want: []string{"set boot-mode.kernelopts.vmreq=vmreq1 vmreq2",
				"set boot-mode.name.default=No Params", "set boot-mode.name.vmreq=VMReq"}},
		{name: "049_bootmode_multidots",
			req: map[string]string{"boot-mode.name.vmreq": "VMReq", "boot-mode.kernelopts.vmreq": "vmreq1 vmreq2",
				"boot-mode.name.vmreq.two": "VMReq Two", "boot-mode.kernelopts.vmreq.two": "vmreqtwo1 vmreqtwo2"},
			want:     []string{"set boot-mode.kernelopts.vmreq=vmreq1 vmreq2", "set boot-mode.name.vmreq=VMReq"},
			rejected: []string{"boot-mode.name.vmreq.two", "boot-mode.kernelopts.vmreq.two"}},
		{name: "050_bootmode_noid",
			req: map[string]string{"boot-mode.name.vmreq": "VMReq", "boot-mode.kernelopts.vmreq": "vmreq1 vmreq2",
				"boot-mode.name.": "Ghost", "boot-mode.kernelopts.": "ghost"},
			want:     []string{"set boot-mode.kernelopts.vmreq=vmreq1 vmreq2", "set boot-mode.name.vmreq=VMReq"},
			rejected: []string{"boot-mode.name.", "boot-mode.kernelopts."}},
		{name: "051_bootmode_defaultkernelopts",
			req: map[string]string{"boot-mode.name.vmreq": "VMReq", "boot-mode.kernelopts.vmreq": "vmreq1 vmreq2",
				"boot-mode.kernelopts.default": "default_kernelopts"},
			want:     []string{"set boot-mode.kernelopts.vmreq=vmreq1 vmreq2", "set boot-mode.name.vmreq=VMReq"},
			rejected: []string{"boot-mode.kernelopts.default"}},
		{name: "052_bootmode_active_appvm_default", isTemplate: true,
			req: map[string]string{
				"boot-mode.name.vmreq1": "VMReq1", "boot-mode.kernelopts.vmreq1": "vmreq1-1 vmreq1-2",
				"boot-mode.name.vmreq2": "VMReq2", "boot-mode.kernelopts.vmreq2": "vmreq2-1 vmreq2-2",
				"boot-mode.active": "vmreq1", "boot-mode.appvm-default": "vmreq2"},
			want: []string{
				"set boot-mode.kernelopts.vmreq1=vmreq1-1 vmreq1-2", "set boot-mode.kernelopts.vmreq2=vmreq2-1 vmreq2-2",
				"set boot-mode.name.vmreq1=VMReq1", "set boot-mode.name.vmreq2=VMReq2",
				"set boot-mode.active=vmreq1", "set boot-mode.appvm-default=vmreq2"}},
		{name: "053_bootmode_active_appvm_default_mod", isTemplate: true,
			before: map[string]string{
				"boot-mode.kernelopts.old1": "oldopts1", "boot-mode.active": "old1",
				"boot-mode.kernelopts.old2": "oldopts2", "boot-mode.appvm-default": "old2"},
			req: map[string]string{
				"boot-mode.name.vmreq1": "VMReq1", "boot-mode.kernelopts.vmreq1": "vmreq1-1 vmreq1-2",
				"boot-mode.name.vmreq2": "VMReq2", "boot-mode.kernelopts.vmreq2": "vmreq2-1 vmreq2-2",
				"boot-mode.active": "vmreq1", "boot-mode.appvm-default": "vmreq2"},
			want: []string{
				"del boot-mode.kernelopts.old1", "del boot-mode.kernelopts.old2",
				"set boot-mode.kernelopts.vmreq1=vmreq1-1 vmreq1-2", "set boot-mode.kernelopts.vmreq2=vmreq2-1 vmreq2-2",
				"set boot-mode.name.vmreq1=VMReq1", "set boot-mode.name.vmreq2=VMReq2",
				"set boot-mode.active=vmreq1", "set boot-mode.appvm-default=vmreq2"}},
		{name: "054_bootmode_active_appvm_default_wrong", isTemplate: true,
			req: map[string]string{"boot-mode.name.vmreq": "VMReq", "boot-mode.kernelopts.vmreq": "vmreq1 vmreq2",
				"boot-mode.active": "nonexistent1", "boot-mode.appvm-default": "nonexistent2"},
			want:     []string{"set boot-mode.kernelopts.vmreq=vmreq1 vmreq2", "set boot-mode.name.vmreq=VMReq"},
			rejected: []string{"boot-mode.active", "boot-mode.appvm-default"}},
		{name: "054_bootmode_active_appvm_default_wrong/appvm_default_needs_template",
			req:      map[string]string{"boot-mode.kernelopts.vmreq": "vmreq1 vmreq2", "boot-mode.appvm-default": "vmreq"},
			want:     []string{"set boot-mode.kernelopts.vmreq=vmreq1 vmreq2"},
			rejected: []string{"boot-mode.appvm-default"}},
		{name: "055_bootmode_preserve_oldvals",
			before: map[string]string{
				"boot-mode.name.old1": "Old1", "boot-mode.kernelopts.old1": "oldopts1",
				"boot-mode.name.old2": "Old2", "boot-mode.kernelopts.old2": "oldopts2"},
			req: map[string]string{
				"boot-mode.name.old1": "Old1", "boot-mode.kernelopts.old1": "oldopts1",
				"boot-mode.name.old2": "Old2", "boot-mode.kernelopts.old2": "oldopts2"},
			want: []string{"set boot-mode.kernelopts.old1=oldopts1", "set boot-mode.kernelopts.old2=oldopts2",
				"set boot-mode.name.old1=Old1", "set boot-mode.name.old2=Old2"}},
		{name: "056_bootmode_default_user",
			req: map[string]string{"boot-mode.name.vmreq": "VMReq", "boot-mode.kernelopts.vmreq": "vmreq1 vmreq2",
				"boot-mode.default-user.vmreq": "altuser"},
			want: []string{"set boot-mode.kernelopts.vmreq=vmreq1 vmreq2",
				"set boot-mode.default-user.vmreq=altuser", "set boot-mode.name.vmreq=VMReq"}},
		{name: "056_bootmode_default_user_mismatch",
			req: map[string]string{"boot-mode.name.vmreq": "VMReq", "boot-mode.kernelopts.vmreq": "vmreq1 vmreq2",
				"boot-mode.default-user.nope": "altuser"},
			want:     []string{"set boot-mode.kernelopts.vmreq=vmreq1 vmreq2", "set boot-mode.name.vmreq=VMReq"},
			rejected: []string{"boot-mode.default-user.nope"}},
		{name: "056_bootmode_default_user_mismatch/unsafe_user",
			req: map[string]string{"boot-mode.kernelopts.vmreq": "vmreq1 vmreq2",
				"boot-mode.default-user.vmreq": "alt user=root"},
			want:     []string{"set boot-mode.kernelopts.vmreq=vmreq1 vmreq2"},
			rejected: []string{"boot-mode.default-user.vmreq"}},
		{name: "057_bootmode_default_user_default_bootmode",
			req:      map[string]string{"boot-mode.default-user.default": "altuser"},
			rejected: []string{"boot-mode.default-user.default"}},
		{name: "058_bootmode_standalone_default_good",
			req: map[string]string{"boot-mode.kernelopts.orig-mode": "test1", "boot-mode.kernelopts.new-mode": "test2",
				"boot-mode.standalone-default": "new-mode"},
			want: []string{"set boot-mode.kernelopts.new-mode=test2", "set boot-mode.kernelopts.orig-mode=test1",
				"set boot-mode.standalone-default=new-mode"}},
		{name: "059_bootmode_standalone_default_bad",
			req: map[string]string{"boot-mode.kernelopts.orig-mode": "test1", "boot-mode.kernelopts.new-mode": "test2",
				"boot-mode.standalone-default": "missing-mode"},
			want:     []string{"set boot-mode.kernelopts.new-mode=test2", "set boot-mode.kernelopts.orig-mode=test1"},
			rejected: []string{"boot-mode.standalone-default"}},
		{name: "060_anon_timezone_set",
			req: map[string]string{"anon-timezone": "1"}, want: []string{"set anon-timezone=1"}},
		{name: "061_anon_timezone_prevent_unset",
			before: map[string]string{"anon-timezone": "1"},
			req:    map[string]string{"anon-timezone": "0"}},
	})

	t.Run("100_servicevm_feature", func(t *testing.T) {
		f := New("vm", nil)
		require.NoError(t, SetServiceVM(f, true))
		v, ok := f.Get("servicevm")
		assert.True(t, ok)
		assert.Equal(t, "1", v)
		require.NoError(t, SetServiceVM(f, false))
		_, ok = f.Get("servicevm")
		assert.False(t, ok)
		require.NoError(t, SetServiceVM(f, false), "no servicevm feature to remove is fine")
	})
}

// TestWindowsFeatures reproduces TC_10_WindowsFeatures.
func TestWindowsFeatures(t *testing.T) {
	full := map[string]string{
		"os": "Windows", "rpc-clipboard": "1", "stubdom-qrexec": "1",
		"audio-model": "ich6", "timezone": "localtime", "no-monitor-layout": "1",
	}
	withAudio := map[string]string{}
	for k, v := range full {
		withAudio[k] = v
	}
	withAudio["audio-model"] = "ich9"
	tools := func(qrexec, os string) map[string]string {
		return map[string]string{"gui": "1", "version": "1", "default-user": "user", "qrexec": qrexec, "os": os}
	}
	for _, tc := range []struct {
		name          string
		before        map[string]string
		req           map[string]string
		want          map[string]string
		props         bool // maxmem=0 and qrexec_timeout=6000 set
		templateBased bool
	}{
		{name: "000_notify_tools_full", req: tools("1", "Windows"), want: full, props: true},
		{name: "001_notify_tools_no_qrexec", req: tools("0", "Windows"), want: map[string]string{"os": "Windows"}},
		{name: "002_notify_tools_other_os", req: tools("1", "other"), want: map[string]string{}},
		{name: "003_notify_tools_no_override", before: map[string]string{"audio-model": "ich9"},
			req: tools("1", "Windows"), want: withAudio, props: true},
		{name: "003_notify_tools_no_override/linux", req: tools("1", "Linux"), want: map[string]string{"os": "Linux"}},
		{name: "003_notify_tools_no_override/template_based", templateBased: true,
			req: tools("1", "Windows"), want: map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm, _ := newVM(t, "vm", tc.before)
			vm.maxmem, vm.qrexecTimeout = 4000, 60
			if tc.templateBased {
				vm.tpl = &testVM{f: New("template", nil)}
			}
			var res Result
			require.NoError(t, windowsFeatures(vm, tc.req, &res))
			assert.Equal(t, tc.want, vm.f.All())
			if tc.props {
				assert.Equal(t, 0, vm.maxmem)
				assert.Equal(t, 6000, vm.qrexecTimeout)
			} else {
				assert.Equal(t, 4000, vm.maxmem)
				assert.Equal(t, 60, vm.qrexecTimeout)
			}
		})
	}

	t.Run("000_notify_tools_full/property_refused", func(t *testing.T) {
		vm, _ := newVM(t, "vm", nil)
		vm.failProps = true
		var res Result
		assert.ErrorIs(t, windowsFeatures(vm, tools("1", "Windows"), &res), errPropRefused)
	})
}

// TestServices reproduces the features-request and feature-event cases of
// TC_20_Services; the QubesDB writes become the entries ServiceEntry maps a
// change to.
func TestServices(t *testing.T) {
	t.Run("001_feature_set", func(t *testing.T) {
		for _, tc := range []struct{ feature, value, path, want string }{
			{"service.test_no_oldvalue", "1", "/qubes-service/test_no_oldvalue", "1"},
			{"service.test_oldvalue", "1", "/qubes-service/test_oldvalue", "1"},
			{"service.test_disable", "", "/qubes-service/test_disable", "0"},
			{"service.test_disable_no_oldvalue", "", "/qubes-service/test_disable_no_oldvalue", "0"},
			{"service.truthy", "yes", "/qubes-service/truthy", "1"},
		} {
			path, v, ok := ServiceEntry(tc.feature, tc.value, false)
			assert.True(t, ok, tc.feature)
			assert.Equal(t, tc.path, path)
			assert.Equal(t, tc.want, v, tc.feature)
		}
		_, _, ok := ServiceEntry("not-a-service", "1", false)
		assert.False(t, ok)
		_, _, ok = ServiceEntry("service.app-dispvm."+fmt.Sprintf("%048d", 0), "1", false)
		assert.False(t, ok, "names over 48 bytes are not written")
	})
	t.Run("002_feature_delete", func(t *testing.T) {
		path, v, ok := ServiceEntry("service.test3", "", true)
		assert.True(t, ok)
		assert.Equal(t, "/qubes-service/test3", path)
		assert.Equal(t, "", v)
	})
	t.Run("003_feature_set_invalid", func(t *testing.T) {
		for _, name := range []string{"", ".", "a/b", fmt.Sprintf("%060d", 0)} {
			err := CheckServiceName(Event{Kind: KindPreSet, Feature: "service." + name, Value: "1"})
			assert.ErrorIs(t, err, ErrInvalidValue, "service %q", name)
		}
		assert.NoError(t, CheckServiceName(Event{Kind: KindPreSet, Feature: "service.ok", Value: "1"}))
		assert.NoError(t, CheckServiceName(Event{Kind: KindPreSet, Feature: "other", Value: "1"}))
	})

	prefixCases(t, "supported-service.", supportedServices, "010_supported_services", "011_supported_services_add", "012_supported_services_remove")

	t.Run("012_supported_services_remove/apparmor", func(t *testing.T) {
		vm, _ := newVM(t, "vm", nil)
		var res Result
		require.NoError(t, supportedServices(vm, map[string]string{"supported-service.apparmor": "1"}, &res))
		assert.Equal(t, map[string]string{"supported-service.apparmor": "1", "apparmor": "1"}, vm.f.All())
		require.NoError(t, supportedServices(vm, map[string]string{"supported-service.other": "1"}, &res))
		assert.Equal(t, map[string]string{"supported-service.other": "1"}, vm.f.All())

		vm, _ = newVM(t, "vm", map[string]string{"apparmor": ""})
		require.NoError(t, supportedServices(vm, map[string]string{"supported-service.apparmor": "1"}, &res))
		v, _ := vm.f.Get("apparmor")
		assert.Equal(t, "", v, "the user's apparmor=off wins")
		require.NoError(t, supportedServices(vm, map[string]string{"supported-service.other": "1"}, &res))
		_, ok := vm.f.Get("apparmor")
		assert.True(t, ok, "apparmor not \"1\" is kept")
	})
}

// prefixCases runs the set/add/remove cases shared by supported-service,
// supported-feature and supported-rpc.
func prefixCases(t *testing.T, prefix string, h handler, setName, addName, removeName string) {
	t.Helper()
	first := prefix + "test1"
	if prefix == "supported-rpc." {
		first = prefix + "qubes.SomeService"
	}
	for _, tc := range []struct {
		name   string
		before map[string]string
		req    map[string]string
		want   map[string]string
	}{
		{setName, nil,
			map[string]string{first: "1", prefix + "test2": "0", prefix + "test3": "some text", "no-feature": "1"},
			map[string]string{first: "1"}},
		{addName, map[string]string{first: "1"},
			map[string]string{first: "1", prefix + "test2": "1"},
			map[string]string{first: "1", prefix + "test2": "1"}},
		{removeName, map[string]string{first: "1"},
			map[string]string{prefix + "test2": "1"},
			map[string]string{prefix + "test2": "1"}},
		{removeName + "/empty_request_keeps_all", map[string]string{first: "1"},
			map[string]string{prefix + "test2": "0"},
			map[string]string{first: "1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm, rec := newVM(t, "vm", tc.before)
			var res Result
			require.NoError(t, h(vm, tc.req, &res))
			assert.Equal(t, tc.want, vm.f.All())
			if _, existed := tc.before[first]; existed {
				assert.NotContains(t, rec.changes(), "set "+first+"=1", "an existing entry is left untouched")
			}
		})
	}
}

// TestSupportedFeatures reproduces TC_30_SupportedFeatures.
func TestSupportedFeatures(t *testing.T) {
	prefixCases(t, "supported-feature.", supportedFeatures,
		"010_supported_features", "011_supported_features_add", "012_supported_features_remove")
	prefixCases(t, "supported-rpc.", supportedRPC,
		"020_supported_rpc", "021_supported_rpc_add", "022_supported_rpc_remove")

	t.Run("020_supported_rpc/template_based", func(t *testing.T) {
		req := map[string]string{"supported-rpc.x": "1", "supported-feature.y": "1", "supported-service.z": "1"}
		vm, _ := templateBasedVM(t)
		var res Result
		for _, h := range []handler{supportedRPC, supportedFeatures, supportedServices} {
			require.NoError(t, h(vm, req, &res))
		}
		assert.Equal(t, map[string]string{"supported-rpc.x": "1"}, vm.f.All(),
			"only supported-rpc applies to template-based VMs")
	})
}
