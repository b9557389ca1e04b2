package lvm_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/lvm"
	"github.com/vmpool/vmpool/storage"
)

const mib = 1 << 20

// appVM registers (and creates, where create) a template root and an
// AppVM's root (snapshot), private (origin, revisions_to_keep 1) and
// volatile volumes.
type appVM struct {
	tpl, root, priv, vol storage.Volume
	set                  *storage.Set
}

func newAppVM(t *testing.T, p storage.Pool) *appVM {
	t.Helper()
	keep := 1
	init := func(c storage.VolumeConfig) storage.Volume {
		v, err := p.InitVolume(c)
		require.NoError(t, err)
		return v
	}
	a := &appVM{
		tpl:  init(storage.VolumeConfig{VID: "vg/vm-tpl-root", Size: 8 * mib, RW: true, SaveOnStop: true, RevisionsToKeep: &keep}),
		root: init(storage.VolumeConfig{VID: "vg/vm-work-root", Size: 8 * mib, RW: true, SnapOnStart: true, Source: "vg/vm-tpl-root"}),
		priv: init(storage.VolumeConfig{VID: "vg/vm-work-private", Size: 8 * mib, RW: true, SaveOnStop: true, RevisionsToKeep: &keep}),
		vol:  init(storage.VolumeConfig{VID: "vg/vm-work-volatile", Size: 8 * mib, RW: true}),
	}
	for _, v := range []storage.Volume{a.tpl, a.root, a.priv, a.vol} {
		require.NoError(t, v.Create(t.Context()))
	}
	a.set = storage.NewSet(a.root, a.priv, a.vol)
	return a
}

