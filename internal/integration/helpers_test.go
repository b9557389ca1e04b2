package integration

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	_ "github.com/vmpool/vmpool/file" // registers "file"
	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/internal/testenv"
	"github.com/vmpool/vmpool/pool"
	_ "github.com/vmpool/vmpool/reflink" // registers "file-reflink"
	"github.com/vmpool/vmpool/storage"
)

const chunk = 128 << 10 // the file driver's dm-snapshot chunk

func keep(n int) *int { return &n }

// fsCase is a filesystem a test runs on, and the file-reflink parameters
// it needs there.
type fsCase struct {
	name   string
	typ    loopfs.Type // "" for the test's temporary directory
	params map[string]string
}

var fsCases = []fsCase{
	{"btrfs", loopfs.Btrfs, nil},
	{"xfs", loopfs.XFS, nil},
	{"ext4", loopfs.Ext4, map[string]string{"setup_check": "no"}},
	{"tempdir", "", map[string]string{"setup_check": "no"}},
}

// onEachFS runs test on a fresh directory of each filesystem of fsCases
// (loop-mounted, as root) and in a temporary directory (any user).
func onEachFS(t *testing.T, test func(t *testing.T, base string, fc fsCase)) {
	for _, fc := range fsCases {
		t.Run(fc.name, func(t *testing.T) {
			base := t.TempDir()
			if fc.typ != "" {
				testenv.RequireRoot(t)
				size := int64(160 << 20)
				if fc.typ == loopfs.XFS {
					size = loopfs.MinXFSSize
				}
				base = loopfs.Mount(t, fc.typ, size)
			}
			test(t, base, fc)
		})
	}
}

// openManager opens a Manager on a state directory of the test.
func openManager(t *testing.T, state string) *pool.Manager {
	t.Helper()
	m, err := pool.OpenManager(t.Context(), state, pool.ManagerOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := m.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
			t.Errorf("close manager: %v", err)
		}
	})
	return m
}

// pattern returns n bytes of tag-derived data, distinct per chunk.
func pattern(tag byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = tag ^ byte(i/chunk) ^ byte(i>>3)
	}
	return b
}

// importBytes replaces the data of a stopped volume with data.
func importBytes(t *testing.T, m *pool.Manager, vm, name string, data []byte) {
	t.Helper()
	require.NoError(t, m.ImportData(t.Context(), vm, name, bytes.NewReader(data), int64(len(data))))
}

// imageSums returns the SHA-256 of every image (*.img) under dir by
// relative path.
func imageSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".img") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		rel, _ := filepath.Rel(dir, path)
		sums[rel] = hex.EncodeToString(sum[:])
		return nil
	}))
	return sums
}

// treeFiles lists the files under dir, relative.
func treeFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, rel)
		return nil
	}))
	return out
}

func stateBytes(t *testing.T, state string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, pool.StateFile))
	require.NoError(t, err)
	return string(b)
}

// readRunning reads n bytes at off of a running volume's device.
func readRunning(t *testing.T, v storage.Volume, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(v.BlockDevice().Path)
	require.NoError(t, err)
	defer f.Close()
	b := make([]byte, n)
	_, err = f.ReadAt(b, off)
	require.NoError(t, err)
	return b
}

// writeRunning writes data at off of a running volume's device.
func writeRunning(t *testing.T, v storage.Volume, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(v.BlockDevice().Path, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(data, off)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}
