package vmtest

import (
	"fmt"
	"io"
	"strings"
)

// cpioWriter writes an archive in the "new" portable cpio format (newc,
// magic 070701), the format the Linux kernel unpacks as an initramfs.
// Every header field is eight hexadecimal digits; the header plus the
// name, and the data, are each padded with NULs to a multiple of four
// bytes. Entries are written in the order given, so a directory must come
// before what it holds. The first error sticks and is returned by Close.
type cpioWriter struct {
	w   io.Writer
	ino uint32
	off int64
	err error
}

// Mode bits of the entry types (the file-type part of st_mode).
const (
	cpioDir     = 0o040000
	cpioFile    = 0o100000
	cpioSymlink = 0o120000
	cpioChar    = 0o020000
)

const cpioTrailer = "TRAILER!!!"

func newCPIOWriter(w io.Writer) *cpioWriter { return &cpioWriter{w: w} }

// Dir adds a directory.
func (c *cpioWriter) Dir(name string, perm uint32) {
	c.entry(name, cpioDir|perm&0o7777, 2, 0, 0, nil)
}

// File adds a regular file holding data.
func (c *cpioWriter) File(name string, perm uint32, data []byte) {
	c.entry(name, cpioFile|perm&0o7777, 1, 0, 0, data)
}

// Symlink adds a symbolic link to target.
func (c *cpioWriter) Symlink(name, target string) {
	c.entry(name, cpioSymlink|0o777, 1, 0, 0, []byte(target))
}

// CharDev adds a character device node.
func (c *cpioWriter) CharDev(name string, perm uint32, major, minor uint32) {
	c.entry(name, cpioChar|perm&0o7777, 1, major, minor, nil)
}

// Close writes the trailer entry and returns the first error of any
// write. It does not close the underlying writer.
func (c *cpioWriter) Close() error {
	c.write(cpioTrailer, 0, 1, 0, 0, nil, 0)
	return c.err
}

func (c *cpioWriter) entry(name string, mode, nlink, rmajor, rminor uint32, data []byte) {
	if c.err != nil {
		return
	}
	if err := checkCPIOName(name); err != nil {
		c.err = err
		return
	}
	c.ino++
	c.write(name, mode, nlink, rmajor, rminor, data, c.ino)
}

// checkCPIOName refuses names the kernel would not place where we mean:
// absolute or relative-escaping paths, empty parts, NULs.
func checkCPIOName(name string) error {
	if name == "" || name == cpioTrailer || strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) {
		return fmt.Errorf("cpio: bad entry name %q", name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("cpio: bad entry name %q", name)
		}
	}
	return nil
}

func (c *cpioWriter) write(name string, mode, nlink, rmajor, rminor uint32, data []byte, ino uint32) {
	if c.err != nil {
		return
	}
	if uint64(len(data)) > 0xffffffff {
		c.err = fmt.Errorf("cpio: %s: %d bytes is too large for newc", name, len(data))
		return
	}
	// magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize (with its NUL), check.
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	c.put([]byte(hdr))
	c.put([]byte(name))
	c.put([]byte{0})
	c.pad()
	c.put(data)
	c.pad()
}

func (c *cpioWriter) put(b []byte) {
	if c.err != nil || len(b) == 0 {
		return
	}
	n, err := c.w.Write(b)
	c.off += int64(n)
	if err != nil {
		c.err = fmt.Errorf("cpio: %w", err)
	}
}

func (c *cpioWriter) pad() {
	if n := c.off % 4; n != 0 {
		c.put(make([]byte, 4-n))
	}
}