// TestCommandSequences checks the exact lvm commands of each operation
// and the lvm processes a VM start and stop take.
func TestCommandSequences(t *testing.T) {
	f := newFake()
	p := openFake(t, f, nil)
	ctx := t.Context()
	n, _ := f.mark()
	a := newAppVM(t, p)
	assert.Equal(t, []string{
		"lvcreate --thin --setactivationskip=n --activate=y --name=vm-tpl-root --virtualsize=8388608B -- vg/pool",
		"lvcreate --thin --setactivationskip=n --activate=y --name=vm-work-private --virtualsize=8388608B -- vg/pool",
	}, f.since(n), "create: an origin's thin LV; a snapshot and a volatile volume have none")

	n, procs := f.mark()
	require.NoError(t, a.set.Start(ctx))
	assert.Equal(t, []string{
		"lvcreate --setactivationskip=n --activate=y --snapshot --name=vm-work-root-snap -- vg/vm-tpl-root",
		"lvcreate --setactivationskip=n --activate=y --snapshot --name=vm-work-private-snap -- vg/vm-work-private",
		"lvcreate --thin --setactivationskip=n --activate=y --name=vm-work-volatile --virtualsize=8388608B -- vg/pool",
	}, f.since(n), "start")
	_, after := f.mark()
	assert.Equal(t, 1, after-procs, "a VM start is one lvm process")
	assert.Equal(t, "/dev/mapper/vg-vm--work--root--snap", a.root.BlockDevice().Path)
	assert.Equal(t, "/dev/mapper/vg-vm--work--private--snap", a.priv.BlockDevice().Path)
	assert.Equal(t, "/dev/mapper/vg-vm--work--volatile", a.vol.BlockDevice().Path)

	n, procs = f.mark()
	require.NoError(t, a.set.Stop(ctx))
	assert.Equal(t, []string{
		"lvremove --force -- vg/vm-work-root-snap",
		"lvrename -- vg/vm-work-private vg/vm-work-private-1521065901-back",
		"lvrename -- vg/vm-work-private-snap vg/vm-work-private",
		"lvremove --force -- vg/vm-work-volatile",
	}, f.since(n), "stop: the first commit keeps one revision and prunes nothing")
	_, after = f.mark()
	assert.Equal(t, 1, after-procs, "a stop that prunes nothing is one lvm process")
	assert.ElementsMatch(t, []string{"/dev/vg/vm-work-root-snap", "/dev/vg/vm-work-volatile"}, f.discards, "the thrown-away LVs are discarded first")

	require.NoError(t, a.set.Start(ctx))
	f.discards = nil
	n, procs = f.mark()
	require.NoError(t, a.set.Stop(ctx))
	assert.Equal(t, []string{
		"lvremove --force -- vg/vm-work-root-snap",
		"lvrename -- vg/vm-work-private vg/vm-work-private-1521065902-back",
		"lvrename -- vg/vm-work-private-snap vg/vm-work-private",
		"lvremove --force -- vg/vm-work-volatile",
		"lvremove --force -- vg/vm-work-private-1521065901-back",
	}, f.since(n), "stop: the second commit prunes the oldest revision")
	_, after = f.mark()
	assert.Equal(t, 2, after-procs, "a stop that prunes is two lvm processes (blkdiscard of the pruned revision between them)")
	assert.Contains(t, f.discards, "/dev/vg/vm-work-private-1521065901-back")

	revs, err := a.priv.Revisions(ctx)
	require.NoError(t, err)
	require.Len(t, revs, 1)
	assert.Equal(t, "1521065902-back", revs[0].ID)
	assert.Equal(t, "2018-03-14T22:18:22", revs[0].Timestamp())

	n, _ = f.mark()
	require.NoError(t, a.priv.Revert(ctx, ""))
	assert.Equal(t, []string{
		"lvcreate --setactivationskip=n --activate=y --snapshot --name=vm-work-private-import -- vg/vm-work-private-1521065902-back",
		"lvremove --force -- vg/vm-work-private",
		"lvrename -- vg/vm-work-private-import vg/vm-work-private",
	}, f.since(n), "revert clones the revision beside the committed LV before it replaces it")

	n, _ = f.mark()
	require.NoError(t, a.priv.Resize(ctx, 12*mib, storage.ResizeOptions{}))
	require.NoError(t, a.set.Start(ctx))
	m, _ := f.mark()
	require.NoError(t, a.priv.Resize(ctx, 16*mib, storage.ResizeOptions{}))
	assert.Equal(t, []string{"lvresize --force --size=12582912B -- vg/vm-work-private"}, f.since(n)[:1], "a stopped origin resizes its committed LV")
	assert.Equal(t, []string{"lvresize --force --size=16777216B -- vg/vm-work-private-snap"}, f.since(m), "a running one its -snap")
	require.NoError(t, a.set.Stop(ctx))

	n, _ = f.mark()
	path, err := a.priv.ImportData(ctx, 4*mib)
	require.NoError(t, err)
	assert.Equal(t, "/dev/vg/vm-work-private-import", path)
	require.NoError(t, a.priv.ImportDataEnd(ctx, true))
	assert.Equal(t, []string{
		"lvcreate --thin --setactivationskip=n --activate=y --name=vm-work-private-import --virtualsize=4194304B -- vg/pool",
		"lvrename -- vg/vm-work-private vg/vm-work-private-1521065904-back",
		"lvrename -- vg/vm-work-private-import vg/vm-work-private",
		"lvremove --force -- vg/vm-work-private-1521065903-back",
	}, f.since(n), "import data commits -import")

	n, _ = f.mark()
	require.NoError(t, a.priv.ImportVolume(ctx, a.tpl))
	assert.Equal(t, []string{
		"lvrename -- vg/vm-work-private vg/vm-work-private-1521065905-back",
		"lvcreate --setactivationskip=n --activate=y --snapshot --name=vm-work-private -- vg/vm-tpl-root",
		"lvremove --force -- vg/vm-work-private-1521065904-back",
	}, f.since(n), "an import from the same thin pool is a thin clone")

	n, _ = f.mark()
	require.NoError(t, a.priv.Remove(ctx))
	assert.Equal(t, []string{
		"lvremove --force -- vg/vm-work-private",
		"lvremove --force -- vg/vm-work-private-1521065905-back",
	}, f.since(n), "remove")
	assert.Equal(t, []string{"vm-tpl-root"}, f.names())
}

