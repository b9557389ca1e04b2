package pool_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/testenv"
	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

// The lvm_thin and file drivers are stood in for by configDriver: the
// choice of the default pool and included_in read only a pool's driver
// and parameters. No test of this package may import the real drivers of
// those names (Register would panic at once).
func init() {
	pool.Register("lvm_thin", configDriver{"lvm_thin"})
	pool.Register("file", configDriver{"file"})
}

// configDriver makes pools that hold their parameters and touch no disk,
// so a "file" pool may claim /var/lib/qubes. It accepts any parameter.
type configDriver struct{ name string }

func (configDriver) Parameters() []storage.Parameter { return nil }

func (d configDriver) Open(_ context.Context, cfg storage.PoolConfig) (storage.Pool, error) {
	return &configPool{driver: d.name, name: cfg.Name, params: maps.Clone(cfg.Params)}, nil
}

// configPool implements what the Manager calls on a pool without
// volumes; the rest of storage.Pool is left nil and would panic.
type configPool struct {
	storage.Pool
	driver, name string
	params       map[string]string
}

func (p *configPool) Name() string   { return p.name }
func (p *configPool) Driver() string { return p.driver }
func (p *configPool) Config() map[string]string {
	cfg := map[string]string{"name": p.name, "driver": p.driver}
	maps.Copy(cfg, p.params)
	return cfg
}
func (p *configPool) Usage(context.Context) (storage.PoolUsage, error) {
	return storage.PoolUsage{}, nil
}
func (p *configPool) Setup(context.Context) error   { return nil }
func (p *configPool) Destroy(context.Context) error { return nil }
func (p *configPool) Close() error                  { return nil }

// poolSpec is a pool of a state file.
type poolSpec struct {
	Driver string            `json:"driver"`
	Params map[string]string `json:"params"`
}

func lvmThin(vg, thinPool string) poolSpec {
	return poolSpec{"lvm_thin", map[string]string{"volume_group": vg, "thin_pool": thinPool, "revisions_to_keep": "1"}}
}

func filePool(dir string) poolSpec { return poolSpec{"file", map[string]string{"dir_path": dir}} }

func reflinkPool(dir string) poolSpec {
	return poolSpec{"file-reflink", map[string]string{"dir_path": dir, "revisions_to_keep": "1", "ephemeral_volatile": "False"}}
}

// openWithPools writes a state file holding pools and opens a Manager on
// it: the pools are opened, never set up, so nothing is created on disk.
func openWithPools(t *testing.T, pools map[string]poolSpec) *pool.Manager {
	t.Helper()
	dir := t.TempDir()
	data, err := json.Marshal(map[string]any{"version": 1, "pools": pools, "vms": map[string]any{}})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, pool.StateFile), data, 0o600))
	m, err := pool.OpenManager(t.Context(), dir, pool.ManagerOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := m.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
			t.Errorf("close manager: %v", err)
		}
	})
	return m
}

// defaultName returns the name of m's default pool for in, or "" when
// there is none (checking the error then).
func defaultName(t *testing.T, m *pool.Manager, in pool.DefaultPoolInputs) string {
	t.Helper()
	p, err := m.DefaultPool(in)
	if err != nil {
		require.ErrorIs(t, err, storage.ErrNotFound)
		assert.ErrorContains(t, err, "cannot determine default storage pool")
		return ""
	}
	return p.Name()
}

