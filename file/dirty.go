package file

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// chunkSectors is the chunk size of the driver's dm-snapshot exception
// stores, in 512-byte sectors: Qubes' create-snapshot passes 256.
const chunkSectors = 256

// emptySnapshot is what the kernel leaves in a new persistent exception
// store, as Qubes' file.py writes it: the header struct.pack('<4I',
// 0x70416e53, 1, 1, 256) of dm-snap-persistent.c's write_header (magic
// "SnAp", valid, version 1, chunk size 256), then zeros, 256 KiB in all.
var emptySnapshot = func() []byte {
	b := make([]byte, 262144)
	copy(b, "SnAp\x01\x00\x00\x00\x01\x00\x00\x00\x00\x01\x00\x00")
	return b
}()

// cowDirty is Qubes' FileVolume.is_dirty on the cow at path: the cow has
// data (SEEK_DATA finds some) and either more bytes allocated than an
// empty exception store, or a first 256 KiB that are not one, or more
// bytes allocated than lie before its first hole. A missing cow is clean.
// The cow is opened without following a symlink.
func cowDirty(path string) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, err
	}
	used := st.Sys().(*syscall.Stat_t).Blocks * 512
	if _, err := f.Seek(0, unix.SEEK_DATA); errors.Is(err, unix.ENXIO) {
		return false, nil // no data at all (empty, or one hole)
	} else if err != nil {
		return false, err
	}
	if used > int64(len(emptySnapshot)) {
		return true, nil
	}
	head := make([]byte, len(emptySnapshot))
	n, err := io.ReadFull(io.NewSectionReader(f, 0, int64(len(head))), head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return false, err
	}
	if !bytes.Equal(head[:n], emptySnapshot) {
		return true, nil
	}
	hole, err := f.Seek(0, unix.SEEK_HOLE)
	if err != nil {
		return false, err
	}
	return used > hole, nil
}
