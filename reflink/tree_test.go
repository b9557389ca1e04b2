package reflink

import (
	"context"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/storage"
)

// stamp matches a revision timestamp in a file name.
var stamp = regexp.MustCompile(`@\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)

// shape replaces revision timestamps by "@TS" so trees compare exactly.
func shape(files []string) []string {
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = stamp.ReplaceAllString(f, "@TS")
	}
	return out
}

// TestTree follows a VM through its life and checks after each step that
// the tree is exactly the one Qubes' file-reflink driver leaves.
func TestTree(t *testing.T) {
	ctx := context.Background()
	tp := newTestPool(t, loopfs.Btrfs, nil)
	assert.Equal(t, []string{"appvms/", "vm-templates/"}, tp.tree(t))

	root := tp.volume(t, storage.VolumeConfig{VID: "vm-templates/fedora/root", SaveOnStop: true, RW: true, Size: 8 << 20})
	priv := tp.volume(t, storage.VolumeConfig{VID: "appvms/work/private", SaveOnStop: true, RW: true, Size: 4 << 20, RevisionsToKeep: intp(2)})
	aroot := tp.volume(t, storage.VolumeConfig{VID: "appvms/work/root", SnapOnStart: true, Source: "vm-templates/fedora/root", Size: 8 << 20})
	vol := tp.volume(t, storage.VolumeConfig{VID: "appvms/work/volatile", RW: true, Size: 2 << 20})
	for _, v := range []*volume{root, priv, aroot, vol} {
		require.NoError(t, v.Create(ctx))
	}
	assert.Equal(t, []string{
		"appvms/", "appvms/work/", "appvms/work/private-precache.img", "appvms/work/private.img",
		"vm-templates/", "vm-templates/fedora/", "vm-templates/fedora/root-precache.img", "vm-templates/fedora/root.img",
	}, tp.tree(t), "after create")

	set := storage.NewSet(priv, aroot, vol)
	require.NoError(t, set.Start(ctx))
	assert.Equal(t, []string{
		"appvms/", "appvms/work/", "appvms/work/private-dirty.img", "appvms/work/private.img",
		"appvms/work/root-dirty.img", "appvms/work/root.img", "appvms/work/volatile-dirty.img",
		"vm-templates/", "vm-templates/fedora/", "vm-templates/fedora/root-precache.img", "vm-templates/fedora/root.img",
	}, tp.tree(t), "running")

	require.NoError(t, set.Stop(ctx))
	require.NoError(t, set.Stop(ctx), "stop is idempotent")
	assert.Equal(t, []string{
		"appvms/", "appvms/work/", "appvms/work/private-precache.img", "appvms/work/private.img", "appvms/work/private.img.1@TS",
		"vm-templates/", "vm-templates/fedora/", "vm-templates/fedora/root-precache.img", "vm-templates/fedora/root.img",
	}, shape(tp.tree(t)), "stopped")

	for i := 0; i < 3; i++ {
		require.NoError(t, priv.Start(ctx))
		require.NoError(t, priv.Stop(ctx))
	}
	assert.Equal(t, []string{
		"appvms/", "appvms/work/", "appvms/work/private-precache.img", "appvms/work/private.img",
		"appvms/work/private.img.3@TS", "appvms/work/private.img.4@TS",
		"vm-templates/", "vm-templates/fedora/", "vm-templates/fedora/root-precache.img", "vm-templates/fedora/root.img",
	}, shape(tp.tree(t)), "two revisions kept, numbering continues")

	require.NoError(t, priv.Revert(ctx, "3"))
	assert.Equal(t, []string{
		"appvms/", "appvms/work/", "appvms/work/private-precache.img", "appvms/work/private.img",
		"appvms/work/private.img.4@TS", "appvms/work/private.img.5@TS",
		"vm-templates/", "vm-templates/fedora/", "vm-templates/fedora/root-precache.img", "vm-templates/fedora/root.img",
	}, shape(tp.tree(t)), "revert consumes 3, keeps the current state as 5")

	path, err := root.ImportData(ctx, 16<<20)
	require.NoError(t, err)
	assert.Equal(t, tp.dir+"/vm-templates/fedora/root-import.img", path)
	assert.Contains(t, tp.tree(t), "vm-templates/fedora/root-import.img")
	require.NoError(t, root.ImportDataEnd(ctx, true))
	assert.Equal(t, []string{
		"appvms/", "appvms/work/", "appvms/work/private-precache.img", "appvms/work/private.img",
		"appvms/work/private.img.4@TS", "appvms/work/private.img.5@TS",
		"vm-templates/", "vm-templates/fedora/", "vm-templates/fedora/root-precache.img", "vm-templates/fedora/root.img",
		"vm-templates/fedora/root.img.1@TS",
	}, shape(tp.tree(t)), "import commits with a revision")
	assert.EqualValues(t, 16<<20, root.Config().Size, "size follows the import")

	for _, v := range []*volume{priv, aroot, vol} {
		require.NoError(t, v.Remove(ctx))
	}
	assert.Equal(t, []string{
		"appvms/",
		"vm-templates/", "vm-templates/fedora/", "vm-templates/fedora/root-precache.img", "vm-templates/fedora/root.img",
		"vm-templates/fedora/root.img.1@TS",
	}, shape(tp.tree(t)), "remove deletes the VM directory once empty")
}

// TestConfigIsACopy: changing what Config returns does not change the
// volume.
func TestConfigIsACopy(t *testing.T) {
	tp := newTestPool(t, loopfs.Btrfs, nil)
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 1 << 20})
	c := v.Config()
	*c.RevisionsToKeep = 7
	assert.Equal(t, 1, *v.Config().RevisionsToKeep)
	assert.Equal(t, 1, v.keep())
}

// TestRevisionTimestamp checks that a revision is named after the time its
// data was last modified, not the time of the commit (Qubes d9be5402).
func TestRevisionTimestamp(t *testing.T) {
	ctx := context.Background()
	tp := newTestPool(t, loopfs.Btrfs, nil)
	v := tp.volume(t, storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 1 << 20})
	require.NoError(t, v.Create(ctx))
	old := time.Date(2018, 1, 2, 3, 4, 5, 600, time.UTC)
	require.NoError(t, os.Chtimes(v.clean, old, old))
	require.NoError(t, v.Start(ctx))
	require.NoError(t, v.Stop(ctx))
	revs, err := v.Revisions(ctx)
	require.NoError(t, err)
	require.Len(t, revs, 1)
	assert.Equal(t, "1", revs[0].ID)
	assert.Equal(t, "2018-01-02T03:04:05", revs[0].Timestamp())
	assert.FileExists(t, v.clean+".1@2018-01-02T03:04:05Z")
}
