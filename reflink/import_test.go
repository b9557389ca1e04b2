package reflink

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/internal/testenv"
	"github.com/vmpool/vmpool/storage"
)

// exportedVolume is a volume of another driver whose Export gives a
// path that is not a regular file, as lvm_thin's device nodes are.
type exportedVolume struct {
	storage.Volume // nothing else is called
	path           string
	ended          bool
}

func (e *exportedVolume) Config() storage.VolumeConfig {
	return storage.VolumeConfig{Name: "private", VID: "vg/vm-src-private", SaveOnStop: true, RW: true}
}
func (e *exportedVolume) IsRunning(context.Context) (bool, error)     { return false, nil }
func (e *exportedVolume) Export(context.Context) (string, error)      { return e.path, nil }
func (e *exportedVolume) ExportEnd(_ context.Context, _ string) error { e.ended = true; return nil }

// importData is 9 MiB: random data with written zeros from 3 to 6 MiB.
func importData() []byte {
	data := make([]byte, 9<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		if i < 3<<20 || i >= 6<<20 {
			data[i] = byte(r.Uint32())
		}
	}
	return data
}

// TestImportVolumeFromDevice: ImportVolume from a volume whose export is
// a block device or a FIFO imports all its bytes (the length from what
// was read, a block device's from its size), byte for byte, its zeros as
// holes; a zero-filled regular file from another filesystem imports as
// holes.
func TestImportVolumeFromDevice(t *testing.T) {
	ctx := t.Context()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "losetup")
	tp := newTestPool(t, loopfs.Ext4, map[string]string{"setup_check": "no"})
	data := importData()
	check := func(v *volume, want []byte, what string) {
		t.Helper()
		got, err := os.ReadFile(v.clean)
		require.NoError(t, err)
		assert.Equal(t, len(want), len(got), "%s: size", what)
		assert.True(t, bytes.Equal(want, got), "%s: content", what)
		assert.Equal(t, int64(len(want)), v.Config().Size, "%s: the size follows", what)
		st, err := os.Stat(v.clean)
		require.NoError(t, err)
		var nonzero int64
		for off := 0; off < len(want); off += 4096 {
			if !bytes.Equal(want[off:min(off+4096, len(want))], make([]byte, min(4096, len(want)-off))) {
				nonzero += 4096
			}
		}
		assert.LessOrEqual(t, fsutil.Allocated(st), nonzero+64<<10, "%s: zeros are holes", what)
	}
	newVolume := func(vm string) *volume {
		v := tp.volume(t, storage.VolumeConfig{VID: "appvms/" + vm + "/private", SaveOnStop: true, RW: true, Size: 1 << 20})
		require.NoError(t, v.Create(ctx))
		return v
	}

	// A block device: a loop device over a file outside the pool.
	backing := filepath.Join(t.TempDir(), "backing")
	require.NoError(t, os.WriteFile(backing, data, 0o600))
	out, err := exec.Command("losetup", "--find", "--show", backing).Output()
	require.NoError(t, err)
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "--detach", dev).Run() })
	v := newVolume("fromdev")
	src := &exportedVolume{path: dev}
	require.NoError(t, v.ImportVolume(ctx, src))
	assert.True(t, src.ended, "ExportEnd is called")
	check(v, data, "block device")

	// A FIFO, fed by a writer.
	fifo := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, unix.Mkfifo(fifo, 0o600))
	done := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.Write(data)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		done <- err
	}()
	v = newVolume("fromfifo")
	require.NoError(t, v.ImportVolume(ctx, &exportedVolume{path: fifo}))
	require.NoError(t, <-done)
	check(v, data, "FIFO")

	// A regular file of written zeros and some data, on another
	// filesystem (so no reflink).
	zeros := make([]byte, 9<<20)
	copy(zeros[8<<20:], data[:1<<20])
	file := filepath.Join(t.TempDir(), "zeros")
	require.NoError(t, os.WriteFile(file, zeros, 0o600))
	v = newVolume("fromfile")
	require.NoError(t, v.ImportVolume(ctx, &exportedVolume{path: file}))
	check(v, zeros, "zero-filled file")
}
