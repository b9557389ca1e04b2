package lvm_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/lvm"
	"github.com/vmpool/vmpool/storage"
)

// fakeLV is a logical volume of the fake.
type fakeLV struct {
	size   int64
	origin string
	active bool
	skip   bool // activation-skip flag
	uuid   string
	pool   bool // the thin pool
}

// fakeLVM is a Runner that keeps one volume group with a thin pool in
// memory and applies the lvm commands the driver runs to it, the way lvm
// does (a failing command inside a batch does not stop the others). It
// records every lvm command, counts the processes and fails the commands
// that fail says to.
type fakeLVM struct {
	mu       sync.Mutex
	vg, thin string
	lvs      map[string]*fakeLV
	seq      int
	calls    [][]string // lvm commands, the report included
	procs    int
	discards []string
	// fail, when set, returns a non-empty message to make a command fail
	// (it does nothing then).
	fail func(args []string) string
	// full makes every new thin LV fail as on an exhausted thin pool.
	full bool
}

func newFake() *fakeLVM {
	f := &fakeLVM{vg: "vg", thin: "pool", lvs: make(map[string]*fakeLV)}
	f.lvs["pool"] = &fakeLV{size: 1 << 30, active: true, pool: true, uuid: "pool-uuid"}
	return f
}

func (f *fakeLVM) LVM(ctx context.Context, cmds [][]string) (lvm.LVMOutput, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.procs++
	var out lvm.LVMOutput
	var stdout strings.Builder
	for _, c := range cmds {
		f.calls = append(f.calls, slices.Clone(c))
		msg := ""
		if f.fail != nil {
			msg = f.fail(c)
		}
		if msg == "" {
			msg = f.apply(c, &stdout)
		}
		out.Stderr = append(out.Stderr, []byte(msg))
	}
	out.Stdout = []byte(stdout.String())
	if len(cmds) == 1 && len(out.Stderr[0]) > 0 {
		return out, &lvm.CommandError{Program: "lvm", Args: cmds[0], Stderr: string(out.Stderr[0])}
	}
	return out, nil
}

func (f *fakeLVM) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if name == "blkdiscard" {
		f.discards = append(f.discards, args[len(args)-1])
	}
	return nil, nil
}

// lvName returns the LV of "vg/lv".
func (f *fakeLVM) lvName(s string) (string, bool) {
	return strings.CutPrefix(s, f.vg+"/")
}

