package file

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// mapperDir is where device-mapper device nodes live.
const mapperDir = "/dev/mapper/"

// devID returns Qubes' _dev_path of a regular file: its device number in
// hexadecimal and its inode number in decimal, "<dev>:<ino>" (what
// create-snapshot's stat --printf=%D:%i prints). A symlink is not
// followed: it is no regular file.
func devID(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return "", &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", fmt.Errorf("%s is not a regular file", path)
	}
	return fmt.Sprintf("%x:%d", st.Dev, st.Ino), nil
}

// devNames returns the devIDs of paths joined with "-".
func devNames(paths ...string) (string, error) {
	ids := make([]string, len(paths))
	for i, p := range paths {
		id, err := devID(p)
		if err != nil {
			return "", err
		}
		ids[i] = id
	}
	return strings.Join(ids, "-"), nil
}

// originPath is the device an origin's VM gets: /dev/mapper/origin-<img>.
func originPath(img string) (string, error) {
	id, err := devID(img)
	if err != nil {
		return "", err
	}
	return mapperDir + "origin-" + id, nil
}

// exceptionPath is the dm-snapshot device that keeps img's old chunks in
// cow: /dev/mapper/snapshot-<img>-<cow>.
func exceptionPath(img, cow string) (string, error) {
	ids, err := devNames(img, cow)
	if err != nil {
		return "", err
	}
	return mapperDir + "snapshot-" + ids, nil
}

// snapshotPath is the device a snapshot volume's VM gets:
// /dev/mapper/snapshot-<source img>-<source cow>-<own cow>.
func snapshotPath(img, srcCow, cow string) (string, error) {
	ids, err := devNames(img, srcCow, cow)
	if err != nil {
		return "", err
	}
	return mapperDir + "snapshot-" + ids, nil
}
