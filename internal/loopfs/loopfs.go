// Package loopfs gives tests a real filesystem of their own: a sparse
// image file on a loop device (continuity's testutil/loopback), formatted
// as btrfs, XFS (with reflink) or ext4 and mounted in a temporary
// directory. Everything is undone in t.Cleanup: unmount, detach the loop
// device by its name, remove the image.
package loopfs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/containerd/continuity/testutil/loopback"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/testenv"
)

// Type is a filesystem type Mount can make.
type Type string

// The filesystems vmpool is tested on.
const (
	Btrfs Type = "btrfs"
	XFS   Type = "xfs"
	Ext4  Type = "ext4"
)

// MinXFSSize is the smallest image mkfs.xfs accepts with its defaults.
const MinXFSSize = 300 << 20

func (typ Type) mkfs() (string, []string) {
	switch typ {
	case Btrfs:
		return "mkfs.btrfs", []string{"-q", "-f"}
	case XFS:
		return "mkfs.xfs", []string{"-q", "-f", "-m", "reflink=1"}
	case Ext4:
		return "mkfs.ext4", []string{"-q", "-F"}
	}
	return "", nil
}

// Mount makes a typ filesystem of size bytes on a loop device, mounts it
// and returns the mount point. It needs root and the mkfs tool; without
// them it skips t, or fails it under VMPOOL_REQUIRE=all. It checks with
// statfs that the mount point really is a typ filesystem.
func Mount(t testing.TB, typ Type, size int64) string {
	t.Helper()
	mkfs, args := typ.mkfs()
	if mkfs == "" {
		t.Fatalf("loopfs: unknown filesystem %q", typ)
	}
	if typ == XFS && size < MinXFSSize {
		size = MinXFSSize
	}
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, "losetup", "mount", "umount", mkfs)

	lo, err := loopback.New(size)
	if err != nil {
		t.Fatalf("loopfs: %v", err)
	}
	t.Cleanup(func() {
		if err := lo.Close(); err != nil {
			t.Errorf("loopfs: detach %s: %v", lo.Device, err)
		}
	})
	if err := run(mkfs, append(args, lo.Device)...); err != nil {
		t.Fatalf("loopfs: %v", err)
	}
	dir, err := os.MkdirTemp("", "vmpool-"+string(typ)+"-")
	if err != nil {
		t.Fatalf("loopfs: %v", err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	if err := run("mount", lo.Device, dir); err != nil {
		t.Fatalf("loopfs: %v", err)
	}
	t.Cleanup(func() {
		if err := run("umount", dir); err != nil {
			t.Errorf("loopfs: %v", err)
		}
	})
	got, err := fsutil.FSType(dir)
	if err != nil {
		t.Fatalf("loopfs: %v", err)
	}
	if got != string(typ) {
		t.Fatalf("loopfs: %s is %s, want %s", dir, got, typ)
	}
	return dir
}

func run(name string, args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %v: %w: %s", name, args, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}
