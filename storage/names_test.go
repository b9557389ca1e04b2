package storage

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestValidateVMName(t *testing.T) {
	for _, name := range []string{"work", "a", "sys-net", "fedora-42.xfce", "A_b-c.d", strings.Repeat("x", 31)} {
		assert.NoError(t, ValidateVMName(name), name)
	}
	for _, name := range []string{"", "1vm", "-vm", ".vm", "_vm", "..", "a/b", "a b", "a\x00b", "é", strings.Repeat("x", 32),
		"none", "default", "Domain-0", "disp-dm", "lost+found"} {
		err := ValidateVMName(name)
		assert.ErrorIs(t, err, ErrInvalidConfig, "%q", name)
	}
}

func TestValidateVolumeName(t *testing.T) {
	for _, name := range []string{"root", "private", "volatile", "kernel", "data_2"} {
		assert.NoError(t, ValidateVolumeName(name), name)
	}
	for _, name := range []string{"", "2nd", "private-dirty", "private.img", "a/b", "..", "x\x00", strings.Repeat("v", 32)} {
		assert.ErrorIs(t, ValidateVolumeName(name), ErrInvalidConfig, "%q", name)
	}
}

func TestValidatePoolName(t *testing.T) {
	for _, name := range []string{"varlibqubes", "vm-pool", "a.b_c", "0"} {
		assert.NoError(t, ValidatePoolName(name), name)
	}
	for _, name := range []string{"", "a b", "a/b", "a:b", "é", "a\x00"} {
		assert.ErrorIs(t, ValidatePoolName(name), ErrInvalidConfig, "%q", name)
	}
}

func TestValidateRevisionID(t *testing.T) {
	for _, id := range []string{"1", "42", "2018-01-02T03:04:05Z", "1530000000-back"} {
		assert.NoError(t, ValidateRevisionID(id), id)
	}
	for _, id := range []string{"", "../1", "1/2", "1 2", "1\x00", "1@2", strings.Repeat("9", 65)} {
		assert.ErrorIs(t, ValidateRevisionID(id), ErrInvalidConfig, "%q", id)
	}
}

func intp(n int) *int    { return &n }
func boolp(b bool) *bool { return &b }

func TestVolumeConfigValidate(t *testing.T) {
	ok := []VolumeConfig{
		{Name: "private", SaveOnStop: true, RW: true, Size: 1 << 20},
		{Name: "root", SnapOnStart: true, Source: "vm-templates/t/root"},
		{Name: "volatile", RW: true, Ephemeral: boolp(true)},
		{Name: "private", SaveOnStop: true, RevisionsToKeep: intp(-1)},
	}
	for _, c := range ok {
		assert.NoError(t, c.Validate(), "%+v", c)
	}
	bad := map[string]VolumeConfig{
		"negative size":       {Name: "private", Size: -1},
		"snap without source": {Name: "root", SnapOnStart: true},
		"source without snap": {Name: "root", Source: "vm-templates/t/root"},
		"rtk below -1":        {Name: "private", SaveOnStop: true, RevisionsToKeep: intp(-2)},
		"ephemeral origin":    {Name: "private", SaveOnStop: true, RW: true, Ephemeral: boolp(true)},
		"ephemeral read-only": {Name: "volatile", Ephemeral: boolp(true)},
		"bad name":            {Name: "../x"},
		"empty name":          {},
	}
	for what, c := range bad {
		assert.ErrorIs(t, c.Validate(), ErrInvalidConfig, what)
	}
	assert.EqualError(t, VolumeConfig{Name: "root", SnapOnStart: true}.Validate(),
		`invalid configuration: snap_on_start specified on "root" but no volume source set`)
}

func TestKind(t *testing.T) {
	assert.Equal(t, Volatile, VolumeConfig{}.Kind())
	assert.Equal(t, Snapshot, VolumeConfig{SnapOnStart: true}.Kind())
	assert.Equal(t, Origin, VolumeConfig{SaveOnStop: true}.Kind())
	assert.Equal(t, SnapshotCommit, VolumeConfig{SnapOnStart: true, SaveOnStop: true}.Kind())
	assert.Equal(t, "origin_snapshot", SnapshotCommit.String())
	assert.True(t, VolumeConfig{SaveOnStop: true, RevisionsToKeep: intp(-1)}.SnapshotsDisabled())
	assert.False(t, VolumeConfig{SaveOnStop: true, SnapOnStart: true, RevisionsToKeep: intp(-1)}.SnapshotsDisabled())
	assert.False(t, VolumeConfig{SaveOnStop: true}.SnapshotsDisabled())
}

func TestError(t *testing.T) {
	err := &Error{Op: "revert", Pool: "p", VID: "appvms/a/private", Err: ErrDirty}
	assert.Equal(t, "pool p: revert appvms/a/private: volume is not cleanly stopped", err.Error())
	assert.True(t, errors.Is(err, ErrDirty))
	var se *Error
	assert.True(t, errors.As(error(err), &se))
	assert.Equal(t, "setup: boom", (&Error{Op: "setup", Err: errors.New("boom")}).Error())
}
