package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRun(t *testing.T) {
	sys := t.TempDir()
	dir := filepath.Join(sys, "block", "loop5")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "loop"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "loop", "backing_file"), []byte("/srv/disk.img\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "size"), []byte("8\n"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ro"), []byte("0\n"), 0o644))

	var out bytes.Buffer
	require.NoError(t, run(&out, sys))
	for _, want := range []string{
		"post-install: true, default_user: user",
		`work gui (through its template): "1"`,
		"maxmem=0 qrexec_timeout=6000 default_user=Admin",
		"invalid feature request",
		"qrexec-daemon env: [QREXEC_STARTUP_NOWAIT=1]",
		"/qubes-vm-type=AppVM",
		"sys-usb:2-1 is now attached to work",
		"device has no backend domain",
		"dom0 exposes dom0:loop5: Block_Storage: hosted by dom0 /srv/disk.img (4096 bytes, mode w)",
		"event: block device dom0:loop5 attached to work {read-only=yes}",
	} {
		assert.Contains(t, out.String(), want)
	}

	out.Reset()
	require.NoError(t, run(&out, ""))
	assert.NotContains(t, out.String(), "loop")
}
