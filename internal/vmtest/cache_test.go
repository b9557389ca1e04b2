package vmtest

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/testenv"
)

func TestNaturalLess(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"linux-image-6.1.0-9-amd64", "linux-image-6.1.0-10-amd64", true},
		{"linux-image-6.1.0-10-amd64", "linux-image-6.1.0-9-amd64", false},
		{"linux-image-6.1.0-57-amd64", "linux-image-6.12.57+deb13-amd64", true},
		{"a", "a", false},
		{"a", "ab", true},
		{"a01", "a1", false},
		{"a1", "a01", false},
	} {
		assert.Equal(t, tc.want, naturalLess(tc.a, tc.b), "%s < %s", tc.a, tc.b)
	}
}

func TestDebianOutput(t *testing.T) {
	stanza := []byte("Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\nDepends: libc6\n")
	assert.Equal(t, "1:1.35.0-4+deb12u1+b1", debField(stanza, "Version"))
	assert.Equal(t, "", debField(stanza, "Size"))
	assert.Equal(t, "busybox-static_1_1.35.0-4+deb12u1+b1", cacheName("busybox-static", "1:1.35.0-4+deb12u1+b1"))

	depends := []byte("linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n  Depends: linux-image-6.1.0-57-amd64-dbg\n")
	m := kernelDependsRE.FindSubmatch(depends)
	require.NotNil(t, m)
	assert.Equal(t, "linux-image-6.1.0-57-amd64", string(m[1]))
	assert.Nil(t, kernelDependsRE.FindSubmatch([]byte("  Depends: linux-image-6.1.0-57-cloud-amd64x\n")))
}

