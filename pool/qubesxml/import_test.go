package qubesxml_test

// The tests of pool.Manager.ImportQubesXML live here, not in package pool,
// whose test binary registers stand-ins for the lvm_thin and file drivers:
// in this one only file-reflink is registered (and whatever real drivers
// are imported here later), so availability is what the registry says.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/internal/ownerfile"
	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/pool/qubesxml"
	_ "github.com/vmpool/vmpool/reflink" // registers file-reflink
	"github.com/vmpool/vmpool/storage"
)

// qubesFixture is the qubes.xml of a realistic R4 installation: pools
// varlibqubes (file), linux-kernel, vm-pool (lvm_thin) and ssd
// (file-reflink at /mnt/ssd/qubes).
const qubesFixture = "../../testdata/qubes-r4/qubes.xml"

// unregisteredDriver replaces lvm_thin in the fixture where a test needs
// a driver that no package will ever register.
const unregisteredDriver = "no-such-driver-for-test"

func fixtureXML(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(qubesFixture)
	require.NoError(t, err)
	return string(data)
}

func parseXML(t *testing.T, xml string) *qubesxml.Installation {
	t.Helper()
	inst, err := qubesxml.Parse(strings.NewReader(xml))
	require.NoError(t, err)
	return inst
}

// The first bytes of the images the tests write under the fixture's root.
var fixtureData = map[string][]byte{
	"mnt/ssd/qubes/vm-templates/debian-12-xfce/root.img":    bytes.Repeat([]byte("debian root "), 1000),
	"mnt/ssd/qubes/vm-templates/debian-12-xfce/private.img": []byte("debian private"),
	"mnt/ssd/qubes/appvms/work/private.img":                 []byte("work private"),
	"mnt/ssd/qubes/appvms/default-dvm/private.img":          []byte("default-dvm private"),
	"var/lib/qubes/appvms/win10/root.img":                   []byte("windows"),
	"var/lib/qubes/appvms/win10/private.img":                []byte("windows private"),
	"var/lib/qubes/appvms/personal/private.img":             []byte("personal private"),
}

// fixtureSizes are the sizes qubes.xml records for those images.
var fixtureSizes = map[string]int64{
	"mnt/ssd/qubes/vm-templates/debian-12-xfce/root.img":    21474836480,
	"mnt/ssd/qubes/vm-templates/debian-12-xfce/private.img": 2147483648,
	"mnt/ssd/qubes/appvms/work/private.img":                 10737418240,
	"mnt/ssd/qubes/appvms/default-dvm/private.img":          2147483648,
	"var/lib/qubes/appvms/win10/root.img":                   64424509440,
	"var/lib/qubes/appvms/win10/private.img":                2147483648,
	"var/lib/qubes/appvms/personal/private.img":             4294967296,
}

// qubesRoot makes the fixture's installation in a temporary root: the
// trees of its file and file-reflink pools with sparse images of the
// recorded sizes, each starting with its fixtureData.
func qubesRoot(t *testing.T) string {
	t.Helper()
	return qubesTree(t, t.TempDir())
}

// qubesTree makes the fixture's installation in root and returns root.
func qubesTree(t *testing.T, root string) string {
	t.Helper()
	for _, dir := range []string{"var/lib/qubes/vm-templates", "var/lib/qubes/vm-kernels", "mnt/ssd/qubes/appvms"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, dir), 0o755))
	}
	for rel, data := range fixtureData {
		path := filepath.Join(root, rel)
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, data, 0o644))
		require.NoError(t, os.Truncate(path, fixtureSizes[rel]))
	}
	return root
}

// available reports whether this test binary registers driver.
func available(driver string) bool {
	_, err := pool.Driver(driver)
	return err == nil
}

// readStart reads len(want) bytes of the running volume's block device.
func readStart(t *testing.T, v storage.Volume, n int) []byte {
	t.Helper()
	f, err := os.Open(v.BlockDevice().Path)
	require.NoError(t, err)
	defer f.Close()
	buf := make([]byte, n)
	_, err = io.ReadFull(f, buf)
	require.NoError(t, err)
	return buf
}

