package reflink

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/internal/ownerfile"
	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

func TestRegistered(t *testing.T) {
	assert.Contains(t, pool.Drivers(), "file-reflink")
	params, err := pool.Parameters("file-reflink")
	require.NoError(t, err)
	var names []string
	for _, p := range params {
		names = append(names, p.Name)
		assert.Equal(t, p.Name == "dir_path", p.Required, p.Name)
	}
	assert.Equal(t, []string{"revisions_to_keep", "dir_path", "setup_check", "ephemeral_volatile"}, names, "Qubes' order")
}

func TestParams(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func(params map[string]string) (storage.Pool, error) {
		return pool.Open(ctx, "file-reflink", storage.PoolConfig{Name: "p", Params: params})
	}
	p, err := open(map[string]string{"dir_path": dir + "/x/../pool", "revisions_to_keep": "3", "setup_check": "No", "ephemeral_volatile": "True"})
	require.NoError(t, err)
	defer p.Close()
	assert.Equal(t, map[string]string{
		"name": "p", "driver": "file-reflink", "dir_path": dir + "/pool",
		"revisions_to_keep": "3", "ephemeral_volatile": "True",
	}, p.Config(), "setup_check is not persisted; dir_path is cleaned")
	assert.False(t, p.(*reflinkPool).setupCheck)

	bad := []map[string]string{
		{},
		{"dir_path": ""},
		{"dir_path": dir, "unknown": "1"},
		{"dir_path": dir, "revisions_to_keep": "-2"},
		{"dir_path": dir, "revisions_to_keep": "two"},
		{"dir_path": dir, "setup_check": "maybe"},
		{"dir_path": dir, "ephemeral_volatile": "true"}, // parse_bool is case-sensitive
		{"dir_path": "a\x00b"},
	}
	for _, params := range bad {
		_, err := open(params)
		assert.ErrorIs(t, err, storage.ErrInvalidConfig, "%v", params)
	}
	_, err = pool.Open(ctx, "file-reflink", storage.PoolConfig{Params: map[string]string{"dir_path": dir}})
	assert.ErrorIs(t, err, storage.ErrInvalidConfig, "a pool needs a name")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "open creates nothing")
}

// TestSetupRefusesNoReflink reproduces Qubes' setup check on ext4.
func TestSetupRefusesNoReflink(t *testing.T) {
	ctx := context.Background()
	mnt := loopfs.Mount(t, loopfs.Ext4, 64<<20)
	dir := filepath.Join(mnt, "pool")
	p, err := pool.Open(ctx, "file-reflink", storage.PoolConfig{Name: "p", Params: map[string]string{"dir_path": dir}})
	require.NoError(t, err)
	defer p.Close()
	err = p.Setup(ctx)
	require.ErrorIs(t, err, storage.ErrReflinkUnsupported)
	assert.Contains(t, err.Error(), "setup_check=no", "the message names the option")
	assert.Contains(t, err.Error(), dir)
	assert.NoDirExists(t, dir, "a directory setup made is removed again")

	require.NoError(t, os.Mkdir(dir, 0o755))
	require.ErrorIs(t, p.Setup(ctx), storage.ErrReflinkUnsupported)
	assert.DirExists(t, dir, "an existing directory stays")

	tp := openTestPool(t, filepath.Join(mnt, "pool2"), map[string]string{"setup_check": "no"}, true)
	assert.False(t, tp.Capabilities().Reflink)
	assert.Equal(t, []string{"appvms/", "vm-templates/"}, tp.tree(t))
}

func TestSetupNeedsParent(t *testing.T) {
	tp := openTestPool(t, filepath.Join(t.TempDir(), "a", "b"), map[string]string{"setup_check": "no"}, false)
	err := tp.Setup(context.Background())
	assert.ErrorIs(t, err, os.ErrNotExist, "dir_path is created without its parents, as in Qubes")
}

