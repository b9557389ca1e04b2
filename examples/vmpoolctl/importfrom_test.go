package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunVolumeImportFrom copies a volume's committed data into a volume
// of another pool; the size follows; a running destination is refused
// with the state unchanged.
func TestRunVolumeImportFrom(t *testing.T) {
	state, _ := addPool(t)
	other := filepath.Join(t.TempDir(), "q")
	ok(t, state, "pool", "add", "q", "file-reflink", "dir_path="+other, "setup_check=no")
	ok(t, state, "volume", "create", "p", "vm-templates/fedora/root", "--size", "2MiB", "--rw", "--save-on-stop")
	ok(t, state, "volume", "create", "q", "vm-templates/copy/root", "--size", "1MiB", "--rw", "--save-on-stop")
	data := bytes.Repeat([]byte("F"), 4096)
	img := filepath.Join(t.TempDir(), "img")
	require.NoError(t, os.WriteFile(img, append(data, make([]byte, 2<<20-4096)...), 0o600))
	ok(t, state, "volume", "import", "p", "vm-templates/fedora/root", img)

	var doc volumeDoc
	okJSON(t, state, &doc, "volume", "import-from", "q", "vm-templates/copy/root", "p", "vm-templates/fedora/root")
	assert.Equal(t, int64(2<<20), doc.Size, "the size follows the source")
	got, err := os.ReadFile(filepath.Join(other, "vm-templates/copy/root.img"))
	require.NoError(t, err)
	assert.Equal(t, data, got[:4096])

	ok(t, state, "vm", "start", "copy")
	before, err := os.ReadFile(filepath.Join(state, "state.json"))
	require.NoError(t, err)
	refuseJSON(t, state, exitFailed, "running", "VM copy must be stopped", "volume", "import-from", "q", "vm-templates/copy/root", "p", "vm-templates/fedora/root")
	after, err := os.ReadFile(filepath.Join(state, "state.json"))
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after))
	r := ctl(t, state, "volume", "import-from", "q", "vm-templates/copy/root", "p", "appvms/nobody/root")
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stderr, "no volume appvms/nobody/root in pool p")
}

// TestRunVolumeInfoBlockDevice: volume info of a running volume ends with
// the block device its VM gets; a stopped one has none.
func TestRunVolumeInfoBlockDevice(t *testing.T) {
	state, dir := addPool(t)
	ok(t, state, "volume", "create", "p", "appvms/work/private", "--size", "1MiB", "--rw", "--save-on-stop")
	assert.NotContains(t, ok(t, state, "volume", "info", "p", "appvms/work/private"), "block_device")
	ok(t, state, "vm", "start", "work")
	out := ok(t, state, "volume", "info", "p", "appvms/work/private")
	dirty := filepath.Join(dir, "appvms/work/private-dirty.img")
	assert.True(t, strings.HasSuffix(out, "is_outdated=False\nblock_device.path="+dirty+"\nblock_device.name=private\nblock_device.rw=True\nblock_device.devtype=disk\n"), out)
	var doc volumeDoc
	okJSON(t, state, &doc, "volume", "info", "p", "appvms/work/private")
	require.NotNil(t, doc.BlockDevice)
	assert.Equal(t, blockDeviceDoc{Path: dirty, Name: "private", RW: true, DevType: "disk"}, *doc.BlockDevice)
	ok(t, state, "vm", "stop", "work")
}
