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
	devs, err := parseDMList("origin-fe00:12;1;loop0;\nsnapshot-fe00:12-fe00:13;0;loop1,loop0;\nsnapshot-fe00:12-fe00:13-fe00:20;2;loop2,dm-1;snapshot-fe00:12-fe00:13\n")
	require.NoError(t, err)
	assert.Equal(t, map[string]dmInfo{
		"origin-fe00:12":                   {open: 1, uses: []string{"loop0"}},
		"snapshot-fe00:12-fe00:13":         {open: 0, uses: []string{"loop1", "loop0"}},
		"snapshot-fe00:12-fe00:13-fe00:20": {open: 2, uses: []string{"loop2", "dm-1"}, dms: []string{"snapshot-fe00:12-fe00:13"}},
	}, devs)
	devs, err = parseDMList("No devices found\n")
	require.NoError(t, err)
	assert.Empty(t, devs)
	for _, bad := range []string{"x;1;loop0", "x;-1;;", "x;y;;", ";0;;", "x;0;../etc;", "x;0;;a b"} {
		_, err := parseDMList(bad)
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
	for _, s := range []string{"origin-fe00:12;1;loop0;\n", "0 16384 snapshot-origin 7:0\n", "/dev/loop0: [2049]:1234 (/x.img)\n", "a;0;dm-1;b\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, out string) {
		if devs, err := parseDMList(out); err == nil {
			for name, d := range devs {
				require.NotEmpty(t, name)
				require.GreaterOrEqual(t, d.open, 0)
				for _, u := range append(d.uses, d.dms...) {
					require.True(t, devNameRE.MatchString(u) && !strings.Contains(u, "/"), "device %q", u)
				}
			}
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