// TestFallbackSparseCopy checks that on a filesystem without reflinks
// (ext4, setup_check=no) the copies really are sparse copies.
func TestFallbackSparseCopy(t *testing.T) {
	ctx := context.Background()
	tp := newTestPool(t, loopfs.Ext4, map[string]string{"setup_check": "no"})
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 8 << 20})
	require.NoError(t, v.Create(ctx))
	require.NoError(t, v.Start(ctx))
	writeAt(t, v.dirty, 4<<20, "hello")
	require.NoError(t, v.Stop(ctx))
	require.NoError(t, tp.Flush(ctx))
	ops := tp.log.all(t)
	assert.Contains(t, ops, "sparse-copy")
	assert.NotContains(t, ops, "reflink")
	assert.True(t, tp.noReflink.Load(), "EOPNOTSUPP is remembered")
	assert.False(t, tp.Capabilities().Reflink)

	st, err := os.Stat(v.precache)
	require.NoError(t, err)
	assert.Less(t, fsutil.Allocated(st), int64(1<<20), "the copy kept the holes")
	assert.Equal(t, "hello", readAt(t, v.precache, 4<<20, 5))
}

// TestStartStopDoNotClone checks the speed rule: an origin's start renames
// its precache and its stop links and renames; only the background worker
// clones. A snapshot's start clones its source once.
func TestStartStopDoNotClone(t *testing.T) {
	ctx := context.Background()
	for _, typ := range []loopfs.Type{loopfs.Btrfs, loopfs.XFS} {
		t.Run(string(typ), func(t *testing.T) {
			t.Parallel()
			tp := newTestPool(t, typ, nil)
			v := tp.volume(t, storage.VolumeConfig{VID: "vm-templates/t/root", SaveOnStop: true, RW: true, Size: 8 << 20})
			s := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/root", SnapOnStart: true, Source: "vm-templates/t/root"})
			require.NoError(t, v.Create(ctx))
			for i := 0; i < 3; i++ {
				require.NoError(t, tp.Flush(ctx))
				tp.log.ops(t)
				require.NoError(t, v.Start(ctx))
				assert.Equal(t, []string{"rename"}, tp.log.ops(t), "start %d renames the precache", i)
				writeAt(t, v.dirty, int64(i)<<20, "data")
				require.NoError(t, v.Stop(ctx))
				want := []string{"link", "discard", "rename"} // keep the old clean image, discard the revision beyond 1
				if i == 0 {
					want = []string{"link", "rename"}
				}
				assert.Equal(t, want, tp.log.ops(t), "stop %d", i)
			}
			require.NoError(t, tp.Flush(ctx))
			bg := tp.log.all(t)
			assert.Contains(t, bg, "reflink", "the worker clones the next precache")
			assert.Subset(t, []string{"reflink", "remove"}, bg, "and deletes the pruned revision, nothing else")
			for _, f := range tp.tree(t) {
				assert.False(t, fsutil.IsTemp(f), "the worker deleted the pruned revision: %s", f)
			}

			require.NoError(t, s.Start(ctx))
			assert.Equal(t, []string{"mkdir", "link", "reflink"}, tp.log.ops(t), "a snapshot clones its source")
			require.NoError(t, s.Stop(ctx))
			assert.Equal(t, []string{"discard", "discard"}, tp.log.ops(t), "a snapshot's stop only renames")
		})
	}
}

// TestCleanNeverWrittenInPlace holds the rule that makes hard-linked
// revisions safe: no operation writes a committed image in place.
func TestCleanNeverWrittenInPlace(t *testing.T) {
	ctx := context.Background()
	tp := newTestPool(t, loopfs.Btrfs, nil)
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 4 << 20, RevisionsToKeep: intp(5)})
	require.NoError(t, v.Create(ctx))
	require.NoError(t, v.Start(ctx))
	writeAt(t, v.dirty, 0, "first")
	require.NoError(t, v.Stop(ctx))
	require.NoError(t, v.Start(ctx))
	writeAt(t, v.dirty, 0, "secnd")
	require.NoError(t, v.Stop(ctx))

	revs, err := listRevisions(v.clean)
	require.NoError(t, err)
	require.Len(t, revs, 2)
	first := revs[1].path // revision 2 holds "first"
	assert.Equal(t, "first", readAt(t, first, 0, 5))
	firstSt, err := os.Stat(first)
	require.NoError(t, err)

	// Resize of the stopped volume: a new inode, the revision untouched.
	before, err := os.Stat(v.clean)
	require.NoError(t, err)
	require.NoError(t, v.Resize(ctx, 8<<20, storage.ResizeOptions{}))
	after, err := os.Stat(v.clean)
	require.NoError(t, err)
	assert.False(t, os.SameFile(before, after), "resize makes a new inode")
	assert.EqualValues(t, 8<<20, after.Size())
	assert.Equal(t, "secnd", readAt(t, v.clean, 0, 5))

	// Running and writing does not touch the clean image or revisions.
	require.NoError(t, v.Start(ctx))
	writeAt(t, v.dirty, 0, "third")
	assert.Equal(t, "secnd", readAt(t, v.clean, 0, 5))
	require.NoError(t, v.Stop(ctx))
	require.NoError(t, v.Revert(ctx, "2"))
	assert.Equal(t, "first", readAt(t, v.clean, 0, 5))
	st, err := os.Stat(v.clean)
	require.NoError(t, err)
	assert.True(t, os.SameFile(firstSt, st), "revert renames the revision")
	assert.Equal(t, firstSt.ModTime(), st.ModTime(), "its mtime is untouched")
}