// TestDefaultPool: each rule of Qubes' _default_pool, in its order of
// precedence: the pool named default; the lvm_thin pool of
// DEFAULT_LVM_POOL (its thin_pool only); the lvm_thin pool of the root
// filesystem (volume group and thin pool); a file or file-reflink pool at
// /var/lib/qubes; else none.
func TestDefaultPool(t *testing.T) {
	elsewhere := filepath.Join(t.TempDir(), "pool")
	root := pool.DefaultPoolInputs{RootVolumeGroup: "vg0", RootThinPool: "pool0"}
	for what, tc := range map[string]struct {
		pools map[string]poolSpec
		in    pool.DefaultPoolInputs
		want  string // "" for none
		// atVarLibQubes opens a real file-reflink pool at /var/lib/qubes.
		atVarLibQubes bool
	}{
		"no pools": {},
		"no pool fits": {
			pools: map[string]poolSpec{"a": lvmThin("vg0", "pool0"), "f": filePool("/srv/qubes"), "r": reflinkPool(elsewhere)},
		},
		"the pool named default before every other rule": {
			pools: map[string]poolSpec{
				"default":     lvmThin("vgX", "poolX"),
				"a":           lvmThin("vg0", "pool0"),
				"b":           lvmThin("vg1", "pool1"),
				"varlibqubes": filePool("/var/lib/qubes"),
			},
			in:   pool.DefaultPoolInputs{LVMPool: "pool1", RootVolumeGroup: "vg0", RootThinPool: "pool0"},
			want: "default",
		},
		"the pool named default, of any driver": {
			pools: map[string]poolSpec{"default": reflinkPool(elsewhere), "varlibqubes": filePool("/var/lib/qubes")},
			want:  "default",
		},
		"DEFAULT_LVM_POOL before the root filesystem's": {
			pools: map[string]poolSpec{"a": lvmThin("vg0", "pool0"), "b": lvmThin("vg1", "pool1"), "varlibqubes": filePool("/var/lib/qubes")},
			in:    pool.DefaultPoolInputs{LVMPool: "pool1", RootVolumeGroup: "vg0", RootThinPool: "pool0"},
			want:  "b",
		},
		"DEFAULT_LVM_POOL is compared with thin_pool only; the first by name": {
			pools: map[string]poolSpec{"z": lvmThin("vg1", "pool1"), "m": lvmThin("vg2", "pool1")},
			in:    pool.DefaultPoolInputs{LVMPool: "pool1"},
			want:  "m",
		},
		"DEFAULT_LVM_POOL written vg/pool fits no thin_pool": {
			pools: map[string]poolSpec{"vm-pool": lvmThin("qubes_dom0", "vm-pool"), "varlibqubes": filePool("/var/lib/qubes")},
			in:    pool.DefaultPoolInputs{LVMPool: "qubes_dom0/vm-pool"},
			want:  "varlibqubes",
		},
		"DEFAULT_LVM_POOL fits lvm_thin pools only": {
			pools: map[string]poolSpec{"f": {"file", map[string]string{"dir_path": "/srv/qubes", "thin_pool": "pool1"}}},
			in:    pool.DefaultPoolInputs{LVMPool: "pool1"},
		},
		"an unmatched DEFAULT_LVM_POOL falls through to the root filesystem's": {
			pools: map[string]poolSpec{"a": lvmThin("vg0", "pool0")},
			in:    pool.DefaultPoolInputs{LVMPool: "nope", RootVolumeGroup: "vg0", RootThinPool: "pool0"},
			want:  "a",
		},
		"the root filesystem's before /var/lib/qubes": {
			pools: map[string]poolSpec{"a": lvmThin("vg0", "pool0"), "varlibqubes": filePool("/var/lib/qubes")},
			in:    root,
			want:  "a",
		},
		"the root filesystem's thin pool needs its volume group": {
			pools: map[string]poolSpec{"a": lvmThin("vg9", "pool0"), "varlibqubes": filePool("/var/lib/qubes")},
			in:    root,
			want:  "varlibqubes",
		},
		"the root filesystem's fits lvm_thin pools only": {
			pools: map[string]poolSpec{"f": {"file", map[string]string{"dir_path": "/srv/qubes", "volume_group": "vg0", "thin_pool": "pool0"}}},
			in:    root,
		},
		"root not on a thin volume: /var/lib/qubes": {
			pools: map[string]poolSpec{"a": lvmThin("vg0", "pool0"), "varlibqubes": filePool("/var/lib/qubes")},
			want:  "varlibqubes",
		},
		"a file pool at /var/lib/qubes/, normalised": {
			pools: map[string]poolSpec{"vlq": filePool("/var/lib/qubes/")},
			want:  "vlq",
		},
		"a file-reflink pool at /var/lib/qubes": {
			pools:         map[string]poolSpec{"varlibqubes": reflinkPool("/var/lib/qubes"), "other": filePool("/srv/qubes")},
			want:          "varlibqubes",
			atVarLibQubes: true,
		},
		"a file pool below /var/lib/qubes does not fit": {
			pools: map[string]poolSpec{"sub": filePool("/var/lib/qubes/sub")},
		},
	} {
		t.Run(what, func(t *testing.T) {
			if tc.atVarLibQubes {
				_, err := os.Stat("/var/lib/qubes")
				testenv.Need(t, errors.Is(err, os.ErrNotExist), "no /var/lib/qubes",
					"a file-reflink pool opened at an existing /var/lib/qubes would lock it")
			}
			m := openWithPools(t, tc.pools)
			assert.Equal(t, tc.want, defaultName(t, m, tc.in))
		})
	}
	_, err := os.Stat("/var/lib/qubes")
	assert.ErrorIs(t, err, os.ErrNotExist, "nothing is created at /var/lib/qubes")
}