// TestFailureAtEachStep injects a failure into each lvm command of each
// operation in turn: the operation fails with a *lvm.CommandError that
// names the command and its stderr, and the volume group holds no
// half-made LV: exactly what it held before (a start, a stop's commit,
// a revert) or what the volume needs to be stopped (a failed stop of a
// snapshot or volatile volume keeps its LV, which the next stop removes).
func TestFailureAtEachStep(t *testing.T) {
	ops := []struct {
		name string
		prep func(t *testing.T, a *appVM) // brings the VM to the state before op
		op   func(t *testing.T, a *appVM) error
	}{
		{"start", func(t *testing.T, a *appVM) {}, func(t *testing.T, a *appVM) error { return a.set.Start(t.Context()) }},
		{"stop", func(t *testing.T, a *appVM) { require.NoError(t, a.set.Start(t.Context())) }, func(t *testing.T, a *appVM) error { return a.set.Stop(t.Context()) }},
		{"revert", func(t *testing.T, a *appVM) {
			require.NoError(t, a.set.Start(t.Context()))
			require.NoError(t, a.set.Stop(t.Context()))
		}, func(t *testing.T, a *appVM) error { return a.priv.Revert(t.Context(), "") }},
		{"import", func(t *testing.T, a *appVM) {}, func(t *testing.T, a *appVM) error { return a.priv.ImportVolume(t.Context(), a.tpl) }},
		{"resize", func(t *testing.T, a *appVM) {}, func(t *testing.T, a *appVM) error {
			return a.priv.Resize(t.Context(), 12*mib, storage.ResizeOptions{})
		}},
	}
	for _, o := range ops {
		t.Run(o.name, func(t *testing.T) {
			// Count the op's commands in a run without failures.
			f := newFake()
			a := newAppVM(t, openFake(t, f, nil))
			o.prep(t, a)
			n, _ := f.mark()
			require.NoError(t, o.op(t, a))
			steps := f.since(n)
			require.NotEmpty(t, steps)
			for k, step := range steps {
				t.Run(fmt.Sprint(k), func(t *testing.T) {
					f := newFake()
					a := newAppVM(t, openFake(t, f, nil))
					o.prep(t, a)
					before := f.uuids()
					f.fail = func(args []string) string {
						if strings.Join(args, " ") == step {
							return "  injected failure of " + args[0]
						}
						return ""
					}
					err := o.op(t, a)
					f.fail = nil
					if o.name == "revert" && strings.HasPrefix(step, "lvrename") {
						// The rename that completes a revert is retried.
						require.NoError(t, err, "a failed rename of a revert is retried")
						return
					}
					if strings.HasPrefix(step, "lvremove") && strings.Contains(step, "-back") {
						// Pruning an old revision after a commit: Qubes
						// ignores its failure, and so does vmpool.
						assert.NoError(t, err, "a failed prune is logged, not returned")
						return
					}
					require.Error(t, err, "failure injected into %q", step)
					var ce *lvm.CommandError
					if assert.True(t, errors.As(err, &ce), "%v is a CommandError", err) {
						assert.Equal(t, step, strings.Join(ce.Args, " "))
						assert.Contains(t, ce.Stderr, "injected failure")
					}
					after := f.uuids()
					if o.name == "stop" {
						// The other volumes of the VM stopped; the LVs of
						// the one whose step failed are as they were.
						owner := ownerOf(step)
						assert.Equal(t, lvsOf(before, owner), lvsOf(after, owner), "a failed stop of %s leaves its LVs as they were", owner)
						return
					}
					assert.Equal(t, before, after, "a failed %s leaves the LVs as they were", o.name)
				})
			}
		})
	}
}

// ownerOf returns the volume LV a command is about: vm-work-root,
// vm-work-private or vm-work-volatile.
func ownerOf(step string) string {
	for _, o := range []string{"vm-work-root", "vm-work-private", "vm-work-volatile"} {
		if strings.Contains(step, o) {
			return o
		}
	}
	return ""
}

// lvsOf returns the entries of m of LV owner and its -snap, -import and
// revisions.
func lvsOf(m map[string]string, owner string) map[string]string {
	out := make(map[string]string)
	for k, v := range m {
		if k == owner || strings.HasPrefix(k, owner+"-") {
			out[k] = v
		}
	}
	return out
}

