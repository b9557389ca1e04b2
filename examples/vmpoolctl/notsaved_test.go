package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/loopfs"
)

// TestRunStateNotSaved puts the state directory on a filesystem that is
// then remounted read-only: a resize is done and exits exitNotSaved with a
// message that says so, a removal is refused (exitFailed) and deletes
// nothing, commands that change nothing the state records succeed, and
// once the filesystem is writable the next command records the new size.
func TestRunStateNotSaved(t *testing.T) {
	mnt := loopfs.Mount(t, loopfs.Ext4, 16<<20)
	state := filepath.Join(mnt, "state")
	stateFile := filepath.Join(state, "state.json")
	dir := filepath.Join(t.TempDir(), "pool")
	private := filepath.Join(dir, "appvms/work/private")
	ok(t, state, "pool", "add", "p", "file-reflink", "dir_path="+dir, "setup_check=no")
	ok(t, state, "volume", "create", "p", "appvms/work/private", "--size", "1MiB", "--rw", "--save-on-stop")
	ok(t, state, "volume", "create", "p", "appvms/work/volatile", "--size", "1MiB", "--rw", "--volatile")
	ok(t, state, "vm", "start", "work")
	writeImage(t, private+"-dirty.img", []byte("data"))
	ok(t, state, "vm", "stop", "work")
	before, err := os.ReadFile(stateFile)
	require.NoError(t, err)

	remount := func(mode string) {
		t.Helper()
		out, err := exec.Command("mount", "-o", "remount,"+mode, mnt).CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	remount("ro")
	t.Cleanup(func() { remount("rw") })

	for _, args := range [][]string{
		{"vm", "start", "work"},
		{"vm", "stop", "work"},
		{"volume", "start", "p", "appvms/work/private"},
		{"volume", "stop", "p", "appvms/work/private"},
		{"vm", "list"},
	} {
		r := ctl(t, state, args...)
		assert.Equal(t, exitOK, r.code, "%q changes nothing the state records: %s", args, r.stderr)
	}

	r := ctl(t, state, "volume", "resize", "p", "appvms/work/private", "2MiB")
	assert.Equal(t, exitNotSaved, r.code, r.stderr)
	assert.Contains(t, r.stderr, "vmpoolctl: resize volume private of VM work: done, but the state could not be saved: ")
	assert.Contains(t, r.stderr, "read-only file system")
	assert.Contains(t, r.stderr, "\nvmpoolctl: the operation was done, but the state in "+state+" could not be saved; do not repeat it")
	st, err := os.Stat(private + ".img")
	require.NoError(t, err)
	assert.EqualValues(t, 2<<20, st.Size(), "the resize was done")

	r = ctl(t, state, "--json", "volume", "resize", "p", "appvms/work/private", "3MiB")
	assert.Equal(t, exitNotSaved, r.code, r.stderr)
	var doc errorDoc
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &doc), r.stdout)
	assert.Equal(t, "not_saved", doc.Kind)
	assert.Contains(t, doc.Hint, "do not repeat it")
	sums := fileSums(t, dir)

	r = ctl(t, state, "volume", "remove", "p", "appvms/work/private")
	assert.Equal(t, exitFailed, r.code, "a removal that cannot be recorded is refused: %s", r.stderr)
	assert.Contains(t, r.stderr, "read-only file system")
	assert.NotContains(t, r.stderr, "the operation was done")
	assert.Equal(t, sums, fileSums(t, dir), "the removal deleted nothing")
	after, err := os.ReadFile(stateFile)
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after))

	remount("rw")
	var info volumeDoc
	okJSON(t, state, &info, "volume", "info", "p", "appvms/work/private")
	assert.EqualValues(t, 3<<20, info.Size, "the size comes from the disk")
	after, err = os.ReadFile(stateFile)
	require.NoError(t, err)
	assert.Contains(t, string(after), `"size": 3145728`, "and the next command saved it")
	ok(t, state, "volume", "remove", "p", "appvms/work/private")
	assert.NoFileExists(t, private+".img")
}
