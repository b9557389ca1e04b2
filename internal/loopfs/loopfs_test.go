package loopfs

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/fsutil"
)

func TestMount(t *testing.T) {
	for _, typ := range []Type{Btrfs, XFS, Ext4} {
		t.Run(string(typ), func(t *testing.T) {
			t.Parallel()
			dir := Mount(t, typ, 128<<20)
			got, err := fsutil.FSType(dir)
			require.NoError(t, err)
			assert.Equal(t, string(typ), got)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o600))
			ok, err := fsutil.ReflinkSupported(dir)
			require.NoError(t, err)
			assert.Equal(t, typ != Ext4, ok, "reflink support on %s", typ)
		})
	}
}
