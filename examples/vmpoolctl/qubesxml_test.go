package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/pool"
)

// qubesFixture is the realistic qubes.xml of an R4 installation.
const qubesFixture = "../../testdata/qubes-r4/qubes.xml"

// templateRoot is the start of the root image of the template
// debian-12-xfce in the fixture's root.
var templateRoot = bytes.Repeat([]byte("debian root "), 100)

// qubesRoot makes the fixture's installation in a temporary root: the
// trees of its file and file-reflink pools, with sparse images of the
// sizes qubes.xml records.
func qubesRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for rel, img := range map[string]struct {
		data []byte
		size int64
	}{
		"mnt/ssd/qubes/vm-templates/debian-12-xfce/root.img":    {templateRoot, 21474836480},
		"mnt/ssd/qubes/vm-templates/debian-12-xfce/private.img": {nil, 2147483648},
		"mnt/ssd/qubes/appvms/work/private.img":                 {[]byte("work private"), 10737418240},
		"mnt/ssd/qubes/appvms/default-dvm/private.img":          {nil, 2147483648},
		"var/lib/qubes/appvms/win10/root.img":                   {nil, 64424509440},
		"var/lib/qubes/appvms/win10/private.img":                {nil, 2147483648},
		"var/lib/qubes/appvms/personal/private.img":             {nil, 4294967296},
	} {
		path := filepath.Join(root, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, img.data, 0o644))
		require.NoError(t, os.Truncate(path, img.size))
	}
	require.NoError(t, os.MkdirAll(filepath.Join(root, "var/lib/qubes/vm-templates"), 0o755))
	return root
}

// status is what pool import-qubes-xml and pool list say of a pool of
// driver, available or not as the registry of vmpoolctl says.
func status(driver, available string) string {
	if _, err := pool.Driver(driver); err == nil {
		return available
	}
	return `unavailable: no driver "` + driver + `"`
}

// TestRunImportQubesXML imports the fixture: the pools with their status,
// every VM's volumes with pool and vid, the kernel volumes skipped; pool
// list, pool info and vm list show the unavailable pool as such; the
// AppVM work of the file-reflink pool starts on its template's root, while
// a VM of the lvm_thin pool is refused (kind unavailable).
func TestRunImportQubesXML(t *testing.T) {
	root := qubesRoot(t)
	state := filepath.Join(t.TempDir(), "state")
	out := ok(t, state, "pool", "import-qubes-xml", "--root", root, qubesFixture)

	lines := strings.Split(out, "\n")
	require.Greater(t, len(lines), 8, out)
	assert.Regexp(t, `^POOL +DRIVER +STATUS$`, lines[0])
	assert.Regexp(t, `^varlibqubes +file +`+regexp.QuoteMeta(status("file", "imported")), lines[1])
	// lvm_thin is registered, but this host has no volume group qubes_dom0.
	assert.Regexp(t, `^vm-pool +lvm_thin +`+regexp.QuoteMeta(status("lvm_thin", "unavailable: its storage (ephemeral_volatile=False revisions_to_keep=2 thin_pool=vm-pool volume_group=qubes_dom0) is not on this host")), lines[2])
	assert.Regexp(t, `^ssd +file-reflink +imported$`, lines[3])
	assert.Equal(t, "", lines[4])
	assert.Regexp(t, `^VM +VOLUME +POOL +VID +NOTE$`, lines[5])
	for _, want := range []string{
		`fedora-40-xfce +root +vm-pool +qubes_dom0/vm-fedora-40-xfce-root`,
		`debian-12-xfce +root +ssd +vm-templates/debian-12-xfce/root`,
		`work +root +ssd +appvms/work/root`,
		`work +private +ssd +appvms/work/private`,
		`disp-web +private +ssd +appvms/disp-web/private`,
		`personal +private +varlibqubes +appvms/personal/private`,
		`win10 +root +varlibqubes +appvms/win10/root`,
	} {
		assert.Regexp(t, "(?m)^"+want+" *$", out)
	}
	end := slices.Index(lines[6:], "")
	assert.Equal(t, 3*8, end, "three volumes for each of the 8 VMs: %s", out)
	assert.Contains(t, out, "\nskipped pool linux-kernel: a linux-kernel pool holds dom0's kernels, not disk images\n")
	assert.Contains(t, out, "\nskipped volume kernel of VM work: a volume of the linux-kernel pool linux-kernel\n")
	assert.NotRegexp(t, `(?m)^dom0 `, out, "dom0 has no volumes")

	list := ok(t, state, "pool", "list")
	assert.Regexp(t, `^NAME +DRIVER +STATUS\n`, list)
	assert.Regexp(t, `(?m)^ssd +file-reflink +available$`, list)
	if _, err := pool.Driver("lvm_thin"); err != nil {
		assert.Regexp(t, `(?m)^vm-pool +lvm_thin +unavailable: no driver "lvm_thin"`, list)
		info := ok(t, state, "pool", "info", "vm-pool")
		assert.Regexp(t, `^name=vm-pool\ndriver=lvm_thin\nephemeral_volatile=False\nrevisions_to_keep=2\nthin_pool=vm-pool\nvolume_group=qubes_dom0\nunavailable=no driver "lvm_thin"`, info)
		var doc poolDoc
		okJSON(t, state, &doc, "pool", "info", "vm-pool")
		assert.Contains(t, doc.Unavailable, `no driver "lvm_thin"`)
		assert.Nil(t, doc.Size)
		assert.Regexp(t, `(?m)^sys-net +Unknown +vm-pool:qubes_dom0/vm-sys-net-private `, ok(t, state, "vm", "list"))
		refuseJSON(t, state, exitFailed, "unavailable", `no driver "lvm_thin"`, "vm", "start", "sys-net")
	}
	if _, err := pool.Driver("file"); err != nil {
		refuseJSON(t, state, exitFailed, "unavailable", `no driver "file"`, "volume", "info", "varlibqubes", "appvms/win10/root")
	}
	var row []poolRow
	okJSON(t, state, &row, "pool", "list")
	assert.Equal(t, poolRow{Name: "ssd", Driver: "file-reflink"}, row[0], "sorted by name")

	ok(t, state, "vm", "start", "work")
	var vol volumeDoc
	okJSON(t, state, &vol, "volume", "info", "ssd", "appvms/work/root")
	assert.Equal(t, filepath.Join(root, "mnt/ssd/qubes/appvms/work/root-dirty.img"), vol.Path)
	f, err := os.Open(vol.Path)
	require.NoError(t, err)
	defer f.Close()
	head := make([]byte, len(templateRoot))
	_, err = io.ReadFull(f, head)
	require.NoError(t, err)
	assert.Equal(t, templateRoot, head, "work's root is its template's")
	st, err := f.Stat()
	require.NoError(t, err)
	assert.Equal(t, int64(21474836480), st.Size())
	ok(t, state, "vm", "stop", "work")
	assert.Regexp(t, `(?m)^work +Halted +`, ok(t, state, "vm", "list"))

	// Imported again, everything is known already and the state unchanged.
	before, err := os.ReadFile(filepath.Join(state, "state.json"))
	require.NoError(t, err)
	var doc importDoc
	okJSON(t, state, &doc, "pool", "import-qubes-xml", qubesFixture, "--root", root)
	for _, p := range doc.Pools {
		assert.True(t, p.Reused, p.Name)
	}
	require.Len(t, doc.VMs, 8)
	assert.Equal(t, importVolumeDoc{Name: "root", Pool: "ssd", VID: "appvms/work/root", Source: "vm-templates/debian-12-xfce/root", Reused: true}, doc.VMs[4].Volumes[0])
	assert.Len(t, doc.Skipped, 9)
	after, err := os.ReadFile(filepath.Join(state, "state.json"))
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after))
}

