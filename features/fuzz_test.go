package features

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// decodeRequest turns fuzz input into untrusted request entries: one
// "key=value" a line, the value being any bytes.
func decodeRequest(data []byte) map[string][]byte {
	m := map[string][]byte{}
	for _, line := range bytes.Split(data, []byte("\n")) {
		k, v, _ := bytes.Cut(line, []byte("="))
		m[string(k)] = v
	}
	return m
}

// FuzzHandleFeaturesRequest feeds arbitrary requests to both entry points
// of the request handler: they must never panic, a refused request must
// change nothing, and an accepted one must never set an unsafe default
// user or store a value outside the request's safe set, and must report
// exactly the keys that are not valid feature names (none for NotifyTools,
// which reads fixed keys).
func FuzzHandleFeaturesRequest(f *testing.F) {
	for _, seed := range []string{
		"qrexec=1\ngui=1\nos=Windows\ndefault-user=user",
		"qrexec=0\ngui=0\ngui-emulated=1\nvmexec=1\nqubes-firewall=1",
		"default-user=root user\nqrexec=1",
		"default-user=..\nos=Linux",
		"os-distribution=debian\nos-version=12\nos-eol=2026-06-10\nqubes-agent-version=4.1",
		"boot-mode.kernelopts.a=x y\nboot-mode.name.a=A\nboot-mode.default-user.a=u\nboot-mode.active=a",
		"boot-mode.name.default=D\nboot-mode.appvm-default=default\nboot-mode.standalone-default=x",
		"supported-service.apparmor=1\nsupported-feature.x=1\nsupported-rpc.qubes.Y=1",
		"anon-timezone=1\nx=$bad",
		"k=\xfe\x01",
		"a/b=1",
		"qrexec=1\nbad key!=1\nsupported-service.x=1",
		"=",
		"",
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, template bool) {
		untrusted := decodeRequest(data)
		for _, notify := range []bool{false, true} {
			vm, _ := newVM(t, "vm", map[string]string{
				"supported-rpc.old": "1", "boot-mode.kernelopts.old": "o", "gui": "",
			})
			vm.template = template
			before := vm.f.All()
			var res Result
			var err error
			if notify {
				res, err = HandleNotifyTools(vm, untrusted)
			} else {
				res, err = HandleFeaturesRequest(vm, untrusted)
			}
			if err != nil {
				if got := vm.f.All(); !equalMaps(before, got) || vm.userSet || vm.qrexecTimeout != 0 {
					t.Fatalf("refused request changed the VM: %v -> %v", before, got)
				}
				continue
			}
			var wantInvalid []string
			if !notify {
				for _, k := range sortedKeys(untrusted) {
					if ValidName(k) != nil {
						wantInvalid = append(wantInvalid, k)
					}
				}
			}
			if !slices.Equal(res.InvalidKeys, wantInvalid) {
				t.Fatalf("invalid keys %q, want %q", res.InvalidKeys, wantInvalid)
			}
			if vm.userSet && ValidUser(vm.user) != nil {
				t.Fatalf("unsafe default user %q accepted", vm.user)
			}
			for k, v := range vm.f.All() {
				if ValidName(k) != nil {
					t.Fatalf("invalid feature name %q stored", k)
				}
				for i := 0; i < len(v); i++ {
					if !strings.ContainsRune(requestSafe, rune(v[i])) {
						t.Fatalf("feature %s=%q outside the safe set", k, v)
					}
				}
			}
			if v, _ := vm.f.Get("gui"); v != "" {
				t.Fatalf("the user's gui=off was overridden with %q", v)
			}
		}
	})
}

// FuzzValidUser checks that ValidUser never accepts a name outside the
// default_user property's character set, or one of the names it refuses.
func FuzzValidUser(f *testing.F) {
	for _, seed := range []string{"user", "root", "a b", "a:b", `"`, "'", "..", "-x", "", "ü", "x\x00", "Administrator"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidUser(name) != nil {
			return
		}
		if name == "" || name == "." || name == ".." || name[0] == '-' || len(name) > 32 {
			t.Fatalf("accepted %q", name)
		}
		for i := 0; i < len(name); i++ {
			if !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+,.", rune(name[i])) {
				t.Fatalf("accepted %q with unsafe byte %q", name, name[i])
			}
		}
	})
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