func TestBzPayload(t *testing.T) {
	img := make([]byte, 4096)
	img[0x1f1] = 3 // setup sectors: protected-mode code at 4*512
	copy(img[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(img[0x206:], 0x20f)
	binary.LittleEndian.PutUint32(img[0x248:], 100)
	binary.LittleEndian.PutUint32(img[0x24c:], 6)
	copy(img[2048+100:], "\xfd7zXZ\x00")
	p, err := bzPayload(img)
	require.NoError(t, err)
	assert.Equal(t, []byte("\xfd7zXZ\x00"), p)

	binary.LittleEndian.PutUint32(img[0x24c:], 4096)
	_, err = bzPayload(img)
	assert.ErrorContains(t, err, "out of range")
	binary.LittleEndian.PutUint32(img[0x248:], 0xffffffff)
	_, err = bzPayload(img)
	assert.ErrorContains(t, err, "out of range")
	_, err = bzPayload(img[:0x240])
	assert.ErrorContains(t, err, "not a bzImage")
	binary.LittleEndian.PutUint16(img[0x206:], 0x205)
	_, err = bzPayload(img)
	assert.ErrorContains(t, err, "older than 2.08")
}

// TestCachedKernel checks what the cache holds after a download: an ELF
// vmlinux (unpacked from the bzImage's payload, found through its
// header) or the bzImage, and uncompressed modules.
func TestCachedKernel(t *testing.T) {
	a := requireAssets(t)
	f, err := os.Open(a.image())
	require.NoError(t, err)
	head := make([]byte, 0x250)
	_, err = io.ReadFull(f, head)
	f.Close()
	require.NoError(t, err)
	if filepath.Base(a.image()) == "vmlinux" {
		assert.Equal(t, "\x7fELF", string(head[:4]))
	} else {
		why, _ := os.ReadFile(filepath.Join(a.cache, a.KernelDir, "vmlinux.skipped"))
		t.Logf("no vmlinux (%s): the bzImage boots", bytes.TrimSpace(why))
		assert.Equal(t, "HdrS", string(head[0x202:0x206]))
	}
	mods, err := filepath.Glob(filepath.Join(a.modules(), "*"))
	require.NoError(t, err)
	assert.Greater(t, len(mods), 50)
	for _, m := range mods {
		assert.Equal(t, ".ko", filepath.Ext(m), m)
	}
	for _, m := range []string{"dm_thin_pool", "dm_crypt", "ext4", "btrfs", "xfs"} {
		_, err = readModinfo(filepath.Join(a.modules(), m+".ko"))
		assert.NoError(t, err)
	}
}

// fakeCache makes a cache that a completed download would have left,
// with empty files.
func fakeCache(t *testing.T) string {
	t.Helper()
	cache := t.TempDir()
	k := filepath.Join(cache, "linux-image-6.1.0-1-amd64_6.1.1-1")
	b := filepath.Join(cache, "busybox-static_1_1.0-1")
	require.NoError(t, os.MkdirAll(filepath.Join(k, "modules"), 0o755))
	require.NoError(t, os.MkdirAll(b, 0o755))
	for _, f := range []string{filepath.Join(k, "vmlinuz"), filepath.Join(b, "busybox")} {
		require.NoError(t, os.WriteFile(f, nil, 0o644))
	}
	for _, f := range []string{filepath.Join(k, completeFile), filepath.Join(b, completeFile)} {
		require.NoError(t, os.WriteFile(f, []byte(cacheLayout+"\nx.deb\n"), 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(cache, currentFile),
		[]byte(`{"kernel": "linux-image-6.1.0-1-amd64_6.1.1-1", "busybox": "busybox-static_1_1.0-1"}`), 0o644))
	return cache
}

// TestPrepareOffline checks that a complete cache is used as it is: no
// apt (PATH is empty), no lock.
func TestPrepareOffline(t *testing.T) {
	cache := fakeCache(t)
	t.Setenv(EnvCache, cache)
	t.Setenv(EnvRefresh, "")
	t.Setenv(EnvKernelPackage, "")
	t.Setenv("PATH", "")
	a, err := prepare(t.Context())
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(cache, "linux-image-6.1.0-1-amd64_6.1.1-1", "vmlinuz"), a.image())
	assert.Equal(t, filepath.Join(cache, "busybox-static_1_1.0-1", "busybox"), a.busyboxPath())
}

// TestPrepareLocks checks that a cache that needs a download is locked:
// with another process holding the lock, prepare waits for it, until its
// context ends, and downloads nothing.
func TestPrepareLocks(t *testing.T) {
	testenv.RequireCommand(t, "flock")
	cache := fakeCache(t)
	// An entry of an older layout is fetched again.
	require.NoError(t, os.WriteFile(filepath.Join(cache, "busybox-static_1_1.0-1", completeFile), []byte("x.deb\n"), 0o644))
	t.Setenv(EnvCache, cache)
	t.Setenv(EnvRefresh, "")
	t.Setenv(EnvKernelPackage, "")
	testenv.HoldLock(t, cache)
	t.Setenv("PATH", "") // after HoldLock started flock: a download would fail at once, not wait
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := prepare(ctx)
	assert.ErrorIs(t, err, fsutil.ErrLocked)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	data, err := os.ReadFile(filepath.Join(cache, "busybox-static_1_1.0-1", completeFile))
	require.NoError(t, err)
	assert.Equal(t, "x.deb\n", string(data), "the entry was left alone")
}

// TestPrepareRemovesLeftovers checks that a preparation removes what a
// killed one left (with apt missing, it fails after that).
func TestPrepareRemovesLeftovers(t *testing.T) {
	cache := fakeCache(t)
	require.NoError(t, os.Remove(filepath.Join(cache, currentFile)))
	left := filepath.Join(cache, ".tmp-123", "entry")
	require.NoError(t, os.MkdirAll(left, 0o755))
	t.Setenv(EnvCache, cache)
	t.Setenv(EnvRefresh, "")
	t.Setenv(EnvKernelPackage, "")
	t.Setenv("PATH", "")
	_, err := prepare(t.Context())
	assert.ErrorContains(t, err, "apt-get")
	assert.NoDirExists(t, filepath.Join(cache, ".tmp-123"))
	assert.DirExists(t, filepath.Join(cache, "busybox-static_1_1.0-1"))
}

func TestReadCurrentRefuses(t *testing.T) {
	for _, data := range []string{
		`{`,
		`{"kernel": "", "busybox": "b"}`,
		`{"kernel": "../k", "busybox": "b"}`,
		`{"kernel": "k", "busybox": "/b"}`,
	} {
		cache := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(cache, currentFile), []byte(data), 0o644))
		_, err := readCurrent(cache)
		assert.Error(t, err, data)
	}
}