// TestExhaustedPool: when the thin pool cannot make new thin LVs, a VM
// start fails with an error, rolls back what it started, and the
// committed LVs are intact.
func TestExhaustedPool(t *testing.T) {
	f := newFake()
	a := newAppVM(t, openFake(t, f, nil))
	ctx := t.Context()
	require.NoError(t, a.set.Start(ctx))
	require.NoError(t, a.set.Stop(ctx))
	before := f.uuids()
	f.full = true
	err := a.set.Start(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "reached threshold")
	assert.Equal(t, before, f.uuids(), "nothing made, nothing lost")
	for _, v := range []storage.Volume{a.root, a.priv, a.vol} {
		running, err := v.IsRunning(ctx)
		require.NoError(t, err)
		assert.False(t, running, v.Config().VID)
	}
	f.full = false
	require.NoError(t, a.set.Start(ctx), "the pool works again once it has space")
	require.NoError(t, a.set.Stop(ctx))
}

// TestOldLayouts reads the layouts of Qubes' migration tests
// (qubes/tests/storage_lvm.py test_009–013): revisions of the epoch form,
// a VM started by older code (-snap, no revision), an interrupted commit
// (revisions and -snap, no committed LV).
func TestOldLayouts(t *testing.T) {
	ctx := t.Context()
	keep := 2
	conf := storage.VolumeConfig{VID: "vg/vm-old-root", Size: 8 * mib, RW: true, SaveOnStop: true, RevisionsToKeep: &keep}

	t.Run("interrupted_commit", func(t *testing.T) {
		f := newFake()
		for _, s := range []string{"-1521065904-back", "-1521065905-back", "-snap"} {
			f.add("vm-old-root"+s, 8*mib, "")
		}
		snap := f.uuids()["vm-old-root-snap"]
		v, err := openFake(t, f, nil).InitVolume(conf)
		require.NoError(t, err)
		dirty, err := v.IsDirty(ctx)
		require.NoError(t, err)
		assert.True(t, dirty)
		path, err := v.Export(ctx)
		require.NoError(t, err)
		assert.Equal(t, "/dev/mapper/vg-vm--old--root--1521065905--back", path, "the committed state is the newest revision")
		require.NoError(t, v.Start(ctx))
		assert.Equal(t, snap, f.uuids()["vm-old-root-snap"], "the start resumes -snap")
		require.NoError(t, v.Stop(ctx))
		assert.Equal(t, []string{"vm-old-root", "vm-old-root-1521065904-back", "vm-old-root-1521065905-back"}, f.names())
		assert.Equal(t, snap, f.uuids()["vm-old-root"], "the stop commits -snap")
	})
	t.Run("started_by_old_code", func(t *testing.T) {
		f := newFake()
		f.add("vm-old-root", 8*mib, "")
		f.add("vm-old-root-snap", 8*mib, "vm-old-root")
		u := f.uuids()
		c := conf
		one := 1
		c.RevisionsToKeep = &one
		v, err := openFake(t, f, nil).InitVolume(c)
		require.NoError(t, err)
		require.NoError(t, v.Stop(ctx))
		assert.Equal(t, []string{"vm-old-root", "vm-old-root-1521065901-back"}, f.names())
		assert.Equal(t, u["vm-old-root-snap"], f.uuids()["vm-old-root"])
		assert.Equal(t, u["vm-old-root"], f.uuids()["vm-old-root-1521065901-back"])
	})
	t.Run("name_suffix_parse", func(t *testing.T) {
		// Qubes #4680: LVs of VM "old-root" are not revisions of "old".
		f := newFake()
		f.add("vm-old-root", 8*mib, "")
		f.add("vm-old-root-1521065904-back", 8*mib, "")
		f.add("vm-old-root-x-1521065904-back", 8*mib, "")
		v, err := openFake(t, f, nil).InitVolume(conf)
		require.NoError(t, err)
		revs, err := v.Revisions(ctx)
		require.NoError(t, err)
		require.Len(t, revs, 1)
		assert.Equal(t, "1521065904-back", revs[0].ID)
	})
}