func opt(c []string, name string) (string, bool) {
	for _, a := range c {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func has(c []string, a string) bool { return slices.Contains(c, a) }

// positional returns the arguments after "--".
func positional(c []string) []string {
	i := slices.Index(c, "--")
	if i < 0 {
		var out []string
		for _, a := range c[1:] {
			if !strings.HasPrefix(a, "-") {
				out = append(out, a)
			}
		}
		return out
	}
	return c[i+1:]
}

func (f *fakeLVM) newUUID() string { f.seq++; return fmt.Sprintf("uuid-%d", f.seq) }

// apply runs one command and returns its error message, "" on success.
func (f *fakeLVM) apply(c []string, stdout *strings.Builder) string {
	pos := positional(c)
	switch c[0] {
	case "lvs":
		for _, name := range slices.Sorted(maps.Keys(f.lvs)) {
			l := f.lvs[name]
			attr := []byte("Vwi-a-tz--")
			pool := f.thin
			if l.pool {
				attr, pool = []byte("twi-aotz--"), ""
			}
			if !l.active {
				attr[4] = '-'
			}
			if l.skip {
				attr[9] = 'k'
			}
			fmt.Fprintf(stdout, "  LVM2_VG_NAME='%s' LVM2_LV_NAME='%s' LVM2_POOL_LV='%s' LVM2_LV_SIZE='%d' LVM2_DATA_PERCENT='1.00' LVM2_LV_ATTR='%s' LVM2_ORIGIN='%s' LVM2_LV_METADATA_SIZE='%s' LVM2_METADATA_PERCENT='%s' LVM2_LV_UUID='%s'\n",
				f.vg, name, pool, l.size, attr, l.origin, map[bool]string{true: "4194304"}[l.pool], map[bool]string{true: "10.00"}[l.pool], l.uuid)
		}
		return ""
	case "lvcreate":
		name, _ := opt(c, "--name")
		if len(pos) != 1 {
			return "bad arguments"
		}
		target, ok := f.lvName(pos[0])
		if !ok {
			return fmt.Sprintf("Volume group for %q not found", pos[0])
		}
		if _, dup := f.lvs[name]; dup {
			return fmt.Sprintf("Logical Volume %q already exists in volume group %q", name, f.vg)
		}
		if f.full {
			return fmt.Sprintf("Cannot create new thin volume, free space in thin pool %s/%s reached threshold.", f.vg, f.thin)
		}
		if has(c, "--snapshot") {
			if has(c, "--type=thin") {
				return "Command does not accept option: --type thin with --snapshot"
			}
			o, ok := f.lvs[target]
			if !ok || o.pool {
				return fmt.Sprintf("Failed to find logical volume \"%s/%s\"", f.vg, target)
			}
			f.lvs[name] = &fakeLV{size: o.size, origin: target, active: has(c, "--activate=y"), skip: !has(c, "--setactivationskip=n"), uuid: f.newUUID()}
			return ""
		}
		if target != f.thin {
			return "not a thin pool"
		}
		s, _ := opt(c, "--virtualsize")
		n, err := strconv.ParseInt(strings.TrimSuffix(s, "B"), 10, 64)
		if err != nil {
			return "bad size"
		}
		f.lvs[name] = &fakeLV{size: n, active: true, uuid: f.newUUID()}
		return ""
	case "lvremove":
		name, _ := f.lvName(pos[0])
		if l, ok := f.lvs[name]; !ok || l.pool {
			return fmt.Sprintf("Failed to find logical volume \"%s\"", pos[0])
		}
		delete(f.lvs, name)
		return ""
	case "lvrename":
		from, _ := f.lvName(pos[0])
		to, _ := f.lvName(pos[1])
		l, ok := f.lvs[from]
		if !ok {
			return fmt.Sprintf("Existing logical volume \"%s\" not found in volume group \"%s\"", from, f.vg)
		}
		if _, dup := f.lvs[to]; dup {
			return fmt.Sprintf("Logical Volume \"%s\" already exists in volume group \"%s\"", to, f.vg)
		}
		delete(f.lvs, from)
		f.lvs[to] = l
		for _, o := range f.lvs {
			if o.origin == from {
				o.origin = to
			}
		}
		return ""
	case "lvresize":
		name, _ := f.lvName(pos[0])
		l, ok := f.lvs[name]
		if !ok {
			return fmt.Sprintf("Failed to find logical volume \"%s\"", pos[0])
		}
		s, _ := opt(c, "--size")
		n, _ := strconv.ParseInt(strings.TrimSuffix(s, "B"), 10, 64)
		l.size = n
		return ""
	case "lvchange":
		name, _ := f.lvName(pos[0])
		l, ok := f.lvs[name]
		if !ok {
			return fmt.Sprintf("Failed to find logical volume \"%s\"", pos[0])
		}
		if l.skip && !has(c, "--ignoreactivationskip") {
			return ""
		}
		l.active = true
		return ""
	}
	return "No such command '" + c[0] + "'"
}

// names returns the LVs other than the thin pool, sorted.
func (f *fakeLVM) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n, l := range f.lvs {
		if !l.pool {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// uuids returns LV name → uuid.
func (f *fakeLVM) uuids() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string]string)
	for n, l := range f.lvs {
		m[n] = l.uuid
	}
	return m
}

// since returns the lvm commands recorded after the first n, without the
// report, each joined by blanks.
func (f *fakeLVM) since(n int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls[n:] {
		if c[0] != "lvs" {
			out = append(out, strings.Join(c, " "))
		}
	}
	return out
}

func (f *fakeLVM) mark() (calls, procs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls), f.procs
}

// add makes an LV by hand (an old layout, a Qubes-made volume).
func (f *fakeLVM) add(name string, size int64, origin string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lvs[name] = &fakeLV{size: size, origin: origin, active: true, uuid: f.newUUID()}
}

// fakeClock returns times one second apart from a fixed epoch.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

// openFake opens a pool on a fake.
func openFake(t *testing.T, f *fakeLVM, params map[string]string) storage.Pool {
	t.Helper()
	ps := map[string]string{"volume_group": f.vg, "thin_pool": f.thin}
	maps.Copy(ps, params)
	clock := &fakeClock{t: time.Unix(1521065900, 0)}
	p, err := lvm.OpenWith(t.Context(), storage.PoolConfig{Name: "fake", Params: ps}, lvm.Options{Runner: f, Now: clock.now, LockDir: t.TempDir()})
	require.NoError(t, err)
	require.NoError(t, p.Setup(t.Context()))
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}
