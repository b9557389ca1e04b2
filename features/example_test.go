package features_test

import (
	"fmt"

	"github.com/vmpool/vmpool/features"
)

// qube is a minimal caller-side VM type.
type qube struct {
	features *features.Features
	template *qube
	user     string
}

func (q *qube) Features() *features.Features { return q.features }
func (q *qube) Template() features.VM {
	if q.template == nil {
		return nil
	}
	return q.template
}
func (q *qube) NetVM() features.VM               { return nil }
func (q *qube) IsTemplate() bool                 { return q.template == nil }
func (q *qube) SetMaxMem(int) error              { return nil }
func (q *qube) SetQrexecTimeout(int) error       { return nil }
func (q *qube) DefaultUser() (string, bool)      { return q.user, q.user != "" }
func (q *qube) SetDefaultUser(user string) error { q.user = user; return nil }

// A template's tools report what they provide; the template gets the
// features it lacked and its default user.
func Example() {
	hooks := &features.Hooks{}
	hooks.On(features.KindSet, "*", func(e features.Event) error {
		fmt.Printf("%s: %s=%q\n", e.VM, e.Feature, e.Value)
		return nil
	})
	tpl := &qube{features: features.New("debian-12", hooks)}

	res, err := features.HandleFeaturesRequest(tpl, map[string][]byte{
		"qrexec":       []byte("1"),
		"gui":          []byte("1"),
		"default-user": []byte("user"),
		"version":      []byte("4"),
	})
	fmt.Println(err, res.PostInstall, tpl.user)

	_, err = features.HandleFeaturesRequest(tpl, map[string][]byte{"qrexec": []byte("$(reboot)")})
	fmt.Println(err)
	// Output:
	// debian-12: qrexec="1"
	// debian-12: gui="1"
	// <nil> true user
	// invalid feature request: value of qrexec outside safe set "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.,_= "
}

// Features are looked up along the template chain; the first value found
// wins, even an empty (false) one.
func ExampleCheckWithTemplate() {
	tpl := &qube{features: features.New("fedora", nil)}
	app := &qube{features: features.New("work", nil), template: tpl}
	_ = tpl.features.Set("qrexec", true)
	_ = tpl.features.Set("gui", true)
	_ = app.features.Set("gui", false)

	for _, name := range []string{"qrexec", "gui", "vmexec"} {
		v, ok := features.CheckWithTemplate(app, name)
		fmt.Printf("%s=%q found=%v\n", name, v, ok)
	}
	// Output:
	// qrexec="1" found=true
	// gui="" found=true
	// vmexec="" found=false
}

// A VM whose template never advertised qrexec, such as an R3.x system, is
// started without waiting for its qrexec agent.
func ExampleQrexecEnv() {
	r3 := &qube{features: features.New("fedora-23", nil)}
	fmt.Println(features.QrexecEnv(r3, 60))
	_ = r3.features.Set("qrexec", true)
	fmt.Println(features.QrexecEnv(r3, 60))
	// Output:
	// [QREXEC_STARTUP_NOWAIT=1]
	// [QREXEC_STARTUP_TIMEOUT=60]
}