// TestImportQubesXML imports the fixture into an empty state with its
// root in a temporary directory: the file-reflink pool ssd is opened and
// its VMs work; an AppVM started on it gets its template's root and its
// own private; lvm_thin and file are recorded, unavailable unless their
// drivers are registered; the linux-kernel pool and the kernel volumes
// are skipped. The state survives a reopen, and importing again reuses
// everything and changes nothing.
func TestImportQubesXML(t *testing.T) {
	ctx := context.Background()
	root := qubesRoot(t)
	state := filepath.Join(t.TempDir(), "state")
	m, err := pool.OpenManager(ctx, state, pool.ManagerOptions{})
	require.NoError(t, err)
	defer m.Close()
	inst := parseXML(t, fixtureXML(t))
	rep, err := m.ImportQubesXML(ctx, inst, pool.QubesXMLOptions{Root: root})
	require.NoError(t, err)

	ssdDir := filepath.Join(root, "mnt/ssd/qubes")
	type poolRow struct {
		name, driver string
		available    bool
	}
	var pools []poolRow
	for _, p := range rep.Pools {
		pools = append(pools, poolRow{p.Name, p.Driver, p.Unavailable == nil})
		assert.False(t, p.Reused)
		if p.Unavailable != nil {
			assert.ErrorIs(t, p.Unavailable, pool.ErrUnavailable)
			assert.Contains(t, p.Unavailable.Error(), `no driver "`+p.Driver+`"`)
		}
	}
	assert.Equal(t, []poolRow{{"varlibqubes", "file", available("file")}, {"vm-pool", "lvm_thin", available("lvm_thin")}, {"ssd", "file-reflink", true}}, pools)
	assert.Equal(t, ssdDir, rep.Pools[2].Params["dir_path"], "dir_path is taken below the root")
	assert.Equal(t, filepath.Join(root, "var/lib/qubes"), rep.Pools[0].Params["dir_path"])
	assert.Equal(t, map[string]string{"ephemeral_volatile": "False", "revisions_to_keep": "2", "thin_pool": "vm-pool", "volume_group": "qubes_dom0"}, rep.Pools[1].Params)

	require.NotEmpty(t, rep.Skipped)
	assert.Equal(t, pool.QubesXMLSkipped{Pool: "linux-kernel", Reason: "a linux-kernel pool holds dom0's kernels, not disk images"}, rep.Skipped[0])
	assert.Len(t, rep.Skipped, 1+8, "the pool and the kernel volume of each of the 8 domains with volumes")

	var vms []string
	vols := make(map[string]pool.QubesXMLVolume)
	for _, vm := range rep.VMs {
		vms = append(vms, vm.Name)
		assert.Len(t, vm.Volumes, 3, vm.Name)
		for _, v := range vm.Volumes {
			vols[vm.Name+":"+v.Name] = v
			if v.Pool == "ssd" {
				assert.NoError(t, v.Problem, "%s:%s: its images are there", vm.Name, v.Name)
			}
		}
	}
	assert.Equal(t, []string{"fedora-40-xfce", "debian-12-xfce", "sys-net", "personal", "work", "default-dvm", "disp-web", "win10"}, vms)
	assert.Equal(t, pool.QubesXMLVolume{Name: "root", Pool: "ssd", VID: "appvms/work/root", Source: "vm-templates/debian-12-xfce/root"}, vols["work:root"])
	assert.Equal(t, pool.QubesXMLVolume{Name: "private", Pool: "ssd", VID: "appvms/disp-web/private", Source: "appvms/default-dvm/private"}, vols["disp-web:private"])
	assert.Equal(t, "qubes_dom0/vm-personal-root", vols["personal:root"].VID)
	assert.Equal(t, "varlibqubes", vols["personal:private"].Pool)

	// The AppVM work on the file-reflink pool starts on its template's
	// root and its own private.
	require.NoError(t, m.StartVM(ctx, "work"))
	vroot, err := m.Volume("work", "root")
	require.NoError(t, err)
	tmplRoot := fixtureData["mnt/ssd/qubes/vm-templates/debian-12-xfce/root.img"]
	assert.Equal(t, tmplRoot, readStart(t, vroot, len(tmplRoot)), "work's root is the template's")
	assert.Equal(t, filepath.Join(ssdDir, "appvms/work/root-dirty.img"), vroot.BlockDevice().Path)
	vpriv, err := m.Volume("work", "private")
	require.NoError(t, err)
	assert.Equal(t, []byte("work private"), readStart(t, vpriv, 12))
	size, err := vpriv.Size(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(10737418240), size)
	require.NoError(t, m.StopVM(ctx, "work"))
	require.NoError(t, m.StartVM(ctx, "disp-web"), "the named DispVM starts from default-dvm's private and the template's root")
	dpriv, err := m.Volume("disp-web", "private")
	require.NoError(t, err)
	assert.Equal(t, []byte("default-dvm private"), readStart(t, dpriv, 19))
	require.NoError(t, m.StopVM(ctx, "disp-web"))

	// VMs on the lvm_thin pool cannot start while it is unavailable.
	if !available("lvm_thin") {
		assert.ErrorIs(t, m.StartVM(ctx, "sys-net"), pool.ErrUnavailable)
		assert.ErrorIs(t, m.StartVM(ctx, "personal"), pool.ErrUnavailable)
	}
	owner, err := ownerfile.Read(ssdDir)
	require.NoError(t, err)
	require.NotNil(t, owner, "the Qubes directory, which recorded no owner, is claimed")

	// Reopened, the Manager has the same pools and volumes.
	require.NoError(t, m.Close())
	before, err := os.ReadFile(filepath.Join(state, pool.StateFile))
	require.NoError(t, err)
	m, err = pool.OpenManager(ctx, state, pool.ManagerOptions{})
	require.NoError(t, err)
	defer m.Close()
	assert.Len(t, m.Pools(), 3)
	assert.Equal(t, []string{"debian-12-xfce", "default-dvm", "disp-web", "fedora-40-xfce", "personal", "sys-net", "win10", "work"}, m.VMs())
	vp, err := m.Pool("vm-pool")
	require.NoError(t, err)
	assert.Equal(t, available("lvm_thin"), pool.Unavailable(vp) == nil)

	// Imported again: everything is reused, nothing changes.
	rep, err = m.ImportQubesXML(ctx, inst, pool.QubesXMLOptions{Root: root})
	require.NoError(t, err)
	for _, p := range rep.Pools {
		assert.True(t, p.Reused, p.Name)
	}
	for _, vm := range rep.VMs {
		for _, v := range vm.Volumes {
			assert.True(t, v.Reused, "%s:%s", vm.Name, v.Name)
		}
	}
	after, err := os.ReadFile(filepath.Join(state, pool.StateFile))
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after))
}