// TestBadInput: malformed vids and parameters are ErrInvalidConfig and run
// no lvm command.
func TestBadInput(t *testing.T) {
	f := newFake()
	p := openFake(t, f, nil)
	n, _ := f.mark()
	for _, vid := range []string{"appvms/work/private", "other/vm-work-private", "vg/work-private", "vg/vm-work-pri-vate-", "vg/vm-work"} {
		_, err := p.InitVolume(storage.VolumeConfig{VID: vid, Size: mib, RW: true, SaveOnStop: true})
		assert.ErrorIs(t, err, storage.ErrInvalidConfig, vid)
	}
	_, err := p.InitVolume(storage.VolumeConfig{VID: "vg/vm-work-root", Size: mib, SnapOnStart: true, SaveOnStop: true, Source: "vg/vm-tpl-root"})
	assert.ErrorIs(t, err, storage.ErrUnsupported, "snapshot-then-commit")
	assert.Empty(t, f.since(n), "no lvm command for bad input")
	for _, params := range []map[string]string{
		{"volume_group": "vg"},
		{"thin_pool": "pool"},
		{"volume_group": "-vg", "thin_pool": "pool"},
		{"volume_group": "vg", "thin_pool": "pool", "dir_path": "/x"},
		{"volume_group": "vg", "thin_pool": "pool", "revisions_to_keep": "-2"},
		{"volume_group": "vg", "thin_pool": "pool", "ephemeral_volatile": "maybe"},
	} {
		_, err := lvm.OpenWith(t.Context(), storage.PoolConfig{Name: "bad", Params: params}, lvm.Options{Runner: f, LockDir: t.TempDir()})
		assert.ErrorIs(t, err, storage.ErrInvalidConfig, "%v", params)
	}
	missing, err := lvm.OpenWith(t.Context(), storage.PoolConfig{Name: "m", Params: map[string]string{"volume_group": "vg", "thin_pool": "nopool"}}, lvm.Options{Runner: f, LockDir: t.TempDir()})
	require.NoError(t, err)
	assert.ErrorIs(t, missing.Setup(t.Context()), storage.ErrNotFound)
}

// TestPoolUsage reads the thin pool's data and metadata figures.
func TestPoolUsage(t *testing.T) {
	p := openFake(t, newFake(), nil)
	u, err := p.Usage(t.Context())
	require.NoError(t, err)
	assert.Equal(t, storage.PoolUsage{DataSize: 1 << 30, DataUsage: (1 << 30) / 100, Extra: map[string]int64{"metadata_size": 4194304, "metadata_usage": 419430}}, u)
}

// TestSecondOpenRefused: a pool is locked against a second open until
// Close.
func TestSecondOpenRefused(t *testing.T) {
	f := newFake()
	dir := t.TempDir()
	cfg := storage.PoolConfig{Name: "a", Params: map[string]string{"volume_group": "vg", "thin_pool": "pool"}}
	p, err := lvm.OpenWith(t.Context(), cfg, lvm.Options{Runner: f, LockDir: dir})
	require.NoError(t, err)
	_, err = lvm.OpenWith(t.Context(), cfg, lvm.Options{Runner: f, LockDir: dir})
	assert.ErrorIs(t, err, storage.ErrInUse)
	require.NoError(t, p.Close())
	p, err = lvm.OpenWith(t.Context(), cfg, lvm.Options{Runner: f, LockDir: dir})
	require.NoError(t, err, "free again after Close")
	require.NoError(t, p.Close())
}

// TestEncryptedName: an ephemeral volume's dm-crypt mapping is named as
// Qubes' ThinVolume.encrypted_volume_path names it, "-" doubled.
func TestEncryptedName(t *testing.T) {
	f := newFake()
	p := openFake(t, f, nil)
	v, err := p.InitVolume(storage.VolumeConfig{VID: f.vg + "/vm-my-vm-volatile", Size: 8 * mib, RW: true})
	require.NoError(t, err)
	assert.Equal(t, "vg-vm--my--vm--volatile@crypt", storage.EncryptedName(v, "my-vm"))
}
