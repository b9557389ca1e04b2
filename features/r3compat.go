package features

import "strconv"

// Starting VMs based on an old R3.x system (QubesOS issue 1812).
//
// An R3.x root image has a qrexec agent that never sends a feature request
// and reads its configuration from QubesDB entries R4 no longer needs.
// Two things make such a VM start and work: the daemon must not wait for a
// qrexec agent that never advertised itself (QrexecWait, QrexecEnv), and
// it must write the R3-era entries (R3Entries) when it creates the VM's
// QubesDB.

// QrexecWait reports whether starting vm should wait for its qrexec agent:
// only if vm or its template chain has advertised qrexec (a true qrexec
// feature). When it is false, the daemon starts qrexec-daemon without
// waiting (Qubes' QREXEC_STARTUP_NOWAIT), so a VM whose tools never said
// they have qrexec, such as an R3.x system, starts instead of timing out.
func QrexecWait(vm VM) bool {
	v, _ := CheckWithTemplate(vm, "qrexec")
	return v != ""
}

// QrexecEnv returns the environment entries for vm's qrexec-daemon:
// QREXEC_STARTUP_TIMEOUT=<timeout> when QrexecWait(vm) is true, else
// QREXEC_STARTUP_NOWAIT=1.
func QrexecEnv(vm VM, timeoutSeconds int) []string {
	if QrexecWait(vm) {
		return []string{"QREXEC_STARTUP_TIMEOUT=" + strconv.Itoa(timeoutSeconds)}
	}
	return []string{"QREXEC_STARTUP_NOWAIT=1"}
}

// R3Info is what R3Entries needs to know about a VM besides its features.
// The caller fills it from its own VM type.
type R3Info struct {
	Template     bool   // the VM is a TemplateVM
	BaseTemplate string // name of its template; "" if it has none
	Updateable   bool
	Debug        bool
	Timezone     string // the host's time zone name; "" for none
	// Network is set when the VM provides network to others (NetVM or
	// ProxyVM): its own gateway, netmask and DNS servers.
	Network *R3Network
	// Uplink is set when the VM has a netvm: its own IP, and the netvm's
	// gateway, netmask and DNS servers.
	Uplink *R3Network
}

// R3Network is one side of a VM's network configuration.
type R3Network struct {
	IP, Gateway, Netmask string
	DNS                  [2]string // primary, secondary
}

// r3Services maps features to the R3 service names they enable
// (qubes/ext/r3compatibility.py).
var r3Services = []struct{ feature, service string }{
	{"service.ntpd", "ntpd"},
	{"check-updates", "qubes-update-check"},
	{"dvm", "qubes-dvm"},
	{"updates-proxy-setup", "yum-proxy-setup"},
}

// R3Entries returns the QubesDB entries (path to value) an R3.x system
// reads: /qubes-vm-type (TemplateVM, NetVM, ProxyVM or AppVM),
// /qubes-vm-updateable ("True"/"False"), /qubes-vm-persistence,
// /qubes-base-template, /qubes-debug-mode, /qubes-timezone (unless the
// anon-timezone feature is on along the template chain), the network
// entries (/qubes-netvm-* for a VM that provides network, /qubes-ip,
// /qubes-netmask, /qubes-gateway, /qubes-*-dns for a VM with a netvm),
// /qubes-iptables-error, and /qubes-service/<name> "0"/"1" for the
// features R3 expressed as services (service.ntpd, check-updates, dvm,
// updates-proxy-setup), taken from vm's own features.
//
// The iptables rules themselves (written unless the VM's template chain
// advertises qubes-firewall, see LegacyFirewall) are the firewall code's
// business and are not produced here.
func R3Entries(vm VM, info R3Info) map[string]string {
	e := map[string]string{
		"/qubes-vm-type":        r3Type(info),
		"/qubes-vm-updateable":  pyBool(info.Updateable),
		"/qubes-vm-persistence": "rw-only",
		"/qubes-base-template":  info.BaseTemplate,
		"/qubes-debug-mode":     bit(info.Debug),
		"/qubes-iptables-error": "",
	}
	if info.Updateable {
		e["/qubes-vm-persistence"] = "full"
	}
	if v, _ := CheckWithTemplate(vm, "anon-timezone"); info.Timezone != "" && v == "" {
		e["/qubes-timezone"] = info.Timezone
	}
	// the netvm side is under /qubes-netvm-, the uplink side under /qubes-
	network := func(prefix string, n *R3Network) {
		e[prefix+"gateway"] = n.Gateway
		e[prefix+"netmask"] = n.Netmask
		e[prefix+"primary-dns"] = n.DNS[0]
		e[prefix+"secondary-dns"] = n.DNS[1]
	}
	if n := info.Network; n != nil {
		network("/qubes-netvm-", n)
		e["/qubes-netvm-network"] = n.Gateway // only checked for being non-empty
	}
	if n := info.Uplink; n != nil {
		network("/qubes-", n)
		e["/qubes-ip"] = n.IP
	}
	if f := vm.Features(); f != nil {
		for _, s := range r3Services {
			if v, ok := f.Get(s.feature); ok {
				e[ServiceDBPrefix+s.service] = bit(v != "")
			}
		}
	}
	return e
}

// LegacyFirewall reports whether vm needs the R3-format iptables rules in
// QubesDB: true unless its template chain advertises qubes-firewall.
func LegacyFirewall(vm VM) bool {
	v, _ := CheckWithTemplate(vm, "qubes-firewall")
	return v == ""
}

func r3Type(info R3Info) string {
	switch {
	case info.Template:
		return "TemplateVM"
	case info.Network != nil && info.Uplink != nil:
		return "ProxyVM"
	case info.Network != nil:
		return "NetVM"
	default:
		return "AppVM"
	}
}

// pyBool formats b as Python's str(bool) does, which R3 agents compare
// against.
func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}