// TestSeedEraRevisions opens a tree with revisions named as the first
// file-reflink driver named them (x.img@<ts>Z).
func TestSeedEraRevisions(t *testing.T) {
	ctx := context.Background()
	tp := newTestPool(t, loopfs.Btrfs, nil)
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 1 << 20, RevisionsToKeep: intp(3)})
	require.NoError(t, v.Create(ctx))
	for _, r := range []struct{ name, data string }{
		{"private.img@2018-02-03T00:00:00Z", "seed2"},
		{"private.img@2018-01-02T03:04:05Z", "seed1"},
		{"private.img.7@2019-01-01T00:00:00Z", "numbr"},
	} {
		require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(v.clean), r.name), []byte(r.data), 0o600))
	}
	ids := func() []string {
		revs, err := v.Revisions(ctx)
		require.NoError(t, err)
		var ids []string
		for _, r := range revs {
			ids = append(ids, r.ID+" "+r.Timestamp())
		}
		return ids
	}
	assert.Equal(t, []string{"2018-01-02T03:04:05Z 2018-01-02T03:04:05", "2018-02-03T00:00:00Z 2018-02-03T00:00:00", "7 2019-01-01T00:00:00"},
		ids(), "seed-era first, by time")

	require.NoError(t, v.Revert(ctx, "2018-02-03T00:00:00Z"))
	assert.Equal(t, "seed2", readAt(t, v.clean, 0, 5))
	got := ids()
	require.Len(t, got, 3)
	assert.Equal(t, []string{"2018-01-02T03:04:05Z 2018-01-02T03:04:05", "7 2019-01-01T00:00:00"}, got[:2])
	assert.True(t, strings.HasPrefix(got[2], "8 "), "the replaced state is revision 8: %v", got)

	require.NoError(t, v.Start(ctx))
	require.NoError(t, v.Stop(ctx))
	got = ids()
	require.Len(t, got, 3, "seed-era revisions count and are pruned first")
	for i, want := range []string{"7 ", "8 ", "9 "} {
		assert.True(t, strings.HasPrefix(got[i], want), "%v", got)
	}
}

func TestParseRevision(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   string
		ok   bool
	}{
		{"private.img.1@2018-01-02T03:04:05Z", "1", true},
		{"private.img.12@2018-01-02T03:04:05Z", "12", true},
		{"private.img.007@2018-01-02T03:04:05Z", "007", true}, // as Qubes lists it
		{"private.img@2018-01-02T03:04:05Z", "2018-01-02T03:04:05Z", true},
		{"private.img.x@2018-01-02T03:04:05Z", "", false},
		{"private.img.1@2018-01-02T03:04:05", "", false},
		{"private.img.1@2018-13-02T03:04:05Z", "", false},
		{"private.img.1@2018-01-02T03:04:05Z~tmp", "", false},
		{"private.img.@2018-01-02T03:04:05Z", "", false},
		{"private.img", "", false},
		{"private-dirty.img", "", false},
		{"private.img.-1@2018-01-02T03:04:05Z", "", false},
	} {
		r, ok := parseRevision("private.img", tc.name)
		assert.Equal(t, tc.ok, ok, tc.name)
		assert.Equal(t, tc.id, r.ID, tc.name)
	}
}

