// Package dmsnap reads the persistent exception store of a Linux
// device-mapper snapshot (dm-snap-persistent.c): the "cow" file that
// Qubes' file driver keeps beside each image (NAME-cow.img) and, after a
// commit, as its one revision (NAME-cow.img.old).
//
// A snapshot-origin device writes the VM's data into the image itself and
// first copies each chunk it overwrites into the cow, so an image plus
// the exceptions of its cow is the image as it was when the cow was
// started. Restore applies them: that is how vmpool turns the file
// driver's revision into a full image when a pool moves to file-reflink.
//
// The layout, all integers little-endian: chunk 0 holds the header
// (magic "SnAp", valid, version 1, chunk size in 512-byte sectors); then
// come areas, each one metadata chunk of (old chunk, new chunk) pairs of
// 8 bytes each followed by the data chunks it describes. A pair whose new
// chunk is 0 ends the list. A cow of all zeros (never activated) holds no
// exceptions.
package dmsnap

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Magic is the first word of a persistent exception store ("SnAp").
const Magic = 0x70416e53

// Version is the only on-disk version the kernel writes.
const Version = 1

// QubesChunkSectors is the chunk size, in sectors, of the stores that
// Qubes' create-snapshot makes (SNAPSHOT_CHUNKSIZE=256: 128 KiB).
const QubesChunkSectors = 256

// sectorSize is the unit of the header's chunk size.
const sectorSize = 512

// exceptionSize is the size of one (old, new) pair on disk.
const exceptionSize = 16

// maxChunkSize bounds the chunk size read from a header (the kernel
// accepts powers of two up to INT_MAX bytes; real stores use 4 KiB to
// 512 KiB).
const maxChunkSize = 1 << 24

// ErrFormat is wrapped by the errors of a file that is not a valid
// persistent exception store.
var ErrFormat = errors.New("not a device-mapper persistent snapshot store")

// ErrInvalidated is wrapped by Read's error for a store the kernel marked
// invalid (its valid word is 0: the snapshot overflowed or failed), whose
// exceptions do not give back the old image.
var ErrInvalidated = errors.New("the snapshot store was invalidated by the kernel")

// Exception maps a chunk of the origin to the chunk of the store that
// holds its old data.
type Exception struct {
	Old uint64 // chunk number in the origin
	New uint64 // chunk number in the store
}

// Store is what a persistent exception store holds.
type Store struct {
	// ChunkSize is the chunk size in bytes; 0 for a store that was never
	// activated (all zeros).
	ChunkSize int64
	// Exceptions are in the order the kernel committed them; a later one
	// for the same old chunk cannot occur (the kernel copies a chunk
	// once).
	Exceptions []Exception
}

// Read reads the header and the exception table of the store r of size
// bytes. A store of all zeros (or of zero length) has no exceptions. A
// store with a foreign magic, another version, a bad chunk size or an
// exception pointing outside the store is an ErrFormat error; one the
// kernel invalidated is ErrInvalidated.
func Read(r io.ReaderAt, size int64) (*Store, error) {
	if size < 16 {
		if size == 0 {
			return &Store{}, nil
		}
		return nil, fmt.Errorf("%w: %d bytes is too short for a header", ErrFormat, size)
	}
	var hdr [16]byte
	if _, err := r.ReadAt(hdr[:], 0); err != nil {
		return nil, fmt.Errorf("read snapshot header: %w", err)
	}
	magic := binary.LittleEndian.Uint32(hdr[0:])
	valid := binary.LittleEndian.Uint32(hdr[4:])
	version := binary.LittleEndian.Uint32(hdr[8:])
	chunkSectors := binary.LittleEndian.Uint32(hdr[12:])
	if magic == 0 {
		// A new store: the kernel treats a zero magic as "no header yet".
		return &Store{}, nil
	}
	if magic != Magic {
		return nil, fmt.Errorf("%w: magic %#08x, not %#08x", ErrFormat, magic, Magic)
	}
	if version != Version {
		return nil, fmt.Errorf("%w: version %d, not %d", ErrFormat, version, Version)
	}
	chunk := int64(chunkSectors) * sectorSize
	if chunkSectors == 0 || chunkSectors&(chunkSectors-1) != 0 || chunk > maxChunkSize || chunk < exceptionSize {
		return nil, fmt.Errorf("%w: chunk size of %d sectors", ErrFormat, chunkSectors)
	}
	if valid == 0 {
		return nil, ErrInvalidated
	}
	st := &Store{ChunkSize: chunk}
	perArea := chunk / exceptionSize
	chunks := size / chunk // whole chunks in the store
	buf := make([]byte, 4096)
	if int64(len(buf)) > chunk {
		buf = buf[:chunk]
	}
	for area := int64(0); ; area++ {
		loc := 1 + (perArea+1)*area // the metadata chunk of area
		if loc >= chunks {
			// The kernel allocates an area's metadata chunk before its data;
			// a store that ends here has no more exceptions.
			return st, nil
		}
		full, err := st.readArea(r, loc*chunk, perArea, chunks, buf)
		if err != nil {
			return nil, err
		}
		if !full {
			return st, nil
		}
	}
}

