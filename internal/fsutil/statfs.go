package fsutil

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// FSType returns the name of the filesystem path lives on: "btrfs", "xfs",
// "ext4", "tmpfs", or "0x<magic>" for others.
func FSType(path string) (string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "", fmt.Errorf("statfs %s: %w", path, err)
	}
	switch uint32(st.Type) {
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs", nil
	case unix.XFS_SUPER_MAGIC:
		return "xfs", nil
	case unix.EXT4_SUPER_MAGIC:
		return "ext4", nil
	case unix.TMPFS_MAGIC:
		return "tmpfs", nil
	}
	return fmt.Sprintf("%#x", uint32(st.Type)), nil
}

// Usage returns the size and the used bytes of the filesystem path lives
// on, as Qubes computes them: f_frsize*f_blocks and
// f_frsize*(f_blocks-f_bfree).
func Usage(path string) (size, used int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Frsize * int64(st.Blocks), st.Frsize * int64(st.Blocks-st.Bfree), nil
}

// Syncfs flushes the whole filesystem path lives on, including work the
// filesystem does in the background (XFS frees clones' extents later).
func Syncfs(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("syncfs %s: %w", path, err)
	}
	return nil
}