func FuzzParseRevision(f *testing.F) {
	for _, s := range []string{"private.img.1@2018-01-02T03:04:05Z", "private.img@2018-01-02T03:04:05Z", "private.img.99999999999999999999@2018-01-02T03:04:05Z",
		"private.img.00000000@0000-01-01T00:00:00Z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		r, ok := parseRevision("private.img", name)
		if !ok {
			return
		}
		if err := storage.ValidateRevisionID(r.ID); err != nil {
			t.Fatalf("%q parsed to an id Revert would refuse: %v", name, err)
		}
		// The id is the name's own text (Qubes keeps "007" as "007"); the
		// number orders it.
		back := "private.img@" + r.ID
		if !r.seed {
			back = "private.img." + r.ID + "@" + r.Timestamp() + "Z"
			if n := strings.TrimLeft(r.ID, "0"); n != r.num && !(n == "" && r.num == "0") {
				t.Fatalf("%q: id %q does not give number %s", name, r.ID, r.num)
			}
		}
		if back != name {
			t.Fatalf("%q parsed to %+v, which names %q", name, r, back)
		}
	})
}

// TestLeftoversRemovedAtOpen: after a crash, registering a volume hands
// its own "~" files to the worker; a user's files beside the images
// (notes~old, firewall.xml~) and the files of a volume nobody registered
// survive Open, start, stop and remove of every volume (Qubes removes only
// <volume>*.img*~* of one volume, at its create, start or remove).
func TestLeftoversRemovedAtOpen(t *testing.T) {
	ctx := context.Background()
	tp := newTestPool(t, loopfs.Btrfs, nil)
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 1 << 20})
	require.NoError(t, v.Create(ctx))
	require.NoError(t, v.Start(ctx))
	require.NoError(t, tp.Close())

	// The crash: a copy's temporary file, a discarded revision, and a commit
	// that made its link and stopped; beside them, files that are not the
	// pool's.
	dir := filepath.Dir(v.clean)
	for _, name := range []string{"private.img~123", "private.img.1@2018-01-02T03:04:05Z~abc", "private-precache.img~x"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600))
	}
	theirs := []string{"appvms/a/notes~old", "appvms/a/firewall.xml~", "appvms/a/other.img~1", "appvms/b/private.img~2"}
	require.NoError(t, os.Mkdir(filepath.Join(tp.dir, "appvms", "b"), 0o755))
	for _, name := range theirs {
		require.NoError(t, os.WriteFile(filepath.Join(tp.dir, name), []byte("keep"), 0o600))
	}
	st, err := os.Stat(v.clean)
	require.NoError(t, err)
	require.NoError(t, os.Link(v.clean, revisionPath(v.clean, "1", st.ModTime())))

	tp2 := openTestPool(t, tp.dir, nil, false)
	require.NoError(t, tp2.Flush(ctx))
	assert.FileExists(t, filepath.Join(dir, "private.img~123"), "Open alone deletes nothing")
	v2 := tp2.volume(t, v.Config())
	assert.Equal(t, []string{"appvms/", "appvms/a/", "appvms/a/firewall.xml~", "appvms/a/notes~old", "appvms/a/other.img~1",
		"appvms/a/private-dirty.img", "appvms/a/private.img", "appvms/a/private.img.1@TS", "appvms/b/", "appvms/b/private.img~2", "vm-templates/"},
		shape(tp2.tree(t)), "the worker removed the registered volume's ~ files only; no precache while running")
	dirty, err := v2.IsDirty(ctx)
	require.NoError(t, err)
	assert.True(t, dirty, "the crashed volume still runs")
	require.NoError(t, v2.Start(ctx), "start resumes")
	require.NoError(t, v2.Stop(ctx))
	revs, err := v2.Revisions(ctx)
	require.NoError(t, err)
	assert.Len(t, revs, 1, "the repeated commit adds no second link of the same image")

	// Every operation of every kind of volume leaves the user's files alone.
	keep := 1
	tpl := tp2.volume(t, storage.VolumeConfig{VID: "vm-templates/t/root", SaveOnStop: true, RW: true, Size: 1 << 20, RevisionsToKeep: &keep})
	require.NoError(t, tpl.Create(ctx))
	root := tp2.volume(t, storage.VolumeConfig{VID: "appvms/a/root", SnapOnStart: true, Source: tpl.Config().VID, RW: true, Size: 1 << 20})
	vol := tp2.volume(t, storage.VolumeConfig{VID: "appvms/a/volatile", RW: true, Size: 1 << 20})
	all := []*volume{v2, root, vol}
	assert.ErrorIs(t, v2.Create(ctx), storage.ErrExists, "create never replaces data")
	for _, x := range all {
		if x != v2 {
			require.NoError(t, x.Create(ctx))
		}
		require.NoError(t, x.Start(ctx))
		require.NoError(t, x.Stop(ctx))
	}
	for _, x := range append(all, tpl) {
		require.NoError(t, x.Remove(ctx))
	}
	require.NoError(t, tp2.Flush(ctx))
	for _, name := range theirs {
		data, err := os.ReadFile(filepath.Join(tp.dir, name))
		if assert.NoError(t, err, "%s survives", name) {
			assert.Equal(t, "keep", string(data))
		}
	}
}

