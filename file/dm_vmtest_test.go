//go:build vmtest

package file

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/testenv"
	"github.com/vmpool/vmpool/storage"
	"github.com/vmpool/vmpool/storage/storagetest"
)

// These tests run the real block layer (losetup, dmsetup, the kernel's
// dm-snapshot) and need root and device-mapper: build them with -tags
// vmtest and run the binary in the VM of internal/vmtest.

// requireDM skips (fails with VMPOOL_REQUIRE=all) without root, the tools
// or device-mapper.
func requireDM(t *testing.T) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "losetup", "dmsetup", "blockdev")
	_, err := os.Stat("/dev/mapper/control")
	testenv.Need(t, err == nil, "device-mapper", "the file driver's devices are dm-snapshot devices")
}

// cleanupDM removes, after a test, the devices and loop devices left on
// the images below dir (by volumes a test left running, as the suite's
// crash cases do).
func cleanupDM(t *testing.T, dir string) {
	t.Cleanup(func() {
		ctx := context.Background()
		var files []string
		filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() && strings.Contains(filepath.Base(path), ".img") {
				files = append(files, path)
			}
			return nil
		})
		for _, f := range files {
			id, err := devID(f)
			if err != nil {
				continue
			}
			three, _ := filepath.Glob(mapperDir + "snapshot-*-*-" + id)
			for _, d := range three {
				dmRemove(ctx, filepath.Base(d))
			}
		}
		for _, f := range files {
			if id, err := devID(f); err == nil {
				dmRemove(ctx, "origin-"+id)
				two, _ := filepath.Glob(mapperDir + "snapshot-" + id + "-*")
				for _, d := range two {
					dmRemove(ctx, filepath.Base(d))
				}
			}
		}
		for _, f := range files {
			for _, l := range loopsOf(t, f) {
				run(ctx, "losetup", "-d", l)
			}
		}
		run(ctx, "dmsetup", "mknodes")
	})
}

// loopsOf returns the loop devices attached to file.
func loopsOf(t *testing.T, file string) []string {
	out, err := run(context.Background(), "losetup", "--associated", file)
	require.NoError(t, err)
	return parseAssociated(out)
}

// ourDevices lists the dm devices named after the files below dir.
func ourDevices(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(mapperDir)
	require.NoError(t, err)
	var ids []string
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			if id, err := devID(path); err == nil {
				ids = append(ids, id)
			}
		}
		return nil
	})
	var out []string
	for _, e := range entries {
		for _, id := range ids {
			if strings.Contains(e.Name(), id) {
				out = append(out, e.Name())
				break
			}
		}
	}
	return out
}

func newDMPool(t *testing.T) *filePool {
	t.Helper()
	requireDM(t)
	dir := filepath.Join(t.TempDir(), "pool")
	cleanupDM(t, dir)
	p, err := Driver{}.open(t.Context(), storage.PoolConfig{Name: "dm", Params: map[string]string{"dir_path": dir}, Logger: zerolog.Nop()}, dmLayer{})
	require.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	require.NoError(t, p.Setup(t.Context()))
	return p
}

func dmVolume(t *testing.T, p *filePool, cfg storage.VolumeConfig) *volume {
	t.Helper()
	v, err := p.InitVolume(cfg)
	require.NoError(t, err)
	require.NoError(t, v.Create(t.Context()))
	return v.(*volume)
}

func writeAtPath(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
}

func readAtPath(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	b := make([]byte, n)
	_, err = f.ReadAt(b, off)
	require.NoError(t, err)
	return b
}

func block(c byte) []byte { return bytes.Repeat([]byte{c}, 4096) }

// TestDMOrigin: an origin's writes land in its image and the old chunks
// in its cow (the exception store device still shows them); the cow is
// clean after the start and dirty after a write; the stop removes every
// device and loop device and keeps the cow as the revision.
func TestDMOrigin(t *testing.T) {
	p := newDMPool(t)
	ctx := t.Context()
	v := dmVolume(t, p, storage.VolumeConfig{VID: "appvms/a/private", Size: 8 * mib, RW: true, SaveOnStop: true})
	writeAtPath(t, v.img, mib, block('A')) // the committed state
	require.NoError(t, v.Start(ctx))
	dev := v.BlockDevice().Path
	want, err := originPath(v.img)
	require.NoError(t, err)
	assert.Equal(t, want, dev)
	assert.True(t, isBlock(dev))
	assert.False(t, must(v.IsDirty(ctx)), "the kernel's empty exception store is clean")
	assert.Equal(t, block('A'), readAtPath(t, dev, mib, 4096))
	writeAtPath(t, dev, mib, block('B'))
	assert.Equal(t, block('B'), readAtPath(t, v.img, mib, 4096), "the write landed in the image")
	exc, err := exceptionPath(v.img, v.cow)
	require.NoError(t, err)
	assert.Equal(t, block('A'), readAtPath(t, exc, mib, 4096), "the old chunk is in the cow")
	assert.True(t, must(v.IsDirty(ctx)))
	assert.Len(t, loopsOf(t, v.img), 1)
	require.NoError(t, v.Stop(ctx))
	assert.Empty(t, ourDevices(t, p.dir), "the stop removes every device")
	assert.Empty(t, loopsOf(t, v.img), "and the loop devices")
	assert.Empty(t, loopsOf(t, v.old))
	assert.True(t, exists(v.old))
	assert.False(t, must(v.IsDirty(ctx)))
	assert.Equal(t, block('B'), readAtPath(t, v.img, mib, 4096))
}

