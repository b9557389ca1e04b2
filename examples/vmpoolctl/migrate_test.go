package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunPoolMigrate moves a file pool to file-reflink: refused while a
// volume runs (state.json unchanged), then done; pool info shows the new
// driver and the images are there with their bytes.
func TestRunPoolMigrate(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	dir := filepath.Join(t.TempDir(), "qubes")
	ok(t, state, "pool", "add", "varlibqubes", "file", "dir_path="+dir)
	ok(t, state, "volume", "create", "varlibqubes", "appvms/work/private", "--size", "1MiB", "--rw", "--save-on-stop")
	ok(t, state, "volume", "create", "varlibqubes", "appvms/work/volatile", "--size", "1MiB", "--rw", "--volatile")
	img := filepath.Join(t.TempDir(), "img")
	data := []byte(strings.Repeat("private data ", 1000))
	require.NoError(t, os.WriteFile(img, data, 0o600))
	ok(t, state, "volume", "import", "varlibqubes", "appvms/work/private", img)

	ok(t, state, "volume", "start", "varlibqubes", "appvms/work/volatile") // no device-mapper needed
	before, err := os.ReadFile(filepath.Join(state, "state.json"))
	require.NoError(t, err)
	refuseJSON(t, state, exitFailed, "running", "volume volatile of VM work runs; stop the VM first",
		"pool", "migrate", "varlibqubes", "file-reflink", "setup_check=no")
	after, err := os.ReadFile(filepath.Join(state, "state.json"))
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after))
	ok(t, state, "volume", "stop", "varlibqubes", "appvms/work/volatile")

	out := ok(t, state, "pool", "migrate", "varlibqubes", "file-reflink", "setup_check=no")
	assert.Contains(t, out, "name=varlibqubes\n")
	assert.Contains(t, out, "driver=file-reflink\n")
	assert.Equal(t, "NAME         DRIVER\nvarlibqubes  file-reflink\n", ok(t, state, "pool", "list"))
	got, err := os.ReadFile(filepath.Join(dir, "appvms/work/private.img"))
	require.NoError(t, err)
	assert.Equal(t, data, got)
	cows, err := filepath.Glob(filepath.Join(dir, "appvms/work/*-cow.img*"))
	require.NoError(t, err)
	assert.Empty(t, cows)
	ok(t, state, "vm", "start", "work")
	ok(t, state, "vm", "stop", "work")
	r := ctl(t, state, "pool", "migrate", "varlibqubes", "lvm_thin")
	assert.Equal(t, exitUsage, r.code, "lvm_thin takes no dir_path: %s", r.stderr)
	assert.Equal(t, "NAME         DRIVER\nvarlibqubes  file-reflink\n", ok(t, state, "pool", "list"), "the pool is as it was")
}
