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

func TestParseLVMVID(t *testing.T) {
	good := map[string]LVMVID{
		"qubes_dom0/vm-work-private":     {VG: "qubes_dom0", VM: "work", Volume: "private"},
		"vg/vm-sys-net-dm2-root":         {VG: "vg", VM: "sys-net-dm2", Volume: "root"},
		"my.vg+1/vm-a-volatile":          {VG: "my.vg+1", VM: "a", Volume: "volatile"},
		"vg/vm-debian-12-xfce-private_2": {VG: "vg", VM: "debian-12-xfce", Volume: "private_2"},
	}
	for vid, want := range good {
		got, err := ParseLVMVID(vid)
		if assert.NoError(t, err, vid) {
			assert.Equal(t, want, got, vid)
			assert.Equal(t, vid, got.String())
		}
		vm, vol, err := ParseVID(vid)
		assert.NoError(t, err)
		assert.Equal(t, want.VM, vm)
		assert.Equal(t, want.Volume, vol)
	}
	for _, vid := range []string{
		"", "vg", "vg/", "/vm-a-b", "vg/a-b", "vg/vm-", "vg/vm-a", "vg/vm-a-", "vg/vm--b",
		"-vg/vm-a-b", "../vm-a-b", "vg/vm-a-b/c", "v g/vm-a-b", "vg/vm-1a-b", "vg/vm-a-dm-b",
		"vg/vm-a-b.c", "vg/vm-a-b\x00", "appvms/vm-a-b/c",
	} {
		_, err := ParseLVMVID(vid)
		assert.ErrorIs(t, err, ErrInvalidConfig, "%q", vid)
	}
	_, _, err := ParseVID("appvms/work/bad-name")
	assert.ErrorIs(t, err, ErrInvalidConfig, "a malformed file vid is not read as an lvm one")
	vm, vol, err := ParseVID("appvms/work/private")
	require.NoError(t, err)
	assert.Equal(t, []string{"work", "private"}, []string{vm, vol})
}

func FuzzParseLVMVID(f *testing.F) {
	for _, s := range []string{"qubes_dom0/vm-work-private", "vg/vm-a-b-c", "vg/vm--", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, vid string) {
		v, err := ParseLVMVID(vid)
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidConfig)
			return
		}
		require.Equal(t, vid, v.String(), "a parsed vid prints as itself")
		require.NotContains(t, v.Volume, "-")
		require.NoError(t, ValidateVMName(v.VM))
	})
}