// TestSecondOpenRefused: a second Open of a pool directory this process
// holds is refused at once (waiting would be for itself), and works once
// the first pool is closed, which then refuses work with ErrClosed. The
// wait for another process's lock is fsutil's TestLockHeldByAnother.
func TestSecondOpenRefused(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "pool")
	tp := openTestPool(t, dir, map[string]string{"setup_check": "no"}, true)
	start := time.Now()
	_, err := Driver{}.Open(ctx, storage.PoolConfig{Name: "again", Params: map[string]string{"dir_path": dir}})
	require.ErrorIs(t, err, storage.ErrInUse)
	assert.ErrorContains(t, err, "by this process")
	assert.Less(t, time.Since(start), time.Second)
	require.NoError(t, tp.Close())
	p2, err := Driver{}.Open(ctx, storage.PoolConfig{Name: "again", Params: map[string]string{"dir_path": dir}})
	require.NoError(t, err)
	require.NoError(t, p2.Close())
	_, err = tp.InitVolume(storage.VolumeConfig{VID: "appvms/a/private"})
	assert.ErrorIs(t, err, storage.ErrClosed)
}

// TestDiscardKeepsHoles: what a VM discards (a punched hole in its dirty
// image) stays a hole in the committed image and its precache.
func TestDiscardKeepsHoles(t *testing.T) {
	ctx := context.Background()
	tp := newTestPool(t, loopfs.XFS, nil)
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 16 << 20})
	require.NoError(t, v.Create(ctx))
	require.NoError(t, v.Start(ctx))
	f, err := os.OpenFile(v.dirty, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(make([]byte, 8<<20), 0)
	require.NoError(t, err)
	require.NoError(t, fsutil.PunchHole(f, 0, 8<<20))
	require.NoError(t, f.Close())
	require.NoError(t, v.Stop(ctx))
	require.NoError(t, tp.Flush(ctx))
	for _, p := range []string{v.clean, v.precache} {
		st, err := os.Stat(p)
		require.NoError(t, err)
		assert.Less(t, fsutil.Allocated(st), int64(1<<20), p)
	}
	u, err := v.Usage(ctx)
	require.NoError(t, err)
	assert.Less(t, u, int64(1<<20))
}

// TestENOSPC fills a tiny filesystem and checks that a start and an
// import that fail for lack of space leave the volume's data, revisions and
// tree as they were.
func TestENOSPC(t *testing.T) {
	ctx := context.Background()
	mnt := loopfs.Mount(t, loopfs.Ext4, 32<<20)
	tp := openTestPool(t, filepath.Join(mnt, "pool"), map[string]string{"setup_check": "no"}, true)
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 4 << 20})
	src := tp.volume(t, storage.VolumeConfig{VID: "appvms/b/private", SaveOnStop: true, RW: true, Size: 4 << 20})
	for _, vol := range []*volume{v, src} {
		require.NoError(t, vol.Create(ctx))
		require.NoError(t, vol.Start(ctx))
		writeAt(t, vol.dirty, 0, strings.Repeat("precious", 512<<10)) // 4 MiB of data
		require.NoError(t, vol.Stop(ctx))
	}
	require.NoError(t, tp.Flush(ctx))
	require.NoError(t, os.Remove(v.precache)) // so that start must copy
	filler, err := os.Create(filepath.Join(mnt, "filler"))
	require.NoError(t, err)
	defer filler.Close()
	for {
		if _, err := filler.Write(make([]byte, 1<<20)); err != nil {
			require.True(t, errors.Is(err, syscall.ENOSPC), "%v", err)
			break
		}
	}
	before := tp.tree(t)
	revsBefore, err := v.Revisions(ctx)
	require.NoError(t, err)

	err = v.Start(ctx)
	require.ErrorIs(t, err, syscall.ENOSPC)
	err = v.ImportVolume(ctx, src)
	require.ErrorIs(t, err, syscall.ENOSPC)

	require.NoError(t, tp.Flush(ctx))
	assert.Equal(t, before, tp.tree(t), "nothing changed, no temporary file left")
	revs, err := v.Revisions(ctx)
	require.NoError(t, err)
	assert.Equal(t, revsBefore, revs)
	assert.Equal(t, "precious", readAt(t, v.clean, 0, 8), "the committed data survives")

	require.NoError(t, filler.Truncate(0))
	require.NoError(t, v.Start(ctx), "with space again, start works")
	assert.Equal(t, "precious", readAt(t, v.dirty, 4<<20-8, 8))
	require.NoError(t, v.Stop(ctx))
}

