package fsutil

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// PunchHole deallocates length bytes of f at off, keeping its size: what a
// VM's discard does to a sparse image.
func PunchHole(f *os.File, off, length int64) error {
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length); err != nil {
		return &os.PathError{Op: "punch hole", Path: f.Name(), Err: err}
	}
	return nil
}

// Allocated returns the bytes allocated to the file described by fi
// (st_blocks * 512).
func Allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return 0
}
