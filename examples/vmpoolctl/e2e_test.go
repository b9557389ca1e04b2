package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/internal/ownerfile"
)

// revisionName matches a revision file name as Qubes' file-reflink driver
// writes it: private.img.<N>@<YYYY-MM-DDTHH:MM:SS>Z.
var revisionName = regexp.MustCompile(`^(.*\.img\.\d+)@(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)Z$`)

// poolTree lists the files and directories (with a trailing /) under dir,
// relative and sorted, with revision timestamps replaced by "@TS" after
// checking their form. Every vmpoolctl command closes its Manager, which
// waits for the pools' background work, so the tree is settled.
func poolTree(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel == ownerfile.Name {
			return nil // vmpool's owner record, which Qubes' driver ignores
		}
		if d.IsDir() {
			rel += "/"
		}
		if strings.Contains(rel, ".img.") {
			m := revisionName.FindStringSubmatch(rel)
			require.NotNil(t, m, "revision file name %q", rel)
			rel = m[1] + "@TS"
		}
		files = append(files, rel)
		return nil
	}))
	slices.Sort(files)
	return files
}

// TestEndToEnd drives vmpoolctl through a VM's life on a file-reflink pool
// on a real btrfs and checks after each step that the pool's tree is
// exactly the one Qubes' file-reflink driver leaves, and that bad input
// changes neither the tree nor the state file.
func TestEndToEnd(t *testing.T) {
	mnt := loopfs.Mount(t, loopfs.Btrfs, 256<<20)
	dir := filepath.Join(mnt, "pool")
	state := filepath.Join(t.TempDir(), "state")
	stateFile := filepath.Join(state, "state.json")
	template := []string{"vm-templates/", "vm-templates/fedora/", "vm-templates/fedora/root-precache.img", "vm-templates/fedora/root.img"}
	// tree is the expected tree: appvms/, the given files and the template.
	tree := func(files ...string) []string {
		all := append(append([]string{"appvms/"}, files...), template...)
		slices.Sort(all)
		return all
	}
	// work/ and the given files of VM work.
	work := func(files ...string) []string {
		all := []string{"appvms/work/"}
		for _, f := range files {
			all = append(all, "appvms/work/"+f)
		}
		return all
	}
	private := filepath.Join(dir, "appvms/work/private.img")
	write := func(path, data string) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt([]byte(data), 0)
		require.NoError(t, err)
		require.NoError(t, f.Close())
	}
	head := func(path string, n int) string {
		t.Helper()
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		return string(data[:n])
	}
	// refuse runs a command that must fail with code and change nothing.
	refuse := func(code int, msg string, args ...string) {
		t.Helper()
		treeBefore := poolTree(t, dir)
		stateBefore, err := os.ReadFile(stateFile)
		require.NoError(t, err)
		r := ctl(t, state, args...)
		assert.Equal(t, code, r.code, "%q: %s", args, r.stderr)
		assert.Contains(t, r.stderr, msg, "%q", args)
		assert.Equal(t, treeBefore, poolTree(t, dir), "%q changes nothing in the pool", args)
		stateAfter, err := os.ReadFile(stateFile)
		require.NoError(t, err)
		assert.Equal(t, string(stateBefore), string(stateAfter), "%q changes nothing in the state", args)
	}

	ok(t, state, "pool", "add", "p", "file-reflink", "dir_path="+dir, "revisions_to_keep=2")
	assert.Equal(t, []string{"appvms/", "vm-templates/"}, poolTree(t, dir), "after pool add")

	ok(t, state, "volume", "create", "p", "vm-templates/fedora/root", "--size", "8MiB", "--rw", "--save-on-stop")
	ok(t, state, "volume", "create", "p", "appvms/work/private", "--size", "4MiB", "--rw", "--save-on-stop")
	ok(t, state, "volume", "create", "p", "appvms/work/root", "--snap-on-start", "--source", "vm-templates/fedora/root", "--rw")
	ok(t, state, "volume", "create", "p", "appvms/work/volatile", "--size", "2MiB", "--rw", "--volatile")
	assert.Equal(t, tree(work("private-precache.img", "private.img")...), poolTree(t, dir), "after create")

	ok(t, state, "vm", "start", "work")
	running := tree(work("private-dirty.img", "private.img", "root-dirty.img", "root.img", "volatile-dirty.img")...)
	assert.Equal(t, running, poolTree(t, dir), "running")
	write(filepath.Join(dir, "appvms/work/private-dirty.img"), "first")

	ok(t, state, "vm", "stop", "work")
	stopped1 := tree(work("private-precache.img", "private.img", "private.img.1@TS")...)
	assert.Equal(t, stopped1, poolTree(t, dir), "stopped")
	ok(t, state, "vm", "stop", "work")
	assert.Equal(t, stopped1, poolTree(t, dir), "a second stop changes nothing")
	assert.Equal(t, "first", head(private, 5))

	revs := ok(t, state, "volume", "revisions", "p", "appvms/work/private")
	require.Regexp(t, `^1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\n$`, revs)
	assert.FileExists(t, private+".1@"+strings.Fields(revs)[1]+"Z", "the revision's file carries its timestamp")

	ok(t, state, "vm", "start", "work")
	write(filepath.Join(dir, "appvms/work/private-dirty.img"), "second")
	ok(t, state, "vm", "stop", "work")
	assert.Equal(t, tree(work("private-precache.img", "private.img", "private.img.1@TS", "private.img.2@TS")...), poolTree(t, dir))
	var revDocs []revisionDoc
	okJSON(t, state, &revDocs, "volume", "revisions", "p", "appvms/work/private")
	require.Len(t, revDocs, 2)
	assert.Equal(t, []string{"1", "2"}, []string{revDocs[0].ID, revDocs[1].ID}, "oldest first")

	ok(t, state, "volume", "revert", "p", "appvms/work/private", "2")
	assert.Equal(t, tree(work("private-precache.img", "private.img", "private.img.1@TS", "private.img.3@TS")...), poolTree(t, dir),
		"revert consumes revision 2 and keeps the state it replaced as 3")
	assert.Equal(t, "first\x00", head(private, 6))

	refuse(exitFailed, "not found", "volume", "revert", "p", "appvms/work/private", "9")
	refuse(exitUsage, "has a .. part", "volume", "create", "p", "appvms/../private", "--size", "1M")
	refuse(exitUsage, "starts with /", "volume", "create", "p", "/appvms/work/data", "--size", "1M")
	refuse(exitUsage, "NUL", "volume", "create", "p", "appvms/work/da\x00ta", "--size", "1M")
	refuse(exitUsage, "empty part", "volume", "create", "p", "appvms//data", "--size", "1M")
	refuse(exitUsage, "VM name", "volume", "create", "p", "appvms/1work/data", "--size", "1M")
	refuse(exitUsage, "is negative", "volume", "create", "p", "appvms/work/data", "--size=-1")
	refuse(exitUsage, "is negative", "volume", "resize", "p", "appvms/work/private", "--", "-1")
	refuse(exitFailed, "already exists", "volume", "create", "p", "appvms/work/private", "--size", "1M")
	refuse(exitFailed, "shrinking a volume needs force", "volume", "resize", "p", "appvms/work/private", "1MiB")

	ok(t, state, "vm", "start", "work")
	running = tree(work("private-dirty.img", "private.img", "private.img.1@TS", "private.img.3@TS", "root-dirty.img", "root.img", "volatile-dirty.img")...)
	assert.Equal(t, running, poolTree(t, dir))
	refuse(exitFailed, "not cleanly stopped", "volume", "revert", "p", "appvms/work/private")
	refuse(exitFailed, "running", "volume", "remove", "p", "appvms/work/private")
	image := filepath.Join(t.TempDir(), "private.raw")
	data := append([]byte("imported"), make([]byte, 3<<20)...)
	data = append(data, bytes.Repeat([]byte{0x5a}, 4096)...)
	require.NoError(t, os.WriteFile(image, data, 0o600))
	refuse(exitFailed, "must be stopped", "volume", "import", "p", "appvms/work/private", image)
	ok(t, state, "vm", "stop", "work")
	assert.Equal(t, tree(work("private-precache.img", "private.img", "private.img.3@TS", "private.img.4@TS")...), poolTree(t, dir),
		"the commit adds revision 4 and prunes 1")

	ok(t, state, "volume", "resize", "p", "appvms/work/private", "8MiB")
	assert.Equal(t, tree(work("private-precache.img", "private.img", "private.img.3@TS", "private.img.4@TS")...), poolTree(t, dir))
	var info volumeDoc
	okJSON(t, state, &info, "volume", "info", "p", "appvms/work/private")
	assert.EqualValues(t, 8<<20, info.Size)
	ok(t, state, "volume", "resize", "p", "appvms/work/private", "6MiB", "--force")
	assert.Contains(t, ok(t, state, "volume", "info", "p", "appvms/work/private"), "\nsize=6291456\n")

	ok(t, state, "volume", "import", "p", "appvms/work/private", image)
	assert.Equal(t, tree(work("private-precache.img", "private.img", "private.img.4@TS", "private.img.5@TS")...), poolTree(t, dir),
		"an import commits with a revision")
	got, err := os.ReadFile(private)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got), "the image holds the file's data")
	okJSON(t, state, &info, "volume", "info", "p", "appvms/work/private")
	assert.EqualValues(t, len(data), info.Size, "the size follows the file")
	stateData, err := os.ReadFile(stateFile)
	require.NoError(t, err)
	assert.Contains(t, string(stateData), `"size": 3149832`, "and is saved")

	refuse(exitFailed, "fixed when the pool is added", "pool", "set", "p", "dir_path", filepath.Join(mnt, "elsewhere"))
	ok(t, state, "pool", "set", "p", "revisions_to_keep", "1")
	assert.Contains(t, ok(t, state, "pool", "info", "p"), "\nrevisions_to_keep=1\n")
	okJSON(t, state, &info, "volume", "info", "p", "appvms/work/private")
	assert.Equal(t, 2, info.RevisionsToKeep, "the pool's revisions_to_keep is the default of new volumes only")

	ok(t, state, "vm", "start", "work")
	refuse(exitFailed, "must be stopped", "volume", "config", "p", "appvms/work/private", "revisions_to_keep", "-1")
	ok(t, state, "volume", "config", "p", "appvms/work/private", "revisions_to_keep", "1")
	ok(t, state, "vm", "stop", "work")
	assert.Equal(t, tree(work("private-precache.img", "private.img", "private.img.6@TS")...), poolTree(t, dir),
		"with revisions_to_keep 1, the commit adds revision 6 and prunes 4 and 5")

	refuse(exitFailed, "storage pool is in use by fedora:root, work:private, work:root, work:volatile", "pool", "remove", "p")
	refuse(exitFailed, "is the source of volume root of VM work", "volume", "remove", "p", "vm-templates/fedora/root")
	ok(t, state, "volume", "remove", "p", "appvms/work/volatile")
	ok(t, state, "volume", "remove", "p", "appvms/work/root")
	assert.Equal(t, tree(work("private-precache.img", "private.img", "private.img.6@TS")...), poolTree(t, dir))
	ok(t, state, "volume", "remove", "p", "appvms/work/private")
	assert.Equal(t, tree(), poolTree(t, dir), "the VM's directory goes with its last volume")
	ok(t, state, "volume", "remove", "p", "vm-templates/fedora/root")
	assert.Equal(t, []string{"appvms/", "vm-templates/"}, poolTree(t, dir))
	assert.Equal(t, "NAME  STATE  VOLUMES\n", ok(t, state, "vm", "list"))

	ok(t, state, "pool", "remove", "p")
	assert.Equal(t, []string{"appvms/", "vm-templates/"}, poolTree(t, dir), "pool remove leaves the directory, as Qubes does")
	assert.Equal(t, "NAME  DRIVER\n", ok(t, state, "pool", "list"))
}
