package pool_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

// TestErrorsSayEachFactOnce: an error of a volume's driver, passed on by
// the Manager, names the pool, the operation and the vid once, and its
// causes stay testable with errors.Is.
func TestErrorsSayEachFactOnce(t *testing.T) {
	ctx := t.Context()
	base := t.TempDir()
	poolDir := filepath.Join(base, "pool")
	m := reflinkManager(t, filepath.Join(base, "state"), poolDir)
	defer func() { require.NoError(t, m.Close()) }()
	_, err := m.CreateVolume(ctx, "work", storage.VolumeConfig{Name: "private", Pool: "p", VID: "appvms/work/private", Size: recSize, RW: true, SaveOnStop: true})
	require.NoError(t, err)
	require.NoError(t, m.StartVM(ctx, "work"))
	err = m.RevertVolume(ctx, "work", "private", "")
	require.ErrorIs(t, err, storage.ErrDirty)
	assert.EqualError(t, err, "pool p: revert appvms/work/private: volume is not cleanly stopped")
	require.NoError(t, m.StopVM(ctx, "work"))

	err = m.ResizeVolume(ctx, "work", "private", recSize/2, storage.ResizeOptions{})
	require.ErrorIs(t, err, storage.ErrShrink)
	assert.Equal(t, 1, strings.Count(err.Error(), "appvms/work/private"), "%v", err)

	err = m.RevertVolume(ctx, "work", "private", "7")
	require.ErrorIs(t, err, storage.ErrNotFound)
	assert.EqualError(t, err, `pool p: revert appvms/work/private: revision "7": not found`)

	err = m.RevertVolume(ctx, "nosuch", "private", "")
	require.ErrorIs(t, err, storage.ErrNotFound)
	assert.EqualError(t, err, `revert volume private of VM nosuch: no VM "nosuch": not found`)

	// A missing image: the driver's error wraps both ErrNotFound and the
	// file system's error.
	require.NoError(t, os.Remove(filepath.Join(poolDir, "appvms", "work", "private.img")))
	v := vol(t, m, "work", "private")
	err = v.Start(ctx)
	assert.ErrorIs(t, err, storage.ErrNotFound)
	assert.ErrorIs(t, err, fs.ErrNotExist)
}