// TestDefaultPoolFollowsPools: the default pool is computed from the
// pools of the moment, as they are added and removed, and a closed
// Manager has none.
func TestDefaultPoolFollowsPools(t *testing.T) {
	ctx := t.Context()
	base := t.TempDir()
	m := reflinkManager(t, filepath.Join(base, "state"), filepath.Join(base, "p"))
	root := pool.DefaultPoolInputs{RootVolumeGroup: "qubes_dom0", RootThinPool: "vm-pool"}
	assert.Equal(t, "", defaultName(t, m, root), "a file-reflink pool elsewhere is no default")

	_, err := m.AddPool(ctx, "varlibqubes", "file", map[string]string{"dir_path": "/var/lib/qubes"})
	require.NoError(t, err)
	assert.Equal(t, "varlibqubes", defaultName(t, m, root))
	_, err = m.AddPool(ctx, "vm-pool", "lvm_thin", map[string]string{"volume_group": "qubes_dom0", "thin_pool": "vm-pool"})
	require.NoError(t, err)
	assert.Equal(t, "vm-pool", defaultName(t, m, root))
	assert.Equal(t, "varlibqubes", defaultName(t, m, pool.DefaultPoolInputs{}))
	_, err = m.AddPool(ctx, "default", "file-reflink", map[string]string{"dir_path": filepath.Join(base, "default"), "setup_check": "no"})
	require.NoError(t, err)
	assert.Equal(t, "default", defaultName(t, m, root))

	require.NoError(t, m.RemovePool(ctx, "default"))
	assert.Equal(t, "vm-pool", defaultName(t, m, root))
	require.NoError(t, m.Close())
	_, err = m.DefaultPool(root)
	assert.ErrorIs(t, err, storage.ErrClosed)
}

