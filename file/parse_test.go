package file

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseDM(t *testing.T) {
	assert.Equal(t, []string{"/dev/loop1", "/dev/loop0"}, parseDeps("2 dependencies\t: (loop1) (loop0)\n"))
	assert.Equal(t, []string{"/dev/dm-3", "/dev/loop7"}, parseDeps(" 2 dependencies  : (dm-3) (loop7)\n"))
	assert.Empty(t, parseDeps("0 dependencies\t:\n"))
	n, err := parseOpenCount("  1\n")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	for _, bad := range []string{"", "x", "-1", "1 2"} {
		_, err := parseOpenCount(bad)
		assert.Error(t, err, "%q", bad)
	}
	assert.Equal(t, []string{"/dev/loop0", "/dev/loop12"}, parseAssociated(
		"/dev/loop0: [2049]:1234 (/var/lib/qubes/appvms/a/private.img)\n/dev/loop12: [2049]:1234 (/var/lib/qubes/appvms/a/private.img)\n"))
	assert.Empty(t, parseAssociated(""))
	got, err := resizedOriginTable("0 16384 snapshot-origin 7:0\n", 12<<20)
	require.NoError(t, err)
	assert.Equal(t, "0 24576 snapshot-origin 7:0", got)
	for _, bad := range []string{"", "0 16384 snapshot 7:0 7:1 P 256\n", "0 16384 snapshot-origin 7:0\n16384 1 snapshot-origin 7:0\n", "1 16384 snapshot-origin 7:0", "0 x snapshot-origin 7:0"} {
		_, err := resizedOriginTable(bad, 1<<20)
		assert.Error(t, err, "%q", bad)
	}
}

// FuzzParseDM: the parsers of losetup's and dmsetup's output never panic
// and give only what they promise.
func FuzzParseDM(f *testing.F) {
	for _, s := range []string{"2 dependencies\t: (loop1) (loop0)\n", "0 16384 snapshot-origin 7:0\n", "/dev/loop0: [2049]:1234 (/x.img)\n", " 1\n", "(dm-1)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, out string) {
		for _, d := range parseDeps(out) {
			require.True(t, strings.HasPrefix(d, "/dev/") && !strings.Contains(d[5:], "/") && !strings.Contains(d, ".."), "dep %q", d)
		}
		if n, err := parseOpenCount(out); err == nil {
			require.GreaterOrEqual(t, n, 0)
		}
		for _, l := range parseAssociated(out) {
			require.True(t, loopRE.MatchString(l), "loop %q", l)
		}
		if table, err := resizedOriginTable(out, 1<<20); err == nil {
			parts := strings.Fields(table)
			require.Len(t, parts, 4)
			require.Equal(t, "2048", parts[1])
			require.Equal(t, "snapshot-origin", parts[2])
			require.NotContains(t, table, "\n")
		}
	})
}

// FuzzCowDirty: a cow whose first 256 KiB are the empty exception store
// (written, as the kernel writes it) and that has nothing beyond is
// clean; one with data beyond it is dirty; any content is read without
// error.
func FuzzCowDirty(f *testing.F) {
	f.Add([]byte{}, int64(0), false)
	f.Add([]byte("SnAp"), int64(0), false)
	f.Add([]byte("x"), int64(len(emptySnapshot)), true)
	f.Fuzz(func(t *testing.T, data []byte, off int64, header bool) {
		if off < 0 || off > 16<<20 || len(data) > 1<<16 {
			t.Skip()
		}
		path := filepath.Join(t.TempDir(), "cow")
		fh, err := os.Create(path)
		require.NoError(t, err)
		require.NoError(t, fh.Truncate(8<<20))
		if header {
			_, err = fh.WriteAt(emptySnapshot, 0)
			require.NoError(t, err)
		}
		_, err = fh.WriteAt(data, off)
		require.NoError(t, err)
		require.NoError(t, fh.Close())
		dirty, err := cowDirty(path)
		require.NoError(t, err)
		zero := !bytes.ContainsFunc(data, func(r rune) bool { return r != 0 })
		if header && (len(data) == 0 || off+int64(len(data)) <= int64(len(emptySnapshot)) && bytes.Equal(data, emptySnapshot[off:off+int64(len(data))])) {
			require.False(t, dirty, "the empty exception store, rewritten in place")
		}
		if header && !zero && off >= int64(len(emptySnapshot)) {
			require.True(t, dirty, "data beyond the header at %s", strconv.FormatInt(off, 10))
		}
	})
}
