package block

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/devices"
	"github.com/vmpool/vmpool/internal/testenv"
)

// newLoop binds a real loop device to a fresh sparse file of size bytes
// and detaches it, by name, when the test ends. It returns the loop
// device's name and its backing file.
func newLoop(t *testing.T, size int64, readOnly bool) (name, backing string) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "losetup")
	backing = filepath.Join(t.TempDir(), "disk.img")
	require.NoError(t, os.WriteFile(backing, nil, 0o600))
	require.NoError(t, os.Truncate(backing, size))
	args := []string{"--find", "--show"}
	if readOnly {
		args = append(args, "--read-only")
	}
	out, err := exec.Command("losetup", append(args, backing)...).CombinedOutput()
	require.NoError(t, err, "losetup: %s", out)
	dev := strings.TrimSpace(string(out))
	require.True(t, strings.HasPrefix(dev, "/dev/loop"), "losetup printed %q", dev)
	t.Cleanup(func() { detachLoop(t, dev, backing) })
	return filepath.Base(dev), backing
}

// detachLoop detaches dev if it is still bound to backing (after an
// early detach, the name may already belong to someone else's loop).
func detachLoop(t *testing.T, dev, backing string) {
	t.Helper()
	if l, err := ReadLoop("/sys", filepath.Base(dev)); err != nil || l.BackingFile != backing {
		return
	}
	if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
		t.Errorf("losetup -d %s: %v: %s", dev, err, out)
	}
}

func exposedByName(t *testing.T, m *devices.Manager) map[string]devices.Device {
	t.Helper()
	list, err := m.Exposed("dom0", Class)
	require.NoError(t, err)
	out := map[string]devices.Device{}
	for _, d := range list {
		out[d.Port().ID] = d
	}
	return out
}

// TestLoopDevices runs the block bus over real loop devices of this host.
func TestLoopDevices(t *testing.T) {
	rw, rwFile := newLoop(t, 1<<20, false)
	ro, roFile := newLoop(t, 2<<20, true)
	ctx := context.Background()
	b := New(Options{})
	m := newManager(t, b)

	t.Run("exposed_from_sysfs", func(t *testing.T) {
		exposed := exposedByName(t, m)
		require.Contains(t, exposed, rw)
		require.Contains(t, exposed, ro)
		assert.Equal(t, map[string]string{"backing_file": rwFile, "size": "1048576", "mode": "w"}, exposed[rw].Data())
		assert.Equal(t, map[string]string{"backing_file": roFile, "size": "2097152", "mode": "r"}, exposed[ro].Data())
		assert.Equal(t, rwFile, exposed[rw].Name())
		l, err := ReadLoop("/sys", rw)
		require.NoError(t, err)
		assert.Equal(t, Loop{Name: rw, BackingFile: rwFile, Size: 1 << 20}, l)
	})

	t.Run("size_is_read_on_access", func(t *testing.T) {
		dev, err := m.Device("dom0", Class, rw)
		require.NoError(t, err)
		require.NoError(t, os.Truncate(rwFile, 3<<20))
		out, err := exec.Command("losetup", "-c", "/dev/"+rw).CombinedOutput()
		require.NoError(t, err, "losetup -c: %s", out)
		assert.Equal(t, strconv.Itoa(3<<20), dev.Data()["size"], "the same Device value sees the new size")
	})

	t.Run("attach_detach", func(t *testing.T) {
		a := loopAssignment(rw, nil)
		require.NoError(t, m.Attach(ctx, "work", a))
		dev, err := m.Device("dom0", Class, rw)
		require.NoError(t, err)
		assert.Equal(t, "work", dev.Attachment())
		at, err := m.Attached("work", Class)
		require.NoError(t, err)
		require.Len(t, at, 1)
		assert.Equal(t, map[string]string{"read-only": "no", "frontend-dev": "xvdi"}, at[0].Options)

		assert.ErrorIs(t, m.Attach(ctx, "work", a), devices.ErrAlreadyAttached)
		assert.ErrorIs(t, m.Attach(ctx, "other", a), devices.ErrAlreadyAttached)
		assert.ErrorIs(t, m.Attach(ctx, "tmp", a), devices.ErrNotRunning)

		require.NoError(t, m.Detach(ctx, "work", a.Device.Port))
		assert.Equal(t, "", dev.Attachment())
		assert.ErrorIs(t, m.Detach(ctx, "work", a.Device.Port), devices.ErrNotAssigned)
	})

	t.Run("read_only_loop", func(t *testing.T) {
		assert.ErrorIs(t, m.Attach(ctx, "work", loopAssignment(ro, map[string]string{"read-only": "no"})), ErrReadOnly)
		require.NoError(t, m.Attach(ctx, "work", loopAssignment(ro, nil)))
		at, _ := m.Attached("work", Class)
		require.Len(t, at, 1)
		assert.Equal(t, "yes", at[0].Options["read-only"])
		require.NoError(t, m.Detach(ctx, "work", at[0].Device.Port))
	})

	t.Run("required_assignment", func(t *testing.T) {
		a := loopAssignment(rw, nil)
		a.Mode = devices.Required
		require.NoError(t, m.Assign(ctx, "work", a))
		require.NoError(t, m.Attach(ctx, "work", a))
		assert.ErrorIs(t, m.Detach(ctx, "work", a.Device.Port), devices.ErrNotHalted)
		require.NoError(t, m.Unassign(ctx, "work", a.Device))
		require.NoError(t, m.Detach(ctx, "work", a.Device.Port))
	})

	t.Run("vanished_loop_stays_detachable", func(t *testing.T) {
		name, file := newLoop(t, 1<<20, false)
		a := loopAssignment(name, nil)
		require.NoError(t, m.Attach(ctx, "work", a))
		detachLoop(t, "/dev/"+name, file)

		dev, err := m.Device("dom0", Class, name)
		require.NoError(t, err)
		assert.True(t, dev.Unknown())
		at, err := m.Attached("work", Class)
		require.NoError(t, err)
		require.Len(t, at, 1)
		assert.Equal(t, name, at[0].Device.Port.ID)
		require.NoError(t, m.Detach(ctx, "work", a.Device.Port))
		assert.ErrorIs(t, m.Attach(ctx, "work", a), devices.ErrUnknownDevice)
		assert.NotContains(t, exposedByName(t, m), name)
	})
}
