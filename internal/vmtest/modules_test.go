package vmtest

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func modinfoSection(entries ...string) []byte {
	return []byte(strings.Join(entries, "\x00") + "\x00\x00\x00")
}

func TestParseModinfo(t *testing.T) {
	mi, err := parseModinfo(modinfoSection(
		"license=GPL", "description=device-mapper thin provisioning target",
		"softdep=pre: crc32c post: foo-bar", "alias=dm-thin-pool", "alias=devname:x",
		"depends=dm-persistent-data,dm-bio-prison,dm-mod", "intree=Y", "name=dm_thin_pool",
		"vermagic=6.1.0-57-amd64 SMP preempt mod_unload modversions ",
	))
	require.NoError(t, err)
	assert.Equal(t, modinfo{
		name:    "dm_thin_pool",
		depends: []string{"dm_persistent_data", "dm_bio_prison", "dm_mod"},
		softPre: []string{"crc32c"},
		aliases: []string{"dm-thin-pool", "devname:x"},
	}, mi)

	mi, err = parseModinfo(modinfoSection("depends=", "softdep=post: x", "name=loop"))
	require.NoError(t, err)
	assert.Empty(t, mi.depends)
	assert.Empty(t, mi.softPre)

	mi, err = parseModinfo(modinfoSection("softdep=pre: a b post: c pre: d"))
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b", "d"}, mi.softPre)
}

func TestParseModinfoRefuses(t *testing.T) {
	for _, sec := range [][]byte{
		modinfoSection("license"),
		modinfoSection("=x"),
		modinfoSection("depends=a,../b"),
		modinfoSection("depends=a b"),
		modinfoSection("softdep=pre: ../../etc/passwd"),
		modinfoSection("softdep=pre: a mid: b"),
		modinfoSection("name=a/b"),
		modinfoSection("name=" + strings.Repeat("a", 65)),
	} {
		_, err := parseModinfo(sec)
		assert.Error(t, err, "%q", sec)
	}
}

// FuzzParseModinfo: .modinfo comes from a downloaded package. The parser
// never panics, whatever names it accepts are safe file names, and the
// load order of what it accepts ends.
func FuzzParseModinfo(f *testing.F) {
	f.Add(modinfoSection("depends=dm-mod,dm-bufio", "softdep=pre: crc32c", "name=dm_thin_pool", "alias=x"))
	f.Add([]byte("softdep=pre: a post: b\x00\x00name=x"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, sec []byte) {
		mi, err := parseModinfo(sec)
		if err != nil {
			return
		}
		names := append(append([]string{}, mi.depends...), mi.softPre...)
		if mi.name != "" {
			names = append(names, mi.name)
		}
		for _, n := range names {
			if !validModule(n) || strings.ContainsAny(n, "/-.") {
				t.Fatalf("accepted module name %q", n)
			}
		}
		// Every module the section names has this same modinfo: a graph
		// full of cycles. The order ends, and names each module once.
		src := fakeModules{mods: map[string]modinfo{"x": mi}}
		for _, n := range names {
			src.mods[n] = mi
		}
		order, err := moduleOrder(src, []string{"x"})
		if err != nil {
			t.Fatalf("moduleOrder: %v", err)
		}
		seen := map[string]bool{}
		for _, m := range order {
			if seen[m] {
				t.Fatalf("%s twice in %v", m, order)
			}
			seen[m] = true
		}
	})
}

// fakeModules is a moduleSource from literal modinfo.
type fakeModules struct {
	mods     map[string]modinfo
	builtins []string
	aliases  map[string]string
}

func (f fakeModules) info(name string) (modinfo, bool, error) {
	mi, ok := f.mods[name]
	return mi, ok, nil
}

func (f fakeModules) builtin(name string) bool { return slices.Contains(f.builtins, name) }

func (f fakeModules) alias(a string) (string, bool, error) {
	m, ok := f.aliases[a]
	return m, ok, nil
}

func TestModuleOrder(t *testing.T) {
	src := fakeModules{
		mods: map[string]modinfo{
			"dm_thin_pool":       {depends: []string{"dm_persistent_data", "dm_bio_prison", "dm_mod"}},
			"dm_persistent_data": {depends: []string{"dm_bufio", "libcrc32c"}},
			"dm_bufio":           {depends: []string{"dm_mod"}},
			"dm_bio_prison":      {depends: []string{"dm_mod"}},
			"dm_mod":             {},
			"libcrc32c":          {softPre: []string{"crc32c", "nothere"}},
			"crc32c_generic":     {},
			"dm_snapshot":        {depends: []string{"dm_bufio", "dm_mod"}},
			"a":                  {depends: []string{"b"}},
			"b":                  {softPre: []string{"a"}}, // a cycle through a softdep
			"needs_virtio":       {depends: []string{"virtio"}},
			"needs_missing":      {depends: []string{"dm_mod", "missing"}},
		},
		builtins: []string{"virtio"},
		aliases:  map[string]string{"crc32c": "crc32c_generic"},
	}
	got, err := moduleOrder(src, []string{"dm-thin-pool", "dm_snapshot", "dm_mod"})
	require.NoError(t, err)
	assert.Equal(t, []string{"dm_mod", "dm_bufio", "crc32c_generic", "libcrc32c", "dm_persistent_data", "dm_bio_prison", "dm_thin_pool", "dm_snapshot"}, got)

	got, err = moduleOrder(src, []string{"a"})
	require.NoError(t, err)
	assert.Equal(t, []string{"b", "a"}, got)

	got, err = moduleOrder(src, []string{"virtio", "needs_virtio"})
	require.NoError(t, err)
	assert.Equal(t, []string{"needs_virtio"}, got, "built-in modules are not loaded")

	_, err = moduleOrder(src, []string{"needs_missing"})
	assert.ErrorContains(t, err, "kernel module missing (needed by needs_missing) not found")
	_, err = moduleOrder(src, []string{"dm_crypt"})
	assert.ErrorContains(t, err, "kernel module dm_crypt not found")
	_, err = moduleOrder(src, []string{"a/b"})
	assert.ErrorContains(t, err, "bad kernel module name")
}

// TestModuleOrderKernel resolves the default modules, and dm-crypt, in
// the cached Debian kernel: each comes after what its .modinfo says it
// needs.
func TestModuleOrderKernel(t *testing.T) {
	a := requireAssets(t)
	md, err := openModuleDir(a.modules(), a.builtinFile())
	require.NoError(t, err)
	order, err := moduleOrder(md, append(append([]string{}, DefaultModules...), "dm-crypt"))
	require.NoError(t, err)
	t.Logf("load order: %v", order)
	pos := map[string]int{}
	for i, m := range order {
		_, dup := pos[m]
		require.False(t, dup, "%s twice", m)
		pos[m] = i
	}
	for _, m := range order {
		mi, ok, err := md.info(m)
		require.NoError(t, err)
		require.True(t, ok, m)
		for _, d := range mi.depends {
			if md.builtin(d) {
				continue
			}
			require.Contains(t, pos, d, "%s depends on %s", m, d)
			assert.Less(t, pos[d], pos[m], "%s before %s", d, m)
		}
	}
	for _, m := range []string{"dm_mod", "dm_thin_pool", "dm_snapshot", "dm_persistent_data", "dm_crypt", "9p", "overlay"} {
		assert.Contains(t, pos, m)
	}
	// libcrc32c's softdep "crc32c" is an alias, of crc32c_generic.
	if _, ok := pos["libcrc32c"]; ok {
		assert.Contains(t, pos, "crc32c_generic")
		assert.Less(t, pos["crc32c_generic"], pos["libcrc32c"])
	}
}
