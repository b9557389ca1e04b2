package main

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunPoolRemoveForce removes a pool that volumes use: refused without
// --force (with a hint naming it) and with --force while a volume runs,
// state.json unchanged both times; forced on a stopped VM it forgets the
// pool and its volumes, keeps the VM's volumes in another pool, and leaves
// every image and revision on disk as it was.
func TestRunPoolRemoveForce(t *testing.T) {
	state, dir := addPool(t)
	ok(t, state, "pool", "add", "q", "file-reflink", "dir_path="+filepath.Join(t.TempDir(), "q"), "setup_check=no")
	ok(t, state, "volume", "create", "p", "vm-templates/fedora/root", "--size", "1MiB", "--rw", "--save-on-stop")
	ok(t, state, "volume", "create", "p", "appvms/work/private", "--size", "1MiB", "--rw", "--save-on-stop")
	ok(t, state, "volume", "create", "q", "appvms/work/data", "--size", "1MiB", "--rw", "--save-on-stop")
	ok(t, state, "vm", "start", "work")
	ok(t, state, "vm", "stop", "work") // a commit: private has a revision

	refuseJSON(t, state, exitFailed, "in_use", "storage pool is in use by fedora:root, work:private", "pool", "remove", "p")
	r := ctl(t, state, "pool", "remove", "p")
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stderr, "vmpoolctl: pool remove --force forgets those volumes and leaves their images and revisions on disk\n")

	ok(t, state, "vm", "start", "work")
	refuseJSON(t, state, exitFailed, "running", "volumes work:private run; stop their VMs first", "pool", "remove", "p", "--force")
	ok(t, state, "vm", "stop", "work")

	sums := fileSums(t, dir)
	require.Contains(t, sums, "appvms/work/private.img")
	require.Contains(t, sums, "vm-templates/fedora/root.img")
	revs, err := filepath.Glob(filepath.Join(dir, "appvms/work/private.img.*@*"))
	require.NoError(t, err)
	require.NotEmpty(t, revs, "the stops committed revisions")
	var doc map[string]any
	okJSON(t, state, &doc, "pool", "remove", "p", "--force")
	assert.Equal(t, map[string]any{"pool": "p", "removed": true}, doc)
	assert.Equal(t, sums, fileSums(t, dir), "the images and revisions stay on disk, unchanged")
	assert.Equal(t, "NAME  DRIVER\nq     file-reflink\n", ok(t, state, "pool", "list"))
	assert.Equal(t, "NAME  STATE   VOLUMES\nwork  Halted  q:appvms/work/data\n", ok(t, state, "vm", "list"),
		"fedora is forgotten, work keeps its volume in q")
	refuseJSON(t, state, exitFailed, "not_found", `no pool "p"`, "volume", "info", "p", "appvms/work/private")
}

// TestRunPoolInfoIncludedIn: a pool whose dir_path lies inside pool p's
// directory, directly or through a symlink, shows included_in=p last;
// p itself shows none, and its JSON has no included_in field.
func TestRunPoolInfoIncludedIn(t *testing.T) {
	state, dir := addPool(t)
	ok(t, state, "pool", "add", "inner", "file-reflink", "dir_path="+filepath.Join(dir, "inner"), "setup_check=no")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "linked"), 0o755))
	link := filepath.Join(t.TempDir(), "link")
	require.NoError(t, os.Symlink(filepath.Join(dir, "linked"), link))
	ok(t, state, "pool", "add", "vialink", "file-reflink", "dir_path="+link, "setup_check=no")

	for _, name := range []string{"inner", "vialink"} {
		assert.Regexp(t, `^name=`+name+`\n(.*\n)*size=\d+\nusage=\d+\nincluded_in=p\n$`, ok(t, state, "pool", "info", name))
		var doc poolDoc
		okJSON(t, state, &doc, "pool", "info", name)
		assert.Equal(t, "p", doc.IncludedIn, name)
	}

	assert.Regexp(t, `^name=p\ndir_path=`+regexp.QuoteMeta(dir)+`\n(.*\n)*usage=\d+\n$`, ok(t, state, "pool", "info", "p"))
	var doc map[string]any
	okJSON(t, state, &doc, "pool", "info", "p")
	assert.NotContains(t, doc, "included_in")
}

// TestRunPoolDefault: without a pool named default (nor an lvm_thin pool,
// nor one at /var/lib/qubes) pool default fails with exit status 1 and
// says so; with one it prints its name.
func TestRunPoolDefault(t *testing.T) {
	state, _ := addPool(t)
	r := ctl(t, state, "pool", "default")
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stderr, "vmpoolctl: cannot determine default storage pool (no pool named default")
	assert.Empty(t, r.stdout)
	refuseJSON(t, state, exitFailed, "not_found", "add a pool named default", "pool", "default")

	ok(t, state, "pool", "add", "default", "file-reflink", "dir_path="+filepath.Join(t.TempDir(), "default"), "setup_check=no")
	assert.Equal(t, "default\n", ok(t, state, "pool", "default"))
	var row poolRow
	okJSON(t, state, &row, "pool", "default")
	assert.Equal(t, poolRow{Name: "default", Driver: "file-reflink"}, row)
}
