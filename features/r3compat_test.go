package features

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestR3Compatibility covers QubesOS issue 1812: a VM based on an R3.x
// system starts (no wait for an agent that never advertised qrexec) and
// gets the R3-era QubesDB entries.
func TestR3Compatibility(t *testing.T) {
	t.Run("qrexec_wait_follows_template_chain", func(t *testing.T) {
		r3tpl := &testVM{f: New("fedora-23", nil), template: true} // never sent a request
		r3app := &testVM{f: New("work", nil), tpl: r3tpl}
		assert.False(t, QrexecWait(r3app))
		assert.Equal(t, []string{"QREXEC_STARTUP_NOWAIT=1"}, QrexecEnv(r3app, 60))

		// once the template's tools advertise qrexec, its VMs wait for it
		_, err := HandleFeaturesRequest(r3tpl, raw(map[string]string{"qrexec": "1"}))
		require.NoError(t, err)
		assert.True(t, QrexecWait(r3app))
		assert.Equal(t, []string{"QREXEC_STARTUP_TIMEOUT=60"}, QrexecEnv(r3app, 60))

		// qrexec=0 (set by the user or reported as absent) means no wait
		require.NoError(t, r3app.f.Set("qrexec", false))
		assert.False(t, QrexecWait(r3app))
	})

	uplink := &R3Network{IP: "10.137.0.5", Gateway: "10.137.0.1", Netmask: "255.255.255.255", DNS: [2]string{"10.139.1.1", "10.139.1.2"}}
	own := &R3Network{Gateway: "10.137.0.1", Netmask: "255.255.255.0", DNS: [2]string{"10.139.1.1", "10.139.1.2"}}
	for _, tc := range []struct {
		name string
		info R3Info
		want map[string]string
	}{
		{"appvm", R3Info{BaseTemplate: "fedora-23", Uplink: uplink, Timezone: "Europe/Warsaw"}, map[string]string{
			"/qubes-vm-type": "AppVM", "/qubes-vm-updateable": "False", "/qubes-vm-persistence": "rw-only",
			"/qubes-base-template": "fedora-23", "/qubes-debug-mode": "0", "/qubes-iptables-error": "",
			"/qubes-timezone": "Europe/Warsaw",
			"/qubes-ip":       "10.137.0.5", "/qubes-netmask": "255.255.255.255", "/qubes-gateway": "10.137.0.1",
			"/qubes-primary-dns": "10.139.1.1", "/qubes-secondary-dns": "10.139.1.2",
		}},
		{"templatevm", R3Info{Template: true, Updateable: true, Debug: true}, map[string]string{
			"/qubes-vm-type": "TemplateVM", "/qubes-vm-updateable": "True", "/qubes-vm-persistence": "full",
			"/qubes-base-template": "", "/qubes-debug-mode": "1", "/qubes-iptables-error": "",
		}},
		{"netvm", R3Info{Network: own}, map[string]string{
			"/qubes-vm-type": "NetVM", "/qubes-vm-updateable": "False", "/qubes-vm-persistence": "rw-only",
			"/qubes-base-template": "", "/qubes-debug-mode": "0", "/qubes-iptables-error": "",
			"/qubes-netvm-network": "10.137.0.1", "/qubes-netvm-gateway": "10.137.0.1",
			"/qubes-netvm-netmask":     "255.255.255.0",
			"/qubes-netvm-primary-dns": "10.139.1.1", "/qubes-netvm-secondary-dns": "10.139.1.2",
		}},
	} {
		t.Run("entries_"+tc.name, func(t *testing.T) {
			vm := &testVM{f: New(tc.name, nil)}
			assert.Equal(t, tc.want, R3Entries(vm, tc.info))
		})
	}

	t.Run("entries_proxyvm", func(t *testing.T) {
		vm := &testVM{f: New("sys-firewall", nil)}
		e := R3Entries(vm, R3Info{Network: own, Uplink: uplink})
		assert.Equal(t, "ProxyVM", e["/qubes-vm-type"])
		assert.Equal(t, "10.137.0.5", e["/qubes-ip"])
		assert.Equal(t, "10.137.0.1", e["/qubes-netvm-gateway"])
	})

	t.Run("entries_services", func(t *testing.T) {
		vm := &testVM{f: New("vm", nil)}
		require.NoError(t, vm.f.Load(map[string]string{
			"service.ntpd": "1", "check-updates": "", "dvm": "yes", "updates-proxy-setup": "1", "service.cups": "1",
		}))
		e := R3Entries(vm, R3Info{})
		assert.Equal(t, "1", e["/qubes-service/ntpd"])
		assert.Equal(t, "0", e["/qubes-service/qubes-update-check"])
		assert.Equal(t, "1", e["/qubes-service/qubes-dvm"])
		assert.Equal(t, "1", e["/qubes-service/yum-proxy-setup"])
		assert.NotContains(t, e, "/qubes-service/cups", "other services are not R3 compatibility entries")
	})

	t.Run("entries_anon_timezone", func(t *testing.T) {
		tpl := &testVM{f: New("whonix", nil)}
		require.NoError(t, tpl.f.Set("anon-timezone", true))
		vm := &testVM{f: New("anon", nil), tpl: tpl}
		assert.NotContains(t, R3Entries(vm, R3Info{Timezone: "Europe/Warsaw"}), "/qubes-timezone")
	})

	t.Run("legacy_firewall", func(t *testing.T) {
		tpl := &testVM{f: New("tpl", nil)}
		vm := &testVM{f: New("sys-firewall", nil), tpl: tpl}
		assert.True(t, LegacyFirewall(vm))
		require.NoError(t, tpl.f.Set("qubes-firewall", true))
		assert.False(t, LegacyFirewall(vm))
	})
}