// TestIncludedIn: a pool is included in the pool whose directory holds its
// own, resolved as os.path.realpath does (symlinks on either side, missing
// parts as written, a loop left alone); the innermost such pool wins; a
// pool without dir_path is included in none.
func TestIncludedIn(t *testing.T) {
	ctx := t.Context()
	base := t.TempDir()
	m := reflinkManager(t, filepath.Join(t.TempDir(), "state"), filepath.Join(base, "outer"))
	require.NoError(t, os.MkdirAll(filepath.Join(base, "d", "e"), 0o755))
	for link, target := range map[string]string{
		"link":  "outer/inner", // relative
		"alias": filepath.Join(base, "d"),
		"loop":  "loop",
	} {
		require.NoError(t, os.Symlink(target, filepath.Join(base, link)))
	}
	for name, spec := range map[string]poolSpec{
		"base":    filePool(base),
		"inner":   {"file-reflink", map[string]string{"dir_path": filepath.Join(base, "outer", "inner"), "setup_check": "no"}},
		"sibling": filePool(filepath.Join(base, "outer-2")),
		"ghost":   filePool(filepath.Join(base, "outer", "inner", "missing", "deeper")),
		"linked":  filePool(filepath.Join(base, "link", "sub")),
		"alias":   filePool(filepath.Join(base, "alias")),
		"deep":    filePool(filepath.Join(base, "d", "e")),
		"dotdot":  filePool(filepath.Join(base, "outer") + "/../outer/x"),
		"looped":  filePool(filepath.Join(base, "loop", "x")),
		"thin":    lvmThin("vg0", "pool0"),
	} {
		_, err := m.AddPool(ctx, name, spec.Driver, spec.Params)
		require.NoError(t, err, name)
	}
	for name, want := range map[string]string{
		"base":    "",
		"p":       "base", // base/outer
		"inner":   "p",    // not base: the innermost
		"sibling": "base", // base/outer-2 is not inside base/outer
		"ghost":   "inner",
		"linked":  "inner", // base/link/sub is base/outer/inner/sub
		"alias":   "base",
		"deep":    "alias", // base/d/e is inside base/alias, base/d
		"dotdot":  "p",
		"looped":  "base", // base/loop/x, unresolved
		"thin":    "",
	} {
		got, err := m.IncludedIn(name)
		require.NoError(t, err, name)
		assert.Equal(t, want, got, "included_in of %s", name)
	}
	_, err := m.IncludedIn("nope")
	assert.ErrorIs(t, err, storage.ErrNotFound)
	require.NoError(t, m.Close())
	_, err = m.IncludedIn("p")
	assert.ErrorIs(t, err, storage.ErrClosed)
}

// TestRemovePoolForceKeepsImages: on a real file-reflink pool, removing a
// pool that holds volumes is refused without Force and changes nothing; a
// forced removal forgets the pool and its volumes and leaves every image
// and revision on disk, which a pool added again at the same directory
// does not replace (CreateVolume of a vid with data is ErrExists).
func TestRemovePoolForceKeepsImages(t *testing.T) {
	ctx := t.Context()
	base := t.TempDir()
	stateDir, poolDir := filepath.Join(base, "state"), filepath.Join(base, "pool")
	m := reflinkManager(t, stateDir, poolDir)
	private := storage.VolumeConfig{Name: "private", Pool: "p", VID: "appvms/work/private", Size: recSize, RW: true, SaveOnStop: true, RevisionsToKeep: keep(2)}
	for _, c := range []storage.VolumeConfig{
		private,
		{Name: "volatile", Pool: "p", VID: "appvms/work/volatile", Size: recSize, RW: true},
	} {
		_, err := m.CreateVolume(ctx, "work", c)
		require.NoError(t, err)
	}
	for _, b := range []byte{0x61, 0x62} {
		require.NoError(t, m.StartVM(ctx, "work"))
		writeDevice(t, vol(t, m, "work", "private"), block(b))
		require.NoError(t, m.StopVM(ctx, "work"))
	}
	before := stateBytes(t, stateDir)

	err := m.RemovePool(ctx, "p")
	require.ErrorIs(t, err, storage.ErrInUse)
	assert.ErrorContains(t, err, "storage pool is in use by work:private, work:volatile")
	err = m.RemovePoolWith(ctx, "p", pool.RemovePoolOptions{})
	require.ErrorIs(t, err, storage.ErrInUse)
	require.NoError(t, m.StartVM(ctx, "work"))
	err = m.RemovePoolWith(ctx, "p", pool.RemovePoolOptions{Force: true})
	require.ErrorIs(t, err, storage.ErrRunning, "a running volume is never forgotten")
	assert.Equal(t, before, stateBytes(t, stateDir), "refusals change nothing")
	_, err = m.Volume("work", "private")
	require.NoError(t, err)
	require.NoError(t, m.StopVM(ctx, "work"))

	revs, err := vol(t, m, "work", "private").Revisions(ctx)
	require.NoError(t, err)
	require.Len(t, revs, 2)
	// The pool's worker finishes the last stop (the next precache, the
	// pruning) by Close.
	require.NoError(t, m.Close())
	m = reflinkManager(t, stateDir, poolDir)
	files := dirFiles(t, poolDir)
	require.Contains(t, files, "appvms/work/private.img")

	require.NoError(t, m.RemovePoolWith(ctx, "p", pool.RemovePoolOptions{Force: true}))
	assert.Empty(t, m.Pools())
	assert.Empty(t, m.VMs())
	assert.Equal(t, files, dirFiles(t, poolDir), "every image and revision stays, unchanged")
	data, err := os.ReadFile(filepath.Join(poolDir, "appvms", "work", "private.img"))
	require.NoError(t, err)
	assert.Equal(t, block(0x62), data[:recBlock], "with the last data written")
	var st struct {
		Pools map[string]any `json:"pools"`
		VMs   map[string]any `json:"vms"`
	}
	require.NoError(t, json.Unmarshal(stateBytes(t, stateDir), &st))
	assert.Empty(t, st.Pools)
	assert.Empty(t, st.VMs)

	_, err = m.AddPool(ctx, "p", "file-reflink", map[string]string{"dir_path": poolDir, "setup_check": "no"})
	require.NoError(t, err, "the directory is still this state's")
	_, err = m.CreateVolume(ctx, "work", private)
	require.ErrorIs(t, err, storage.ErrExists, "the forgotten volume's data is not replaced")
	assert.Equal(t, files, dirFiles(t, poolDir))
}