// readArea reads the exceptions of the metadata chunk at off; full tells
// that every slot was used, so the next area may hold more.
func (st *Store) readArea(r io.ReaderAt, off, perArea, chunks int64, buf []byte) (full bool, err error) {
	per := int64(len(buf)) / exceptionSize
	for i := int64(0); i < perArea; i += per {
		n := min(per, perArea-i)
		b := buf[:n*exceptionSize]
		if _, err := r.ReadAt(b, off+i*exceptionSize); err != nil {
			return false, fmt.Errorf("read snapshot exceptions at byte %d: %w", off+i*exceptionSize, err)
		}
		for j := int64(0); j < n; j++ {
			e := Exception{
				Old: binary.LittleEndian.Uint64(b[j*exceptionSize:]),
				New: binary.LittleEndian.Uint64(b[j*exceptionSize+8:]),
			}
			if e.New == 0 {
				return false, nil
			}
			if e.New >= uint64(chunks) {
				return false, fmt.Errorf("%w: exception %d of the area at byte %d points to chunk %d of a store of %d chunks",
					ErrFormat, i+j, off, e.New, chunks)
			}
			st.Exceptions = append(st.Exceptions, e)
		}
	}
	return true, nil
}

// Restore writes the old data of every exception into dst, which holds
// the origin's current data (a copy of the image), so that dst becomes the
// image as it was when the store was started. Exceptions for chunks at or
// beyond limit bytes (the image's size) are skipped, and a chunk that
// crosses limit is cut there. cow is the store itself.
func (st *Store) Restore(ctx context.Context, dst io.WriterAt, cow io.ReaderAt, limit int64) error {
	if len(st.Exceptions) == 0 {
		return nil
	}
	buf := make([]byte, min(st.ChunkSize, limit))
	for _, e := range st.Exceptions {
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.Old > uint64(limit/st.ChunkSize) {
			continue // also keeps the multiplication below from overflowing
		}
		off := int64(e.Old) * st.ChunkSize
		if off >= limit {
			continue
		}
		b := buf[:min(int64(len(buf)), limit-off)]
		if _, err := cow.ReadAt(b, int64(e.New)*st.ChunkSize); err != nil {
			return fmt.Errorf("read chunk %d of the snapshot store: %w", e.New, err)
		}
		if _, err := dst.WriteAt(b, off); err != nil {
			return fmt.Errorf("write old chunk %d: %w", e.Old, err)
		}
	}
	return nil
}

// Encode returns a store of chunkSectors-sector chunks that holds old, the
// old data of the origin chunks it maps (each at most one chunk long,
// zero-padded), laid out as the kernel lays it out. It is for tests that
// need a cow without device-mapper.
func Encode(chunkSectors uint32, old map[uint64][]byte, order []uint64) []byte {
	chunk := int64(chunkSectors) * sectorSize
	perArea := chunk / exceptionSize
	var out []byte
	grow := func(n int64) {
		for int64(len(out)) < n {
			out = append(out, make([]byte, n-int64(len(out)))...)
		}
	}
	grow(chunk)
	binary.LittleEndian.PutUint32(out[0:], Magic)
	binary.LittleEndian.PutUint32(out[4:], 1)
	binary.LittleEndian.PutUint32(out[8:], Version)
	binary.LittleEndian.PutUint32(out[12:], chunkSectors)
	next := int64(1) // the next free chunk
	var meta int64   // the byte offset of the current metadata chunk
	slot := perArea  // full: the first exception opens an area
	for _, o := range order {
		if slot == perArea {
			meta = next * chunk
			next++
			grow(next * chunk)
			slot = 0
		}
		data := next
		next++
		grow(next * chunk)
		copy(out[data*chunk:(data+1)*chunk], old[o])
		binary.LittleEndian.PutUint64(out[meta+slot*exceptionSize:], o)
		binary.LittleEndian.PutUint64(out[meta+slot*exceptionSize+8:], uint64(data))
		slot++
	}
	if slot == perArea || len(order) == 0 {
		// The kernel keeps an empty metadata chunk after a full area (and
		// a fresh store has one too).
		grow((next + 1) * chunk)
	}
	return out
}