// TestImportQubesXMLUnknownDriver: with lvm_thin replaced by a driver no
// package registers, its pool and volumes are recorded unavailable, with
// the volumes exactly as qubes.xml gives them; a VM with a volume in it
// does not start, the others do.
func TestImportQubesXMLUnknownDriver(t *testing.T) {
	ctx := context.Background()
	root := qubesRoot(t)
	state := filepath.Join(t.TempDir(), "state")
	m, err := pool.OpenManager(ctx, state, pool.ManagerOptions{})
	require.NoError(t, err)
	defer m.Close()
	xml := strings.Replace(fixtureXML(t), `driver="lvm_thin"`, `driver="`+unregisteredDriver+`"`, 1)
	inst := parseXML(t, xml)
	rep, err := m.ImportQubesXML(ctx, inst, pool.QubesXMLOptions{Root: root})
	require.NoError(t, err)
	require.Equal(t, "vm-pool", rep.Pools[1].Name)
	require.ErrorIs(t, rep.Pools[1].Unavailable, pool.ErrUnavailable)
	assert.Contains(t, rep.Pools[1].Unavailable.Error(), `no driver "`+unregisteredDriver+`"`)

	vp, err := m.Pool("vm-pool")
	require.NoError(t, err)
	assert.ErrorIs(t, pool.Unavailable(vp), pool.ErrUnavailable)
	sysnet, _ := inst.Domain("sys-net")
	want, _ := sysnet.Volume("root")
	v, err := m.Volume("sys-net", "root")
	require.NoError(t, err)
	assert.Equal(t, want.Config(), v.Config(), "recorded as qubes.xml has it")
	err = m.StartVM(ctx, "sys-net")
	require.ErrorIs(t, err, pool.ErrUnavailable)
	assert.Contains(t, err.Error(), `no driver "`+unregisteredDriver+`"`)
	require.NoError(t, m.StartVM(ctx, "work"), "the VMs of the other pools work")
	require.NoError(t, m.StopVM(ctx, "work"))

	var st struct {
		Pools map[string]struct {
			Driver string            `json:"driver"`
			Params map[string]string `json:"params"`
		} `json:"pools"`
		VMs map[string]struct {
			Volumes map[string]storage.VolumeConfig `json:"volumes"`
		} `json:"vms"`
	}
	data, err := os.ReadFile(filepath.Join(state, pool.StateFile))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &st))
	assert.Equal(t, unregisteredDriver, st.Pools["vm-pool"].Driver)
	assert.Equal(t, want.Config(), st.VMs["sys-net"].Volumes["root"])
}

// stateAndTree returns what a failed import must leave as it was: the
// state file and every file (with its size) under root.
func stateAndTree(t *testing.T, state, root string) (string, map[string]int64) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(state, pool.StateFile))
	require.NoError(t, err)
	tree := make(map[string]int64)
	require.NoError(t, filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
		if err == nil {
			tree[strings.TrimPrefix(path, root)] = info.Size()
		}
		return err
	}))
	return string(data), tree
}