// TestDMSnapshotOfRunningOrigin: a snapshot of a running origin sees the
// origin's committed state, not its VM's writes; the snapshot's writes
// are its own; each stop removes its devices.
func TestDMSnapshotOfRunningOrigin(t *testing.T) {
	p := newDMPool(t)
	ctx := t.Context()
	tpl := dmVolume(t, p, storage.VolumeConfig{VID: "vm-templates/tpl/root", Size: 8 * mib, RW: true, SaveOnStop: true})
	writeAtPath(t, tpl.img, 0, block('A'))
	snap := dmVolume(t, p, storage.VolumeConfig{VID: "appvms/a/root", Size: 8 * mib, RW: true, SnapOnStart: true, Source: tpl.cfg.VID})
	require.NoError(t, tpl.Start(ctx))
	writeAtPath(t, tpl.BlockDevice().Path, 0, block('B'))
	require.NoError(t, snap.Start(ctx))
	sdev := snap.BlockDevice().Path
	want, err := snapshotPath(tpl.img, tpl.cow, snap.cow)
	require.NoError(t, err)
	assert.Equal(t, want, sdev)
	assert.Equal(t, block('A'), readAtPath(t, sdev, 0, 4096), "the snapshot sees the committed state")
	writeAtPath(t, sdev, 0, block('C'))
	assert.Equal(t, block('B'), readAtPath(t, tpl.BlockDevice().Path, 0, 4096), "the snapshot's writes are its own")
	assert.Equal(t, block('B'), readAtPath(t, tpl.img, 0, 4096))
	require.NoError(t, snap.Stop(ctx))
	assert.False(t, isBlock(sdev))
	assert.True(t, isBlock(tpl.BlockDevice().Path), "the origin runs on")
	writeAtPath(t, tpl.BlockDevice().Path, 4096, block('D'))
	require.NoError(t, tpl.Stop(ctx))
	assert.Empty(t, ourDevices(t, p.dir))
	for _, f := range []string{tpl.img, tpl.cow, tpl.old, snap.cow} {
		assert.Empty(t, loopsOf(t, f), f)
	}
	require.NoError(t, snap.Start(ctx))
	assert.Equal(t, block('B'), readAtPath(t, snap.BlockDevice().Path, 0, 4096), "a restart sees the commit")
	assert.Equal(t, block('D'), readAtPath(t, snap.BlockDevice().Path, 4096, 4096))
	require.NoError(t, snap.Stop(ctx))
	assert.Empty(t, ourDevices(t, p.dir))
}

// TestDMResizeRunning: a running origin grows: the loop device's capacity
// and the origin's table follow (Qubes' test_007_resize_running).
func TestDMResizeRunning(t *testing.T) {
	p := newDMPool(t)
	ctx := t.Context()
	v := dmVolume(t, p, storage.VolumeConfig{VID: "appvms/a/private", Size: 8 * mib, RW: true, SaveOnStop: true})
	require.NoError(t, v.Start(ctx))
	require.NoError(t, v.Resize(ctx, 12*mib, storage.ResizeOptions{}))
	out, err := exec.Command("blockdev", "--getsize64", v.BlockDevice().Path).Output()
	require.NoError(t, err)
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	require.NoError(t, err)
	assert.Equal(t, int64(12*mib), n, "the origin device grew")
	writeAtPath(t, v.BlockDevice().Path, 12*mib-4096, block('E'))
	require.NoError(t, v.Stop(ctx))
	assert.Equal(t, block('E'), readAtPath(t, v.img, 12*mib-4096, 4096))
	assert.Empty(t, ourDevices(t, p.dir))
}

// TestDMSuite runs the conformance suite on the real block layer, in a
// temporary directory.
func TestDMSuite(t *testing.T) {
	requireDM(t)
	dir := t.TempDir()
	cfg := suiteConfig(dir, func(t *testing.T) blockLayer { return dmLayer{} }, nil)
	newPool := cfg.NewPool
	cfg.NewPool = func(t *testing.T) storage.Pool {
		p := newPool(t)
		cleanupDM(t, p.(*filePool).dir)
		return p
	}
	storagetest.Run(t, cfg)
}
