//go:build vmtest

package lvm_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

// pattern returns n bytes of a pattern tagged tag.
func pattern(tag byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = tag ^ byte(i*13) | 1
	}
	return b
}

func writeAt(t *testing.T, path string, off int64, data []byte) error {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		return err
	}
	return f.Sync()
}

func readAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	b := make([]byte, n)
	_, err = f.ReadAt(b, off)
	if !errors.Is(err, io.EOF) {
		require.NoError(t, err)
	}
	return b
}

// exported returns n bytes at off of v's committed data.
func exported(t *testing.T, v storage.Volume, off int64, n int) []byte {
	t.Helper()
	path, err := v.Export(t.Context())
	require.NoError(t, err)
	defer v.ExportEnd(t.Context(), path)
	return readAt(t, path, off, n)
}

// TestVMNaming: the LVs and device nodes of an AppVM are Qubes' names, a
// stop keeps one revision, the next prunes the older one.
func TestVMNaming(t *testing.T) {
	vg, thin := newVG(t, suiteVGSize)
	p := openPool(t, vg, thin, nil)
	require.NoError(t, p.Setup(t.Context()))
	defer p.Close()
	ctx := t.Context()
	keep := 1
	mk := func(c storage.VolumeConfig) storage.Volume {
		v, err := p.InitVolume(c)
		require.NoError(t, err)
		require.NoError(t, v.Create(ctx))
		return v
	}
	vid := func(vm, vol string) string { return storage.LVMVID{VG: vg, VM: vm, Volume: vol}.String() }
	tpl := mk(storage.VolumeConfig{VID: vid("tpl-1", "root"), Size: 8 << 20, RW: true, SaveOnStop: true, RevisionsToKeep: &keep})
	root := mk(storage.VolumeConfig{VID: vid("my-work", "root"), Size: 8 << 20, RW: true, SnapOnStart: true, Source: tpl.Config().VID})
	priv := mk(storage.VolumeConfig{VID: vid("my-work", "private"), Size: 8 << 20, RW: true, SaveOnStop: true, RevisionsToKeep: &keep})
	vol := mk(storage.VolumeConfig{VID: vid("my-work", "volatile"), Size: 8 << 20, RW: true})
	set := storage.NewSet(root, priv, vol)
	require.NoError(t, set.Start(ctx))
	have := lvs(t, vg)
	for _, lv := range []string{"vm-tpl-1-root", "vm-my-work-root-snap", "vm-my-work-private", "vm-my-work-private-snap", "vm-my-work-volatile"} {
		assert.Contains(t, have, lv)
	}
	assert.Equal(t, "vm-tpl-1-root", have["vm-my-work-root-snap"]["ORIGIN"])
	assert.Equal(t, "/dev/mapper/"+vg+"-vm--my--work--private--snap", priv.BlockDevice().Path)
	for _, v := range []storage.Volume{root, priv, vol} {
		_, err := os.Stat(v.BlockDevice().Path)
		assert.NoError(t, err, "the device node of %s", v.Config().VID)
	}
	require.NoError(t, writeAt(t, priv.BlockDevice().Path, 0, pattern(1, 4096)))
	require.NoError(t, set.Stop(ctx))
	var backs []string
	for lv := range lvs(t, vg) {
		if strings.HasPrefix(lv, "vm-my-work-private-") && strings.HasSuffix(lv, "-back") {
			backs = append(backs, lv)
		}
	}
	require.Len(t, backs, 1, "the first commit keeps the old state as vm-NAME-VOL-<epoch>-back")
	require.NoError(t, set.Start(ctx))
	require.NoError(t, set.Stop(ctx))
	have = lvs(t, vg)
	assert.NotContains(t, have, backs[0], "the second commit pruned the older revision")
	for _, lv := range []string{"vm-my-work-root-snap", "vm-my-work-private-snap", "vm-my-work-volatile"} {
		assert.NotContains(t, have, lv)
	}
	assert.Equal(t, pattern(1, 4096), exported(t, priv, 0, 4096))
}