// TestImportQubesXMLFailures: a qubes.xml that does not fit the root or
// the state is refused, and nothing is recorded: the state file stays
// byte for byte, the tree (owner records included) as it was, no pool is
// added; the fixture then imports.
func TestImportQubesXMLFailures(t *testing.T) {
	ctx := context.Background()
	root := qubesRoot(t)
	state := filepath.Join(t.TempDir(), "state")
	m, err := pool.OpenManager(ctx, state, pool.ManagerOptions{})
	require.NoError(t, err)
	defer m.Close()
	other := filepath.Join(root, "srv/other")
	require.NoError(t, os.Mkdir(filepath.Dir(other), 0o755))
	_, err = m.AddPool(ctx, "other", "file-reflink", map[string]string{"dir_path": other, "setup_check": "no"})
	require.NoError(t, err)
	_, err = m.CreateVolume(ctx, "work", storage.VolumeConfig{Name: "data", Pool: "other", VID: "appvms/work/data", Size: 1 << 20, RW: true, SaveOnStop: true})
	require.NoError(t, err)
	// The volume's precache is cloned in the background: wait for it, so
	// that the trees compared below are still.
	op, err := m.Pool("other")
	require.NoError(t, err)
	require.NoError(t, op.(storage.Flusher).Flush(ctx))
	good := fixtureXML(t)

	for name, tc := range map[string]struct {
		xml, root string
		want      error
		msg       string
	}{
		"root without the pool's directory": {good, t.TempDir(), storage.ErrNotFound, "is not a directory; is the root right and the pool's filesystem mounted?"},
		"root missing":                      {good, filepath.Join(root, "nonexistent"), storage.ErrNotFound, "is not a directory"},
		// The pool ssd is opened (and its directory claimed) and most of
		// its volumes registered before the driver refuses the last one.
		"a vid the driver refuses": {strings.Replace(good, `vid="appvms/disp-web/volatile"`, `vid="appvms/disp-web/root"`, 1), root,
			storage.ErrInvalidConfig, `pool ssd: init volume appvms/disp-web/root: invalid configuration: volume name "volatile" does not match vid`},
		"a vid given twice": {strings.Replace(good, `vid="appvms/disp-web/volatile"`, `vid="appvms/work/volatile"`, 1), root,
			storage.ErrExists, "pool ssd: init volume appvms/work/volatile: already exists"},
		"a pool of another driver": {strings.Replace(good, "<pools>\n", "<pools>\n<pool driver=\"lvm_thin\" name=\"other\" thin_pool=\"p\" volume_group=\"g\"/>\n", 1), root,
			storage.ErrExists, "pool other: the pool exists with driver file-reflink; qubes.xml has lvm_thin"},
		"a pool with another parameter": {strings.Replace(good, "<pools>\n", "<pools>\n<pool dir_path=\"/elsewhere\" driver=\"file-reflink\" name=\"other\"/>\n", 1), root,
			storage.ErrExists, "pool other: the pool exists with dir_path=\"" + other + "\"; qubes.xml has \"" + filepath.Join(root, "elsewhere") + "\""},
		"a known VM's volume": {strings.Replace(good, `<volume name="volatile" pool="ssd" revisions_to_keep="0" rw="True" save_on_stop="False" size="10737418240" snap_on_start="False" vid="appvms/work/volatile"/>`,
			`<volume name="data" pool="ssd" revisions_to_keep="0" rw="True" save_on_stop="False" size="10737418240" snap_on_start="False" vid="appvms/work/volatile"/>`, 1), root,
			storage.ErrExists, "VM work has a volume data already (pool other, vid appvms/work/data, origin)"},
		"a directory of a known pool": {strings.Replace(good, `dir_path="/mnt/ssd/qubes"`, `dir_path="/srv/other"`, 1), root, storage.ErrExists, "is already pool other"},
	} {
		t.Run(name, func(t *testing.T) {
			wantState, wantTree := stateAndTree(t, state, root)
			inst := parseXML(t, tc.xml)
			_, err := m.ImportQubesXML(ctx, inst, pool.QubesXMLOptions{Root: tc.root})
			require.ErrorIs(t, err, tc.want)
			assert.Contains(t, err.Error(), tc.msg)
			gotState, gotTree := stateAndTree(t, state, root)
			assert.Equal(t, wantState, gotState, "the state file is unchanged")
			assert.Equal(t, wantTree, gotTree, "the tree is unchanged, owner records included")
			assert.Len(t, m.Pools(), 1)
			assert.Equal(t, []string{"work"}, m.VMs())
		})
	}

	// A pool that records another state as owner is refused, as AddPool
	// refuses it; adopted first, it is reused.
	ssdDir := filepath.Join(root, "mnt/ssd/qubes")
	require.NoError(t, ownerfile.Record(ssdDir, storage.PoolOwner{ID: "another", Desc: "pool ssd of another state"}))
	inst := parseXML(t, good)
	_, err = m.ImportQubesXML(ctx, inst, pool.QubesXMLOptions{Root: root})
	require.ErrorIs(t, err, storage.ErrInUse)
	assert.Contains(t, err.Error(), "belongs to pool ssd of another state")
	_, err = m.AdoptPool(ctx, "ssd", "file-reflink", map[string]string{"dir_path": ssdDir, "revisions_to_keep": "2", "ephemeral_volatile": "False", "setup_check": "no"})
	require.NoError(t, err)
	rep, err := m.ImportQubesXML(ctx, inst, pool.QubesXMLOptions{Root: root})
	require.NoError(t, err, "the failed imports left nothing behind (no lock, no registration)")
	assert.True(t, rep.Pools[2].Reused)
	require.NoError(t, m.StartVM(ctx, "work"), "work's volumes in other and ssd start")
	require.NoError(t, m.StopVM(ctx, "work"))
}