// TestImportVolumeAcrossFilesystems imports from a pool on another
// filesystem: FICLONE says EXDEV, the sparse copy runs, the size follows
// the source, and the pool keeps trying reflinks afterwards.
func TestImportVolumeAcrossFilesystems(t *testing.T) {
	ctx := context.Background()
	a := newTestPool(t, loopfs.Btrfs, nil)
	b := newTestPool(t, loopfs.Btrfs, nil)
	src := a.volume(t, storage.VolumeConfig{VID: "appvms/src/private", SaveOnStop: true, RW: true, Size: 24 << 20})
	dst := b.volume(t, storage.VolumeConfig{VID: "appvms/dst/private", SaveOnStop: true, RW: true, Size: 1 << 20})
	require.NoError(t, src.Create(ctx))
	require.NoError(t, dst.Create(ctx))
	require.NoError(t, src.Start(ctx))
	writeAt(t, src.dirty, 20<<20, "from a")
	require.NoError(t, src.Stop(ctx))
	require.NoError(t, b.Flush(ctx))
	b.log.ops(t)

	var progressed int64
	pctx := storage.WithProgress(ctx, func(done, total int64) { progressed = done })
	require.NoError(t, dst.ImportVolume(pctx, src))
	assert.Equal(t, "from a", readAt(t, dst.clean, 20<<20, 6))
	assert.EqualValues(t, 24<<20, dst.Config().Size, "the size follows the source")
	assert.EqualValues(t, 24<<20, progressed, "the sparse copy reported its progress")
	assert.Contains(t, b.log.ops(t), "sparse-copy")
	assert.False(t, b.noReflink.Load(), "EXDEV does not mean the filesystem has no reflinks")
	revs, err := dst.Revisions(ctx)
	require.NoError(t, err)
	assert.Len(t, revs, 1, "the import is committed with a revision")
}

// TestUsageMissingDir: a pool whose directory is missing (an unmounted
// mount point) reports no figures rather than an error, as Qubes'
// usage_details returns {} then.
func TestUsageMissingDir(t *testing.T) {
	p, err := Driver{}.Open(t.Context(), storage.PoolConfig{Name: "gone", Params: map[string]string{"dir_path": filepath.Join(t.TempDir(), "missing")}})
	require.NoError(t, err)
	defer func() { require.NoError(t, p.Close()) }()
	u, err := p.Usage(t.Context())
	require.NoError(t, err)
	assert.Equal(t, storage.PoolUsage{Unavailable: true}, u)
}

// TestImportRunningSnapshotsDisabled: a volume running with snapshots
// disabled has no committed image for an import to replace: ErrRunning,
// and nothing changes.
func TestImportRunningSnapshotsDisabled(t *testing.T) {
	ctx := t.Context()
	tp := openTestPool(t, filepath.Join(t.TempDir(), "pool"), map[string]string{"setup_check": "no"}, true)
	off := -1
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 1 << 20, RevisionsToKeep: &off})
	require.NoError(t, v.Create(ctx))
	require.NoError(t, v.Start(ctx))
	before := tp.tree(t)
	_, err := v.ImportData(ctx, 1<<20)
	assert.ErrorIs(t, err, storage.ErrRunning)
	assert.Equal(t, before, tp.tree(t), "nothing changed")
	require.NoError(t, v.Stop(ctx))
}

