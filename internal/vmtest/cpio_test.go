package vmtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/testenv"
)

// cpioEntry is one entry as readCPIO finds it.
type cpioEntry struct {
	name               string
	ino, mode, nlink   uint32
	rdevMajor, rdevMin uint32
	data               string
}

// readCPIO parses a newc archive strictly by the format's rules (magic,
// hex fields, 4-byte alignment, a trailer at the end and nothing after
// it but padding), independently of cpioWriter.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func() { off = (off + 3) &^ 3 }
	for {
		require.Zero(t, off%4, "header at offset %d is not aligned", off)
		require.LessOrEqual(t, off+110, len(b), "truncated header at %d", off)
		h := b[off : off+110]
		require.Equal(t, "070701", string(h[:6]), "magic at %d", off)
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			require.NoError(t, err, "field %d at %d", i, off)
			return uint32(v)
		}
		e := cpioEntry{ino: field(0), mode: field(1), nlink: field(4), rdevMajor: field(9), rdevMin: field(10)}
		size, namesize := int(field(6)), int(field(11))
		require.Zero(t, field(12), "check field")
		off += 110
		require.Equal(t, byte(0), b[off+namesize-1], "name not NUL-terminated")
		e.name = string(b[off : off+namesize-1])
		off += namesize
		align()
		e.data = string(b[off : off+size])
		off += size
		align()
		if e.name == "TRAILER!!!" {
			assert.Equal(t, len(b), off, "bytes after the trailer")
			return out
		}
		out = append(out, e)
	}
}

func TestCPIOWriter(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.Dir("bin", 0o755)
	c.File("bin/a", 0o644, []byte("hello")) // 5 bytes: the data needs padding
	c.File("init", 0o755, nil)
	c.Symlink("bin/sh", "busybox")
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("abc", 0o4755, []byte("1234")) // no padding needed; setuid kept
	require.NoError(t, c.Close())
	got := readCPIO(t, buf.Bytes())
	want := []cpioEntry{
		{name: "bin", ino: 1, mode: 0o040755, nlink: 2},
		{name: "bin/a", ino: 2, mode: 0o100644, nlink: 1, data: "hello"},
		{name: "init", ino: 3, mode: 0o100755, nlink: 1},
		{name: "bin/sh", ino: 4, mode: 0o120777, nlink: 1, data: "busybox"},
		{name: "dev/console", ino: 5, mode: 0o020600, nlink: 1, rdevMajor: 5, rdevMin: 1},
		{name: "abc", ino: 6, mode: 0o104755, nlink: 1, data: "1234"},
	}
	assert.Equal(t, want, got)
}

func TestCPIOBadNames(t *testing.T) {
	for _, name := range []string{"", "/abs", "a/../b", "..", "a//b", "a/", "./a", "TRAILER!!!", "a\x00b"} {
		var buf bytes.Buffer
		c := newCPIOWriter(&buf)
		c.File(name, 0o644, []byte("x"))
		c.File("ok", 0o644, nil)
		assert.Error(t, c.Close(), "name %q", name)
		assert.Zero(t, buf.Len(), "name %q: wrote %d bytes", name, buf.Len())
	}
}

type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n < len(p) {
		return 0, os.ErrClosed
	}
	w.n -= len(p)
	return len(p), nil
}

func TestCPIOWriteError(t *testing.T) {
	c := newCPIOWriter(&failWriter{n: 120})
	c.File("a", 0o644, []byte("data"))
	c.File("b", 0o644, []byte("data"))
	assert.ErrorIs(t, c.Close(), os.ErrClosed)
}

// TestCPIOBusyboxExtracts has busybox' own cpio unpack an archive of
// ours: an independent reader agrees on names, modes and contents.
func TestCPIOBusyboxExtracts(t *testing.T) {
	a := requireAssets(t)
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.Dir("d", 0o750)
	c.Dir("d/e", 0o755)
	c.File("d/e/f", 0o640, bytes.Repeat([]byte("0123456789"), 1000))
	c.File("d/g", 0o755, []byte("x"))
	c.Symlink("d/l", "e/f")
	require.NoError(t, c.Close())
	dir := t.TempDir()
	cmd := exec.Command(a.busyboxPath(), "cpio", "-i", "-d")
	cmd.Dir = dir
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	data, err := os.ReadFile(filepath.Join(dir, "d/e/f"))
	require.NoError(t, err)
	assert.Equal(t, bytes.Repeat([]byte("0123456789"), 1000), data)
	for p, mode := range map[string]os.FileMode{"d": os.ModeDir | 0o750, "d/e/f": 0o640, "d/g": 0o755} {
		st, err := os.Lstat(filepath.Join(dir, p))
		require.NoError(t, err)
		assert.Equal(t, mode, st.Mode(), p)
	}
	target, err := os.Readlink(filepath.Join(dir, "d/l"))
	require.NoError(t, err)
	assert.Equal(t, "e/f", target)
}

// requireAssets returns the cached kernel and busybox. As root it
// fetches them if need be (as TestInVM would); otherwise a test that
// needs them skips when they are not cached (or fails under
// VMPOOL_REQUIRE=all), so that an unprivileged go test ./... does not
// download a kernel.
func requireAssets(t *testing.T) *assets {
	t.Helper()
	var a *assets
	var err error
	if os.Geteuid() == 0 {
		a, err = prepare(t.Context())
	} else if cache, cerr := CacheDir(); cerr != nil {
		err = cerr
	} else if a, err = readCurrent(cache); err == nil && !a.complete() {
		err = fmt.Errorf("the cache %s is incomplete", cache)
	}
	why := ""
	if err != nil {
		why = err.Error()
	}
	testenv.Need(t, err == nil, "vmtest-kernel", "the VM's kernel and busybox (a test run as root fetches them): "+why)
	return a
}