// TestImportQubesXMLMissingImage: a volume whose image is missing is
// recorded all the same and named in the report (its snapshots too);
// starting its VM fails until the image is there.
func TestImportQubesXMLMissingImage(t *testing.T) {
	ctx := context.Background()
	root := qubesRoot(t)
	require.NoError(t, os.Remove(filepath.Join(root, "mnt/ssd/qubes/appvms/default-dvm/private.img")))
	m, err := pool.OpenManager(ctx, filepath.Join(t.TempDir(), "state"), pool.ManagerOptions{})
	require.NoError(t, err)
	defer m.Close()
	rep, err := m.ImportQubesXML(ctx, parseXML(t, fixtureXML(t)), pool.QubesXMLOptions{Root: root})
	require.NoError(t, err)
	problems := make(map[string]error)
	for _, vm := range rep.VMs {
		for _, v := range vm.Volumes {
			if v.Problem != nil && v.Pool == "ssd" {
				problems[vm.Name+":"+v.Name] = v.Problem
			}
		}
	}
	require.Len(t, problems, 2, "%v", problems)
	assert.ErrorIs(t, problems["default-dvm:private"], storage.ErrNotFound)
	assert.ErrorIs(t, problems["disp-web:private"], storage.ErrNotFound)
	assert.ErrorIs(t, m.StartVM(ctx, "disp-web"), storage.ErrNotFound)
	require.NoError(t, m.StartVM(ctx, "work"))
	require.NoError(t, m.StopVM(ctx, "work"))
}

// TestImportQubesXMLReflinkFS imports the fixture with its root on a
// loop-mounted btrfs and XFS: the file-reflink pool ssd clones there, and
// the AppVM work starts on its template's root.
func TestImportQubesXMLReflinkFS(t *testing.T) {
	for _, typ := range []loopfs.Type{loopfs.Btrfs, loopfs.XFS} {
		t.Run(string(typ), func(t *testing.T) {
			ctx := context.Background()
			root := qubesTree(t, loopfs.Mount(t, typ, loopfs.MinXFSSize))
			m, err := pool.OpenManager(ctx, filepath.Join(t.TempDir(), "state"), pool.ManagerOptions{})
			require.NoError(t, err)
			defer m.Close()
			_, err = m.ImportQubesXML(ctx, parseXML(t, fixtureXML(t)), pool.QubesXMLOptions{Root: root})
			require.NoError(t, err)
			ssd, err := m.Pool("ssd")
			require.NoError(t, err)
			assert.True(t, ssd.Capabilities().Reflink, "the pool clones on %s", typ)
			require.NoError(t, m.StartVM(ctx, "work"))
			vroot, err := m.Volume("work", "root")
			require.NoError(t, err)
			tmplRoot := fixtureData["mnt/ssd/qubes/vm-templates/debian-12-xfce/root.img"]
			assert.Equal(t, tmplRoot, readStart(t, vroot, len(tmplRoot)))
			vpriv, err := m.Volume("work", "private")
			require.NoError(t, err)
			assert.Equal(t, []byte("work private"), readStart(t, vpriv, 12))
			require.NoError(t, m.StopVM(ctx, "work"))
			require.NoError(t, m.Close(), "closed before the filesystem is unmounted")
		})
	}
}