// TestRevisionNumbersDoNotOverflow: a revision numbered at the limit of
// int64 (or beyond) is listed, the next commit is numbered after it as
// Qubes' unbounded integers would, pruning works, and every stop
// succeeds. A number too long to be a revision id is ignored.
func TestRevisionNumbersDoNotOverflow(t *testing.T) {
	ctx := t.Context()
	tp := openTestPool(t, filepath.Join(t.TempDir(), "pool"), map[string]string{"setup_check": "no"}, true)
	keep := 2
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 1 << 20, RevisionsToKeep: &keep})
	require.NoError(t, v.Create(ctx))
	st, err := os.Stat(v.clean)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(revisionPath(v.clean, "9223372036854775807", st.ModTime()), nil, 0o600))
	tooLong := revisionPath(v.clean, strings.Repeat("9", maxRevisionDigits+1), st.ModTime())
	require.NoError(t, os.WriteFile(tooLong, nil, 0o600))
	ids := func() []string {
		revs, err := v.Revisions(ctx)
		require.NoError(t, err)
		var out []string
		for _, r := range revs {
			out = append(out, r.ID)
		}
		return out
	}
	assert.Equal(t, []string{"9223372036854775807"}, ids())
	for range 3 {
		require.NoError(t, v.Start(ctx))
		require.NoError(t, v.Stop(ctx), "every stop succeeds")
	}
	assert.Equal(t, []string{"9223372036854775809", "9223372036854775810"}, ids(), "numbered on, and pruned")
	require.NoError(t, v.Revert(ctx, "9223372036854775809"))
	assert.FileExists(t, tooLong, "a name that is no revision is left alone")
	// At the last number a revision can have, commits go on without one.
	last := strings.Repeat("9", maxRevisionDigits)
	require.NoError(t, os.WriteFile(revisionPath(v.clean, last, st.ModTime()), nil, 0o600))
	require.NoError(t, v.Start(ctx))
	require.NoError(t, v.Stop(ctx), "a stop after the last revision number")
	entries, err := os.ReadDir(filepath.Dir(v.clean))
	require.NoError(t, err)
	for _, e := range entries {
		if name, ok := strings.CutPrefix(e.Name(), "private.img."); ok && !strings.Contains(name, "~") && e.Name() != filepath.Base(tooLong) {
			num, _, _ := strings.Cut(name, "@")
			assert.LessOrEqual(t, len(num), maxRevisionDigits, "no revision that cannot be listed: %s", e.Name())
		}
	}
	assert.Equal(t, "10", incNum("9"))
	assert.Equal(t, "100", incNum("99"))
	assert.Equal(t, "9223372036854775808", incNum("9223372036854775807"))
}

// TestRemoveWithPoolDirMissing: with the pool's directory gone (an
// unmounted mount point), Remove fails clearly and forgets nothing; when
// the directory is back, Remove removes the images.
func TestRemoveWithPoolDirMissing(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "pool")
	tp := openTestPool(t, dir, map[string]string{"setup_check": "no"}, true)
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 1 << 20})
	require.NoError(t, v.Create(ctx))
	require.NoError(t, tp.Flush(ctx))
	require.NoError(t, os.Rename(dir, dir+".away"))
	err := v.Remove(ctx)
	require.ErrorIs(t, err, storage.ErrNotFound)
	assert.ErrorContains(t, err, "directory "+dir+" is missing")
	_, err = tp.Volume(v.Config().VID)
	assert.NoError(t, err, "the volume is still registered")
	assert.ErrorIs(t, v.Create(ctx), storage.ErrNotFound, "create needs the directory too")
	// An unmounted mount point: the directory is there, and empty.
	require.NoError(t, os.Mkdir(dir, 0o755))
	err = v.Remove(ctx)
	require.ErrorIs(t, err, storage.ErrNotFound)
	assert.ErrorContains(t, err, "neither appvms/ nor vm-templates/")
	_, err = tp.Volume(v.Config().VID)
	assert.NoError(t, err, "the volume is still registered")
	require.NoError(t, os.Remove(dir))
	require.NoError(t, os.Rename(dir+".away", dir))
	require.NoError(t, v.Remove(ctx))
	assert.NoFileExists(t, v.clean)
}

