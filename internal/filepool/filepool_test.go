package filepool

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

func TestDirPath(t *testing.T) {
	params := []storage.Parameter{{Name: "revisions_to_keep"}, {Name: "dir_path", Required: true}}
	dir, err := DirPath("file", map[string]string{"dir_path": "rel/x"}, params)
	require.NoError(t, err)
	assert.True(t, filepath.IsAbs(dir))
	_, err = DirPath("file", map[string]string{"dir_path": "/x", "setup_check": "no", "a": "b"}, params)
	assert.ErrorIs(t, err, storage.ErrInvalidConfig)
	assert.EqualError(t, err, "invalid configuration: unknown parameters a, setup_check (file accepts revisions_to_keep, dir_path)")
	for _, p := range []map[string]string{{}, {"dir_path": ""}, {"dir_path": "/x\x00"}} {
		_, err := DirPath("file", p, params)
		assert.ErrorIs(t, err, storage.ErrInvalidConfig, "%q", p)
	}
}

func TestCheckVolumeConfig(t *testing.T) {
	c := storage.VolumeConfig{VID: "appvms/work/private"}
	require.NoError(t, CheckVolumeConfig(&c, "p"))
	assert.Equal(t, "private", c.Name)
	assert.Equal(t, "p", c.Pool)
	for what, c := range map[string]storage.VolumeConfig{
		"name differs":       {VID: "appvms/work/private", Name: "root"},
		"other pool":         {VID: "appvms/work/private", Pool: "q"},
		"bad vid":            {VID: "appvms/../private"},
		"own source":         {VID: "appvms/work/root", SnapOnStart: true, Source: "appvms/work/root"},
		"malformed src":      {VID: "appvms/work/root", SnapOnStart: true, Source: "/etc/passwd"},
		"invalid (Validate)": {VID: "appvms/work/root", SnapOnStart: true},
	} {
		assert.ErrorIs(t, CheckVolumeConfig(&c, "p"), storage.ErrInvalidConfig, what)
	}
}

func TestCheckKind(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	link := filepath.Join(dir, "l")
	require.NoError(t, os.Symlink(file, link))
	assert.NoError(t, CheckFiles(file, filepath.Join(dir, "missing")))
	assert.ErrorIs(t, CheckFiles(link), storage.ErrUnsafePath)
	assert.ErrorIs(t, CheckFiles(dir), storage.ErrUnsafePath)
	assert.NoError(t, CheckDirs(dir))
	assert.ErrorIs(t, CheckDirs(file), storage.ErrUnsafePath)
	assert.ErrorIs(t, CheckDir(filepath.Join(dir, "missing")), storage.ErrNotFound)
	assert.ErrorIs(t, CheckDir(dir), storage.ErrNotFound, "neither appvms/ nor vm-templates/: not mounted")
	require.NoError(t, os.Mkdir(filepath.Join(dir, "appvms"), 0o755))
	assert.NoError(t, CheckDir(dir))
	assert.ErrorIs(t, CheckDir(file), storage.ErrUnsafePath)
}

func TestParseBool(t *testing.T) {
	for s, want := range map[string]bool{"True": true, "1": true, "on": true, "False": false, "0": false, "off": false, "": false} {
		got, err := ParseBool(s)
		require.NoError(t, err, s)
		assert.Equal(t, want, got, s)
		assert.Equal(t, map[bool]string{true: "True", false: "False"}[want], PyBool(got))
	}
	for _, s := range []string{"true", "yes", "TRUE", "2"} {
		_, err := ParseBool(s)
		assert.Error(t, err, s)
	}
}
