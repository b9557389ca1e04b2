package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunTwoStatesOnePool gives state A a pool with a private volume that
// holds data and revisions, then tries with state B, on the same
// directory, every command that could destroy them: adding the pool
// (refused: the directory is A's), adopting it and creating the same vid
// (refused: the vid has data), removing it or using it (B does not know
// it), starting and stopping the VM with a volume of B's, removing B's
// pool. A's images and revisions stay byte for byte; only volume create
// --replace, which names the vid, deletes them.
func TestRunTwoStatesOnePool(t *testing.T) {
	root := t.TempDir()
	stateA, stateB := filepath.Join(root, "A"), filepath.Join(root, "B")
	dir := filepath.Join(t.TempDir(), "pool")
	addB := []string{"pool", "add", "q", "file-reflink", "dir_path=" + dir, "setup_check=no"}
	private := filepath.Join(dir, "appvms/work/private")

	ok(t, stateA, "pool", "add", "p", "file-reflink", "dir_path="+dir, "setup_check=no", "revisions_to_keep=2")
	ok(t, stateA, "volume", "create", "p", "appvms/work/private", "--size", "1MiB", "--rw", "--save-on-stop")
	for _, data := range []string{"first", "second"} {
		ok(t, stateA, "vm", "start", "work")
		writeImage(t, private+"-dirty.img", []byte(data))
		ok(t, stateA, "vm", "stop", "work")
	}
	var revs []revisionDoc
	okJSON(t, stateA, &revs, "volume", "revisions", "p", "appvms/work/private")
	require.Len(t, revs, 2, "the empty image and first")
	sumsA := fileSums(t, dir)
	require.Len(t, sumsA, 4, "private.img, its precache and two revisions: %v", sumsA)
	intact := func(after string) {
		t.Helper()
		assert.Equal(t, sumsA, fileSums(t, dir), "A's images and revisions after %s", after)
		data, err := os.ReadFile(private + ".img")
		require.NoError(t, err)
		assert.Equal(t, "second", string(data[:6]), "after %s", after)
	}

	// B adds a pool on A's directory: refused, and B's state stays empty.
	r := ctl(t, stateB, append([]string{"--json"}, addB...)...)
	assert.Equal(t, exitFailed, r.code, r.stderr)
	assert.Contains(t, r.stderr, "directory "+dir+" belongs to pool p of the vmpool state in "+stateA)
	assert.Contains(t, r.stderr, "\nvmpoolctl: pool add --adopt takes the directory over")
	var doc errorDoc
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &doc), r.stdout)
	assert.Equal(t, "in_use", doc.Kind)
	assert.Contains(t, doc.Hint, "--adopt")
	assert.NoFileExists(t, filepath.Join(stateB, "state.json"), "a refused add saves nothing")
	intact("pool add")

	// B adopts it, and may not create A's vid over its data.
	ok(t, stateB, append(addB, "--adopt")...)
	intact("pool add --adopt")
	for _, size := range []string{"1MiB", "4MiB"} {
		refuseJSON(t, stateB, exitFailed, "exists", "private.img exists: the vid has data",
			"volume", "create", "q", "appvms/work/private", "--size", size, "--rw", "--save-on-stop")
		intact("volume create --size " + size)
	}
	r = ctl(t, stateB, "volume", "create", "q", "appvms/work/private", "--size", "1MiB", "--rw", "--save-on-stop")
	assert.Contains(t, r.stderr, "\nvmpoolctl: the data belongs to no volume of this state; volume create --replace deletes it")

	// Nothing B runs on the vid or the VM reaches A's volume.
	image := filepath.Join(t.TempDir(), "image")
	require.NoError(t, os.WriteFile(image, bytes.Repeat([]byte{0xee}, 4096), 0o600))
	for _, args := range [][]string{
		{"volume", "remove", "q", "appvms/work/private"},
		{"volume", "start", "q", "appvms/work/private"},
		{"volume", "stop", "q", "appvms/work/private"},
		{"volume", "revert", "q", "appvms/work/private"},
		{"volume", "resize", "q", "appvms/work/private", "1KiB", "--force"},
		{"volume", "import", "q", "appvms/work/private", image},
		{"volume", "config", "q", "appvms/work/private", "revisions_to_keep", "0"},
		{"vm", "start", "work"},
		{"vm", "stop", "work"},
	} {
		refuseJSON(t, stateB, exitFailed, "not_found", "not found", args...)
		intact(args[0] + " " + args[1])
	}
	for _, size := range [][]string{nil, {"--size", "1MiB"}} {
		refuseJSON(t, stateB, exitFailed, "not_found", "source appvms/work/private is not a volume of pool q",
			append([]string{"volume", "create", "q", "appvms/work/root", "--snap-on-start", "--source", "appvms/work/private", "--rw"}, size...)...)
	}
	ok(t, stateB, "volume", "create", "q", "appvms/work/volatile", "--size", "1MiB", "--rw", "--volatile")
	ok(t, stateB, "vm", "start", "work")
	ok(t, stateB, "vm", "stop", "work")
	ok(t, stateB, "volume", "remove", "q", "appvms/work/volatile")
	intact("B's VM work started, stopped and its volume removed")
	ok(t, stateB, "pool", "remove", "q")
	intact("pool remove")

	// A cannot open its pool any more: the directory is B's now.
	r = ctl(t, stateA, "vm", "stop", "work")
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stderr, "belongs to pool q of the vmpool state in "+stateB)
	intact("A's refused stop")

	// Asked for by name, B replaces the vid: the data and revisions go.
	ok(t, stateB, append(addB, "--adopt")...)
	ok(t, stateB, "volume", "create", "q", "appvms/work/private", "--size", "1MiB", "--rw", "--save-on-stop", "--replace")
	assert.Equal(t, []string{"appvms/", "appvms/work/", "appvms/work/private-precache.img", "appvms/work/private.img", "vm-templates/"}, poolTree(t, dir))
	data, err := os.ReadFile(private + ".img")
	require.NoError(t, err)
	assert.Equal(t, make([]byte, 1<<20), data, "an empty volume")
}