// TestVMOldLayouts reads the layouts of Qubes' migration tests made with
// lvcreate by hand: an interrupted commit (revisions and -snap, no
// committed LV) resumes and commits; a VM started by old code (-snap and
// committed LV) commits at stop with the committed LV kept as a revision.
func TestVMOldLayouts(t *testing.T) {
	vg, thin := newVG(t, suiteVGSize)
	ctx := t.Context()
	create := func(lv string) []string {
		return []string{"lvcreate", "--thin", "--name=" + lv, "--virtualsize=8M", "--", vg + "/" + thin}
	}
	// The LVs are made before the pool opens: a pool reads the report at
	// Setup and after its own commands, and assumes, as Qubes' driver
	// does, that nothing else changes its LVs meanwhile.
	lvmRun(t, create("vm-old-root-1521065904-back"), create("vm-old-root-1521065905-back"), create("vm-old-root-snap"),
		create("vm-old2-private"), []string{"lvcreate", "--snapshot", "--name=vm-old2-private-snap", "--", vg + "/vm-old2-private"})
	p := openPool(t, vg, thin, nil)
	require.NoError(t, p.Setup(ctx))
	defer p.Close()
	snapUUID := lvs(t, vg)["vm-old-root-snap"]["LV_UUID"]
	keep := 2
	v, err := p.InitVolume(storage.VolumeConfig{VID: vg + "/vm-old-root", Size: 8 << 20, RW: true, SaveOnStop: true, RevisionsToKeep: &keep})
	require.NoError(t, err)
	dirty, err := v.IsDirty(ctx)
	require.NoError(t, err)
	assert.True(t, dirty)
	revs, err := v.Revisions(ctx)
	require.NoError(t, err)
	require.Len(t, revs, 2)
	assert.Equal(t, "1521065904-back", revs[0].ID)
	assert.Equal(t, "2018-03-14T22:18:24", revs[0].Timestamp())
	require.NoError(t, v.Start(ctx))
	assert.Equal(t, snapUUID, lvs(t, vg)["vm-old-root-snap"]["LV_UUID"], "start resumes -snap")
	require.NoError(t, v.Stop(ctx))
	have := lvs(t, vg)
	assert.Equal(t, snapUUID, have["vm-old-root"]["LV_UUID"], "stop commits -snap")
	assert.Contains(t, have, "vm-old-root-1521065905-back")

	old := lvs(t, vg)
	assert.True(t, strings.HasSuffix(old["vm-old2-private-snap"]["LV_ATTR"], "k"), "a thin snapshot made without --setactivationskip=n has the activation-skip flag")
	one := 1
	v2, err := p.InitVolume(storage.VolumeConfig{VID: vg + "/vm-old2-private", Size: 8 << 20, RW: true, SaveOnStop: true, RevisionsToKeep: &one})
	require.NoError(t, err)
	require.NoError(t, v2.Start(ctx), "a dirty -snap with activation skip is activated (-K)")
	_, err = os.Stat(v2.BlockDevice().Path)
	require.NoError(t, err, "the resumed -snap is active")
	require.NoError(t, v2.Stop(ctx))
	have = lvs(t, vg)
	assert.Equal(t, old["vm-old2-private-snap"]["LV_UUID"], have["vm-old2-private"]["LV_UUID"])
	revs, err = v2.Revisions(ctx)
	require.NoError(t, err)
	require.Len(t, revs, 1)
	assert.Equal(t, old["vm-old2-private"]["LV_UUID"], have["vm-old2-private-"+revs[0].ID]["LV_UUID"])
}

// TestVMActivation: an inactive committed LV with the activation-skip
// flag (a thin snapshot made by hand, as by older tools) is activated by
// Export, and a snapshot of it starts active.
func TestVMActivation(t *testing.T) {
	vg, thin := newVG(t, suiteVGSize)
	ctx := t.Context()
	lvmRun(t, []string{"lvcreate", "--thin", "--name=base", "--virtualsize=8M", "--", vg + "/" + thin},
		[]string{"lvcreate", "--snapshot", "--name=vm-tpl-root", "--", vg + "/base"})
	t.Cleanup(func() { lvmRun(t, []string{"lvremove", "--force", vg + "/base"}) })
	p := openPool(t, vg, thin, nil)
	require.NoError(t, p.Setup(ctx))
	defer p.Close()
	require.Equal(t, byte('-'), lvs(t, vg)["vm-tpl-root"]["LV_ATTR"][4], "inactive")
	keep := 1
	tpl, err := p.InitVolume(storage.VolumeConfig{VID: vg + "/vm-tpl-root", Size: 8 << 20, RW: true, SaveOnStop: true, RevisionsToKeep: &keep})
	require.NoError(t, err)
	root, err := p.InitVolume(storage.VolumeConfig{VID: vg + "/vm-app-root", Size: 8 << 20, RW: true, SnapOnStart: true, Source: vg + "/vm-tpl-root"})
	require.NoError(t, err)
	require.NoError(t, root.Start(ctx))
	assert.Equal(t, byte('a'), lvs(t, vg)["vm-app-root-snap"]["LV_ATTR"][4], "the -snap is active")
	require.NoError(t, writeAt(t, root.BlockDevice().Path, 0, pattern(2, 4096)))
	require.NoError(t, root.Stop(ctx))
	path, err := tpl.Export(ctx)
	require.NoError(t, err)
	assert.Equal(t, "/dev/mapper/"+vg+"-vm--tpl--root", path)
	assert.Equal(t, make([]byte, 4096), readAt(t, path, 0, 4096), "export activated it; the snapshot's writes are gone")
}