// TestRunImportQubesXMLRefused: malformed XML is bad input (exit status 2)
// that does not even create the state directory; a file that does not fit
// the root, or that clashes with the state, changes no byte of the state.
func TestRunImportQubesXMLRefused(t *testing.T) {
	root := qubesRoot(t)
	bad := filepath.Join(t.TempDir(), "qubes.xml")
	good, err := os.ReadFile(qubesFixture)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(bad, good[:len(good)/3], 0o644))
	state := filepath.Join(t.TempDir(), "state")
	r := ctl(t, state, "pool", "import-qubes-xml", "--root", root, bad)
	assert.Equal(t, exitUsage, r.code)
	assert.Contains(t, r.stderr, "vmpoolctl: "+bad+": invalid configuration: qubes.xml: XML syntax error on line ")
	assert.NoDirExists(t, state)

	state, _ = addPool(t)
	refuseJSON(t, state, exitUsage, "invalid_config", "XML syntax error", "pool", "import-qubes-xml", bad)
	refuseJSON(t, state, exitFailed, "not_found", "is not a directory; is the root right", "pool", "import-qubes-xml", "--root", t.TempDir(), qubesFixture)
	clash := filepath.Join(t.TempDir(), "qubes.xml")
	require.NoError(t, os.WriteFile(clash, bytes.Replace(good, []byte("<pools>\n"), []byte("<pools>\n<pool driver=\"lvm_thin\" name=\"p\" thin_pool=\"p\" volume_group=\"g\"/>\n"), 1), 0o644))
	refuseJSON(t, state, exitFailed, "exists", "pool p: the pool exists with driver file-reflink; qubes.xml has lvm_thin", "pool", "import-qubes-xml", "--root", root, clash)
	assert.Equal(t, "NAME  DRIVER\np     file-reflink\n", ok(t, state, "pool", "list"))
	r = ctl(t, state, "pool", "import-qubes-xml", filepath.Join(t.TempDir(), "none.xml"))
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stderr, "no such file or directory")
}