// dirFiles returns the SHA-256 of every regular file under dir by its
// path relative to dir.
func dirFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := make(map[string]string)
	require.NoError(t, filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		files[rel] = fmt.Sprintf("%x", sha256.Sum256(data))
		return err
	}))
	return files
}

// TestAddInitialPools: varlibqubes is created with the file driver at the
// base directory unless another driver is asked for; a state with pools
// is refused and unchanged. (internal/integration proves it on btrfs with
// the real drivers.)
func TestAddInitialPools(t *testing.T) {
	ctx := t.Context()
	m, err := pool.OpenManager(ctx, filepath.Join(t.TempDir(), "state"), pool.ManagerOptions{})
	require.NoError(t, err)
	defer m.Close()
	p, err := m.AddInitialPools(ctx, pool.InitialPoolsOptions{})
	require.NoError(t, err)
	assert.Equal(t, "varlibqubes", p.Name())
	assert.Equal(t, "file", p.Driver())
	assert.Equal(t, "/var/lib/qubes", p.Config()["dir_path"])
	_, err = m.AddInitialPools(ctx, pool.InitialPoolsOptions{BaseDir: t.TempDir()})
	assert.ErrorIs(t, err, storage.ErrExists)
	assert.Len(t, m.Pools(), 1)

	m2, err := pool.OpenManager(ctx, filepath.Join(t.TempDir(), "state"), pool.ManagerOptions{})
	require.NoError(t, err)
	defer m2.Close()
	_, err = m2.AddInitialPools(ctx, pool.InitialPoolsOptions{BaseDir: "/x", Params: map[string]string{"dir_path": "/y"}})
	assert.ErrorIs(t, err, storage.ErrInvalidConfig)
	p, err = m2.AddInitialPools(ctx, pool.InitialPoolsOptions{BaseDir: "/srv/qubes", Driver: "lvm_thin"})
	require.NoError(t, err)
	assert.Equal(t, "lvm_thin", p.Driver(), "another driver only when asked")
	assert.Equal(t, "/srv/qubes", p.Config()["dir_path"])
}