// TestVMImportOtherPool: an import from another pool (another volume
// group) is a sparse copy into -import, committed; its size follows the
// source.
func TestVMImportOtherPool(t *testing.T) {
	vg1, thin1 := newVG(t, suiteVGSize)
	vg2, thin2 := newVG(t, suiteVGSize)
	ctx := t.Context()
	p1, p2 := openPool(t, vg1, thin1, nil), openPool(t, vg2, thin2, nil)
	require.NoError(t, p1.Setup(ctx))
	require.NoError(t, p2.Setup(ctx))
	defer p1.Close()
	defer p2.Close()
	keep := 1
	src, err := p1.InitVolume(storage.VolumeConfig{VID: vg1 + "/vm-a-private", Size: 64 << 20, RW: true, SaveOnStop: true, RevisionsToKeep: &keep})
	require.NoError(t, err)
	require.NoError(t, src.Create(ctx))
	require.NoError(t, src.Start(ctx))
	require.NoError(t, writeAt(t, src.BlockDevice().Path, 40<<20, pattern(3, 1<<20)))
	require.NoError(t, src.Stop(ctx))
	dst, err := p2.InitVolume(storage.VolumeConfig{VID: vg2 + "/vm-b-private", Size: 8 << 20, RW: true, SaveOnStop: true, RevisionsToKeep: &keep})
	require.NoError(t, err)
	require.NoError(t, dst.Create(ctx))
	require.NoError(t, dst.ImportVolume(ctx, src))
	assert.Equal(t, pattern(3, 1<<20), exported(t, dst, 40<<20, 1<<20))
	size, err := dst.Size(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(64<<20), size)
	usage, err := dst.Usage(ctx)
	require.NoError(t, err)
	assert.Less(t, usage, int64(8<<20), "a sparse copy: the zeros were not written")
	assert.NotContains(t, lvs(t, vg2), "vm-b-private-import")
}

// TestVMExhaustion: a thin pool that runs out of space fails the writes
// and the operations with an error, promptly, and the committed LV keeps its data (the pool is set to
// --errorwhenfull y, else writes queue for 60 s); an import that does not
// fit fails and leaves no -import.
func TestVMExhaustion(t *testing.T) {
	vg, thin := newVG(t, 32<<20)
	lvmRun(t, []string{"lvchange", "--errorwhenfull", "y", vg + "/" + thin})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	p := openPool(t, vg, thin, nil)
	require.NoError(t, p.Setup(ctx))
	defer p.Close()
	keep := 1
	v, err := p.InitVolume(storage.VolumeConfig{VID: vg + "/vm-big-private", Size: 128 << 20, RW: true, SaveOnStop: true, RevisionsToKeep: &keep})
	require.NoError(t, err)
	require.NoError(t, v.Create(ctx))
	require.NoError(t, v.Start(ctx))
	committed := pattern(4, 4<<20)
	require.NoError(t, writeAt(t, v.BlockDevice().Path, 0, committed))
	require.NoError(t, v.Stop(ctx))

	require.NoError(t, v.Start(ctx))
	var werr error
	for off := int64(4 << 20); off < 128<<20 && werr == nil; off += 4 << 20 {
		werr = writeAt(t, v.BlockDevice().Path, off, pattern(5, 4<<20))
	}
	require.Error(t, werr, "writes into a full thin pool fail (errorwhenfull)")
	t.Logf("write into the full pool: %v", werr)
	u, err := p.Usage(ctx)
	require.NoError(t, err)
	t.Logf("pool usage %d of %d", u.DataUsage, u.DataSize)
	serr := v.Stop(ctx)
	t.Logf("stop in a full pool: %v", serr)
	assert.NoError(t, ctx.Err(), "no hang")
	assert.Equal(t, committed[:4096], exported(t, v, 0, 4096), "the committed data is intact")

	vg2, thin2 := newVG(t, suiteVGSize)
	p2 := openPool(t, vg2, thin2, nil)
	require.NoError(t, p2.Setup(ctx))
	defer p2.Close()
	src, err := p2.InitVolume(storage.VolumeConfig{VID: vg2 + "/vm-src-private", Size: 128 << 20, RW: true, SaveOnStop: true, RevisionsToKeep: &keep})
	require.NoError(t, err)
	require.NoError(t, src.Create(ctx))
	require.NoError(t, src.Start(ctx))
	for off := int64(0); off < 64<<20; off += 4 << 20 {
		require.NoError(t, writeAt(t, src.BlockDevice().Path, off, pattern(6, 4<<20)))
	}
	require.NoError(t, src.Stop(ctx))
	before := lvs(t, vg)["vm-big-private"]["LV_UUID"]
	err = v.ImportVolume(ctx, src)
	require.Error(t, err, "an import that does not fit fails")
	t.Logf("import into the full pool: %v", err)
	assert.NoError(t, ctx.Err(), "no hang")
	have := lvs(t, vg)
	assert.NotContains(t, have, "vm-big-private-import", "no half-made import")
	assert.Equal(t, before, have["vm-big-private"]["LV_UUID"], "the committed LV is the same")
	assert.True(t, bytes.Equal(committed[:4096], exported(t, v, 0, 4096)), "and holds its data")
}
