package storagetest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// writeImage makes a file of size bytes holding c's blocks; explicit
// writes zeros where c has none instead of leaving holes.
func writeImage(t *testing.T, c content, explicit bool) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "img"))
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	require.NoError(t, f.Truncate(c.size))
	if explicit {
		_, err := f.WriteAt(make([]byte, c.size), 0)
		require.NoError(t, err)
	}
	for off, tag := range c.blocks {
		_, err := f.WriteAt(block(tag, off), off)
		require.NoError(t, err)
	}
	return f
}

func TestReadImage(t *testing.T) {
	want := zeros(8*mib).with(0, 1).with(3*mib+blockSize, 2).with(8*mib-blockSize, 3)
	sparse, err := readImage(writeImage(t, want, false))
	require.NoError(t, err)
	assert.True(t, checkContent(t, sparse, want, "sparse file"))
	full, err := readImage(writeImage(t, want, true))
	require.NoError(t, err)
	assert.True(t, checkContent(t, full, want, "file without holes"))
	assert.Equal(t, sparse.hash(), full.hash(), "the hash does not depend on holes")

	other, err := readImage(writeImage(t, want.with(0, 4), false))
	require.NoError(t, err)
	assert.NotEqual(t, sparse.hash(), other.hash())
	var rec recorder
	assert.False(t, checkContent(&rec, other, want, "different data"))
	assert.False(t, checkContent(&rec, sparse, want.resized(4*mib), "different size"))
	assert.Equal(t, 2, rec.errors)
}

func TestContentResized(t *testing.T) {
	c := zeros(8*mib).with(0, 1).with(6*mib, 2)
	assert.Equal(t, map[int64]byte{0: 1}, c.resized(4*mib).blocks)
	assert.Equal(t, int64(16*mib), c.resized(16*mib).size)
	assert.Len(t, c.blocks, 2, "resized does not change c")
}

func TestNameOf(t *testing.T) {
	assert.Equal(t, "private", nameOf("appvms/work/private"))
	assert.Equal(t, "root", nameOf("vg/vm-tpl-root"))
	assert.Equal(t, "", nameOf("appvms/a/b\x00"))
}

// recorder counts the failures reported to it.
type recorder struct{ errors int }

func (r *recorder) Errorf(string, ...any) { r.errors++ }
func (r *recorder) Helper()               {}