// TestReadOnlyPoolErrors: on a pool whose filesystem is read-only, errors
// name the file the operation tried to make, never one that does not
// exist (the import image a start discards when present).
func TestReadOnlyPoolErrors(t *testing.T) {
	ctx := t.Context()
	mnt := loopfs.Mount(t, loopfs.Ext4, 32<<20)
	tp := openTestPool(t, filepath.Join(mnt, "pool"), map[string]string{"setup_check": "no"}, true)
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 1 << 20})
	require.NoError(t, v.Create(ctx))
	require.NoError(t, tp.Flush(ctx))
	require.NoError(t, os.Remove(v.precache))
	require.NoError(t, exec.Command("mount", "-o", "remount,ro", mnt).Run())
	t.Cleanup(func() { _ = exec.Command("mount", "-o", "remount,rw", mnt).Run() })
	err := v.Start(ctx)
	require.ErrorIs(t, err, syscall.EROFS)
	assert.NotContains(t, err.Error(), "import")
	assert.Contains(t, err.Error(), "private-dirty.img")
}

// TestSetupDirPathNotADirectory: a dir_path that is a regular file is
// named as such, not as "file exists", and is left alone.
func TestSetupDirPathNotADirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notadir")
	require.NoError(t, os.WriteFile(path, []byte("mine"), 0o600))
	p, err := Driver{}.Open(t.Context(), storage.PoolConfig{Name: "p", Params: map[string]string{"dir_path": path, "setup_check": "no"}})
	require.NoError(t, err)
	defer p.Close()
	err = p.Setup(t.Context())
	require.ErrorIs(t, err, storage.ErrInvalidConfig)
	assert.ErrorContains(t, err, "is a regular file, not a directory")
	assert.NotContains(t, err.Error(), "file exists")
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "mine", string(data))
}

// TestOpenClaimsUnownedDirectory: a pool directory that records no owner
// (set up before owners were recorded, or by Qubes) is claimed by the
// first owner that opens it, so a second one is refused.
func TestOpenClaimsUnownedDirectory(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "pool")
	tp := openTestPool(t, dir, map[string]string{"setup_check": "no"}, true)
	require.NoError(t, tp.Close())
	assert.NoFileExists(t, filepath.Join(dir, ownerfile.Name), "no owner given, none recorded")
	open := func(id string) (storage.Pool, error) {
		return Driver{}.Open(ctx, storage.PoolConfig{Name: "p", Params: map[string]string{"dir_path": dir},
			Owner: storage.PoolOwner{ID: id, Desc: "state " + id}})
	}
	p, err := open("a")
	require.NoError(t, err)
	require.NoError(t, p.Close())
	rec, err := ownerfile.Read(dir)
	require.NoError(t, err)
	require.NotNil(t, rec)
	assert.Equal(t, "a", rec.ID, "the first owner to open it claims it")
	_, err = open("b")
	require.ErrorIs(t, err, storage.ErrInUse)
	assert.ErrorContains(t, err, "belongs to state a")
	p, err = open("a")
	require.NoError(t, err)
	require.NoError(t, p.Close())
}

// TestRefusedCreateLeavesNoPrecache: a vid registered again over another
// state's data queues a precache of it; when Create refuses the vid and
// the caller forgets it, the precache that registration made is removed
// again: the tree is as it was.
func TestRefusedCreateLeavesNoPrecache(t *testing.T) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "pool")
	tp := openTestPool(t, dir, map[string]string{"setup_check": "no"}, true)
	cfg := storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 1 << 20}
	v := tp.volume(t, cfg)
	require.NoError(t, v.Create(ctx))
	require.NoError(t, v.Start(ctx))
	require.NoError(t, v.Stop(ctx))
	require.NoError(t, tp.Flush(ctx))
	require.NoError(t, os.Remove(v.precache)) // as another state left it
	before := tp.tree(t)
	require.NoError(t, tp.Close())

	tp2 := openTestPool(t, dir, map[string]string{"setup_check": "no"}, false)
	v2 := tp2.volume(t, cfg)
	require.NoError(t, tp2.Flush(ctx))
	require.FileExists(t, v2.precache, "the registration prepared a precache")
	require.ErrorIs(t, v2.Create(ctx), storage.ErrExists)
	require.NoError(t, tp2.ForgetVolume(ctx, cfg.VID))
	assert.Equal(t, before, tp2.tree(t), "nothing of the refused create is left")
}
