package fsutil

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// sysBlock is where the kernel lists block devices; a variable for tests.
var sysBlock = "/sys/block"

// UpdateLoopCapacity tells every loop device backed by the file at path
// that the file's size changed (LOOP_SET_CAPACITY), as Qubes does after
// resizing a running image. It returns the devices it updated.
func UpdateLoopCapacity(path string) ([]string, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, err
	}
	if real, err = filepath.Abs(real); err != nil {
		return nil, err
	}
	backing, _ := filepath.Glob(filepath.Join(sysBlock, "loop[0-9]*", "loop", "backing_file"))
	var updated []string
	for _, b := range backing {
		got, err := os.ReadFile(b)
		if err != nil || !bytes.Equal(bytes.TrimSuffix(got, []byte("\n")), []byte(real)) {
			continue // detached meanwhile, or another file
		}
		dev := "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(b)))
		if err := setCapacity(dev); err != nil {
			return updated, err
		}
		updated = append(updated, dev)
	}
	return updated, nil
}

func setCapacity(dev string) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := unix.IoctlRetInt(int(f.Fd()), unix.LOOP_SET_CAPACITY); err != nil {
		return fmt.Errorf("LOOP_SET_CAPACITY %s: %w", dev, err)
	}
	return nil
}
