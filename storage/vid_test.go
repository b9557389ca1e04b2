package storage

import (
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseFileVID(t *testing.T) {
	for _, tc := range []struct{ vid, vm, volume string }{
		{"appvms/work/private", "work", "private"},
		{"vm-templates/fedora-42.xfce/root", "fedora-42.xfce", "root"},
		{"appvms/sys_net/volatile", "sys_net", "volatile"},
	} {
		got, err := ParseFileVID(tc.vid)
		require.NoError(t, err, tc.vid)
		assert.Equal(t, []string{tc.vm, tc.volume}, []string{got.VM, got.Volume})
		assert.Equal(t, tc.vid, got.String())
	}
	for vid, msg := range map[string]string{
		"":                           "is empty",
		"/appvms/work/private":       "starts with /",
		"appvms/../private":          "has a .. part",
		"appvms/work/..":             "has a .. part",
		"appvms/./private":           "has a . part",
		"appvms//private":            "has an empty part",
		"appvms/work/private/":       "has an empty part",
		"appvms/work/pri\x00vate":    "NUL",
		"appvms/work":                "three parts",
		"appvms/work/private/x":      "three parts",
		"template-vms/work/private":  "does not start with appvms/ or vm-templates/",
		"appvms/1work/private":       "must start with a letter",
		"appvms/dom0-dm/private":     "cannot end with -dm",
		"appvms/default/private":     "is reserved",
		"appvms/work/private-dirty":  "volume name",
		"appvms/work/private.img":    "volume name",
		"appvms/wörk/private":        "illegal characters",
		"appvms/" + long + "/root":   "shorter than 32",
		"appvms\\work\\private":      "three parts",
		"appvms/work/private\n":      "volume name",
		"appvms/work /private":       "illegal characters",
		"appvms/Domain-0/private":    "is reserved",
		"vm-templates/none/root":     "is reserved",
		"appvms/work/root:rw":        "volume name",
		"appvms/work/2nd":            "volume name",
		"appvms/work/" + long + "xx": "volume name",
	} {
		_, err := ParseFileVID(vid)
		require.ErrorIs(t, err, ErrInvalidConfig, "%q", vid)
		assert.Contains(t, err.Error(), msg, "%q", vid)
	}
}

const long = "abcdefghijklmnopqrstuvwxyzabcdef" // 32 characters

func FuzzParseFileVID(f *testing.F) {
	for _, s := range []string{"appvms/work/private", "vm-templates/fedora-42/root", "/x", "appvms/../x", "a//b", "appvms/a/b/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, vid string) {
		got, err := ParseFileVID(vid)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidConfig)
			return
		}
		require.NoError(t, ValidateVMName(got.VM))
		require.NoError(t, ValidateVolumeName(got.Volume))
		require.Equal(t, vid, got.String())
		require.False(t, slices.Contains(strings.Split(vid, "/"), "..") || strings.HasPrefix(vid, "/") || path.Clean(vid) != vid, "accepted unsafe vid %q", vid)
	})
}
