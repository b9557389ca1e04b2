package vmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestShellQuote(t *testing.T) {
	for _, s := range []string{"", "plain", "a b", "it's", `"$HOME" $(x) ` + "`y`", "\\n\n\t", "'''", "-n"} {
		out, err := exec.Command("sh", "-c", "printf '%s' "+shellQuote(s)).Output()
		require.NoError(t, err, "%q", s)
		assert.Equal(t, s, string(out))
	}
}

// TestStage2Script checks that stage 2 is valid sh (sh -n) for every
// setup, and that it sets up what the setup asks for, and no more.
func TestStage2Script(t *testing.T) {
	for _, setup := range []Setup{SetupThinPool, SetupVG, SetupNone} {
		s := &stage2{
			path: "/usr/bin:/bin", rw: []string{"/srv/a b"}, setup: setup,
			vg: "vg0", pool: "tp", poolSz: 1 << 30, dir: "/home/x's",
			env:  []string{"PATH=/usr/bin:/bin", "A=1 2"},
			argv: []string{"/bin/echo", "it's", "$x"},
		}
		script := s.script()
		p := filepath.Join(t.TempDir(), "stage2.sh")
		require.NoError(t, os.WriteFile(p, []byte(script), 0o644))
		out, err := exec.Command("sh", "-n", p).CombinedOutput()
		require.NoError(t, err, "%s\n%s", out, script)
		assert.Contains(t, script, "env -i -- 'PATH=/usr/bin:/bin' 'A=1 2' '/bin/echo' 'it'\\''s' '$x' 1>&3")
		assert.Contains(t, script, "cd '/home/x'\\''s'")
		assert.Contains(t, script, "vmrw0 '/srv/a b'")
		assert.Equal(t, setup != SetupNone, contains(script, "vgcreate -q 'vg0' $DISK"), setup)
		assert.Equal(t, setup == SetupThinPool, contains(script, "lvcreate -q --type thin-pool -L 1073741824b -n 'tp' 'vg0'"), setup)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestInitScript checks /init with busybox' own sh -n.
func TestInitScript(t *testing.T) {
	a := requireAssets(t)
	p := filepath.Join(t.TempDir(), "init")
	require.NoError(t, os.WriteFile(p, []byte(initScript("vmtest-end-0123")), 0o755))
	out, err := exec.Command(a.busyboxPath(), "sh", "-n", p).CombinedOutput()
	require.NoError(t, err, "%s", out)
}

// TestBuildInitramfs checks the initramfs holds busybox, /init, the
// modules and their load order, and /dev/console.
func TestBuildInitramfs(t *testing.T) {
	dir := t.TempDir()
	bb := filepath.Join(dir, "busybox")
	require.NoError(t, os.WriteFile(bb, []byte("BUSYBOX"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.ko"), []byte("AKO"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "b.ko"), []byte("BKO"), 0o644))
	img, err := buildInitramfs(bb, dir, []string{"b", "a"}, "vmtest-end-x")
	require.NoError(t, err)
	files := map[string]cpioEntry{}
	for _, e := range readCPIO(t, img) {
		files[e.name] = e
	}
	assert.Equal(t, "BUSYBOX", files["bin/busybox"].data)
	assert.Equal(t, uint32(0o100755), files["init"].mode)
	assert.Equal(t, initScript("vmtest-end-x"), files["init"].data)
	assert.Contains(t, files["init"].data, "printf '%s' 'vmtest-end-x' >$OUT")
	assert.Equal(t, "BKO", files["lib/modules/b.ko"].data)
	assert.Equal(t, "b\na\n", files["lib/modules/load.order"].data)
	assert.Equal(t, uint32(0o020600), files["dev/console"].mode)
	assert.Equal(t, [2]uint32{5, 1}, [2]uint32{files["dev/console"].rdevMajor, files["dev/console"].rdevMin})
	_, err = buildInitramfs(bb, dir, []string{"missing"}, "vmtest-end-x")
	assert.Error(t, err)
}
