package main

import (
	"flag"
	"io"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1000", 1000},
		{"1000B", 1000},
		{"007", 7},
		{"10K", 10_000},
		{"10KB", 10_000},
		{"10Ki", 10 << 10},
		{"10KiB", 10 << 10},
		{"512MiB", 512 << 20},
		{"512M", 512_000_000},
		{"10G", 10_000_000_000},
		{"10GiB", 10 << 30},
		{"10gib", 10 << 30},
		{"10 GiB", 10 << 30},
		{" 2T ", 2_000_000_000_000},
		{"2TiB", 2 << 40},
		{"9223372036854775807", 1<<63 - 1},
		{"8388607Ti", 8388607 << 40},
	} {
		got, err := parseSize(tc.in)
		if assert.NoError(t, err, "%q", tc.in) {
			assert.Equal(t, tc.want, got, "%q", tc.in)
		}
	}
	for _, in := range []string{
		"", " ", "B", "G", "GiB", "-1", "-1G", "+1", "1.5G", "1e3", "0x10", "10X", "10GG", "10BB", "10iB",
		"10 G B", "1_000", "G10", "9223372036854775808", "8388608Ti", "9999999999999999999999G", "١٢", "10\x00",
	} {
		_, err := parseSize(in)
		assert.ErrorIs(t, err, storage.ErrInvalidConfig, "%q", in)
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1000", "10G", "10GiB", "512MiB", "-1", "", "8388608Ti", "1 kb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			require.ErrorIs(t, err, storage.ErrInvalidConfig)
			require.Zero(t, n)
			return
		}
		require.GreaterOrEqual(t, n, int64(0))
		back, err := parseSize(strconv.FormatInt(n, 10))
		require.NoError(t, err, "a parsed size prints as bytes that parse again")
		require.Equal(t, n, back)
	})
}

func TestParseParams(t *testing.T) {
	got, err := parseParams([]string{"dir_path=/var/lib/x", "setup_check=no", "empty=", "eq=a=b"})
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"dir_path": "/var/lib/x", "setup_check": "no", "empty": "", "eq": "a=b"}, got)
	for _, args := range [][]string{{"novalue"}, {"=x"}, {"a=1", "a=2"}} {
		_, err := parseParams(args)
		assert.ErrorIs(t, err, storage.ErrInvalidConfig, "%q", args)
	}
}

func TestParseInterleaved(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		pos   []string
		size  string
		force bool
	}{
		{[]string{"p", "vid", "--size", "1G"}, []string{"p", "vid"}, "1G", false},
		{[]string{"--size=1G", "p", "--force", "vid"}, []string{"p", "vid"}, "1G", true},
		{[]string{"p", "-force", "vid", "-size", "-1"}, []string{"p", "vid"}, "-1", true},
		{[]string{"p", "--", "--force", "vid"}, []string{"p", "--force", "vid"}, "", false},
		{[]string{"--force", "--", "-x"}, []string{"-x"}, "", true},
		{[]string{"p", "-", "vid"}, []string{"p", "-", "vid"}, "", false},
		// Negative numbers are positional, except as a flag's value.
		{[]string{"p", "vid", "revisions_to_keep", "-1"}, []string{"p", "vid", "revisions_to_keep", "-1"}, "", false},
		{[]string{"p", "-2", "--size", "-1", "-.5", "--force", "-3"}, []string{"p", "-2", "-.5", "-3"}, "-1", true},
		{[]string{"--size", "--force", "-1"}, []string{"-1"}, "--force", false},
		{nil, nil, "", false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		size := fs.String("size", "", "")
		force := fs.Bool("force", false, "")
		pos, err := parseInterleaved(fs, tc.args)
		require.NoError(t, err, "%q", tc.args)
		assert.Equal(t, tc.pos, pos, "%q", tc.args)
		assert.Equal(t, tc.size, *size, "%q", tc.args)
		assert.Equal(t, tc.force, *force, "%q", tc.args)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	_, err := parseInterleaved(fs, []string{"p", "--nope"})
	assert.ErrorContains(t, err, "flag provided but not defined: -nope")
	_, err = parseInterleaved(fs, []string{"p", "-1x"})
	assert.ErrorContains(t, err, "flag provided but not defined: -1x")
}

func TestParseVolumeChange(t *testing.T) {
	n := func(i int) *int { return &i }
	b := func(v bool) *bool { return &v }
	s := func(v string) *string { return &v }
	for _, tc := range []struct {
		key, value string
		want       storage.VolumeChange
	}{
		{"revisions_to_keep", "2", storage.VolumeChange{RevisionsToKeep: n(2)}},
		{"revisions_to_keep", "0", storage.VolumeChange{RevisionsToKeep: n(0)}},
		{"revisions_to_keep", "-1", storage.VolumeChange{RevisionsToKeep: n(-1)}},
		{"rw", "1", storage.VolumeChange{RW: b(true)}},
		{"rw", "yes", storage.VolumeChange{RW: b(true)}},
		{"rw", "True", storage.VolumeChange{RW: b(true)}},
		{"rw", "ON", storage.VolumeChange{RW: b(true)}},
		{"rw", "0", storage.VolumeChange{RW: b(false)}},
		{"rw", "No", storage.VolumeChange{RW: b(false)}},
		{"rw", "FALSE", storage.VolumeChange{RW: b(false)}},
		{"rw", "off", storage.VolumeChange{RW: b(false)}},
		{"ephemeral", "yEs", storage.VolumeChange{Ephemeral: b(true)}},
		{"ephemeral", "oFF", storage.VolumeChange{Ephemeral: b(false)}},
		{"source", "vm-templates/debian/root", storage.VolumeChange{Source: s("vm-templates/debian/root")}},
	} {
		got, err := parseVolumeChange(tc.key, tc.value)
		if assert.NoError(t, err, "%s %q", tc.key, tc.value) {
			assert.Equal(t, tc.want, got, "%s %q", tc.key, tc.value)
		}
	}
	for _, tc := range []struct{ key, value string }{
		{"revisions_to_keep", "-2"}, {"revisions_to_keep", ""}, {"revisions_to_keep", "1.0"}, {"revisions_to_keep", "two"},
		{"revisions_to_keep", "99999999999999999999"},
		{"rw", ""}, {"rw", "y"}, {"rw", "2"}, {"rw", " yes"}, {"rw", "enabled"},
		{"ephemeral", "none"},
		{"source", ""}, {"source", "appvms/../root"}, {"source", "/vm-templates/t/root"}, {"source", "vm-templates/t"},
		{"size", "1G"}, {"RW", "yes"}, {"revisions-to-keep", "1"}, {"", ""},
	} {
		_, err := parseVolumeChange(tc.key, tc.value)
		assert.ErrorIs(t, err, storage.ErrInvalidConfig, "%s %q", tc.key, tc.value)
	}
	_, err := parseVolumeChange("size", "1G")
	assert.ErrorContains(t, err, "valid keys: revisions_to_keep, rw, ephemeral, source")
}
