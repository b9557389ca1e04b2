package storagetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/vmpool/vmpool/storage"
)

const (
	blockSize = 4 << 10
	mib       = 1 << 20
	// volSize is the size of most volumes of the suite.
	volSize = 8 * mib
)

// content is what a volume should hold: size bytes, zero except for 4 KiB
// blocks written with a tag.
type content struct {
	size   int64
	blocks map[int64]byte // offset → tag
}

func zeros(size int64) content { return content{size: size} }

// with returns c with the block at off tagged tag.
func (c content) with(off int64, tag byte) content {
	b := maps.Clone(c.blocks)
	if b == nil {
		b = make(map[int64]byte)
	}
	b[off] = tag
	return content{size: c.size, blocks: b}
}

// resized returns c cut or extended (with zeros) to size bytes.
func (c content) resized(size int64) content {
	b := make(map[int64]byte)
	for off, tag := range c.blocks {
		if off+blockSize <= size {
			b[off] = tag
		}
	}
	return content{size: size, blocks: b}
}

// block returns the 4 KiB block tagged tag written at off: a pattern that
// differs with the tag and the offset and is never all zero.
func block(tag byte, off int64) []byte {
	b := make([]byte, blockSize)
	for i := range b {
		b[i] = tag ^ byte(i*7+int(off>>12)) | 1
	}
	return b
}

// image is what the suite reads from a volume: its size and its non-zero
// 4 KiB blocks.
type image struct {
	size   int64
	blocks map[int64][]byte
}

// readImage reads f's non-zero blocks. It reads only the data segments
// (SEEK_DATA, SEEK_HOLE) where the file has them, since holes read as
// zeros: the suite's volumes are large and sparse.
func readImage(f *os.File) (image, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return image{}, err
	}
	img := image{size: size, blocks: make(map[int64][]byte)}
	buf := make([]byte, 256*blockSize)
	zero := make([]byte, blockSize)
	for off := int64(0); off < size; {
		start, end := off, size
		if s, err := f.Seek(off, unix.SEEK_DATA); errors.Is(err, unix.ENXIO) {
			break
		} else if err == nil {
			start = s
			if h, err := f.Seek(s, unix.SEEK_HOLE); err == nil {
				end = h
			}
		}
		for pos := start &^ (blockSize - 1); pos < end; {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), end-pos)], pos)
			if err != nil && !errors.Is(err, io.EOF) {
				return image{}, err
			}
			if n == 0 {
				break
			}
			for i := 0; i < n; i += blockSize {
				b := buf[i:min(i+blockSize, n)]
				if !bytes.Equal(b, zero[:len(b)]) {
					img.blocks[pos+int64(i)] = bytes.Clone(b)
				}
			}
			pos += int64(n)
		}
		off = end
	}
	return img, nil
}

// hash is a digest of the image's content (not of its holes).
func (img image) hash() string {
	h := sha256.New()
	fmt.Fprintf(h, "%d\n", img.size)
	for _, off := range slices.Sorted(maps.Keys(img.blocks)) {
		fmt.Fprintf(h, "%d\n", off)
		h.Write(img.blocks[off])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// checkContent compares img with want and reports the differences.
func checkContent(t interface {
	assert.TestingT
	Helper()
}, img image, want content, what string) bool {
	t.Helper()
	if img.size != want.size {
		return assert.Fail(t, what+": wrong size", "got %d bytes, want %d", img.size, want.size)
	}
	var diffs []string
	for off, b := range img.blocks {
		tag, ok := want.blocks[off]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("data at %d where zeros were expected", off))
		case !bytes.Equal(b, block(tag, off)):
			diffs = append(diffs, fmt.Sprintf("block at %d is not the block tagged %#x", off, tag))
		}
	}
	for off, tag := range want.blocks {
		if _, ok := img.blocks[off]; !ok {
			diffs = append(diffs, fmt.Sprintf("zeros at %d where block %#x was expected", off, tag))
		}
	}
	if len(diffs) == 0 {
		return true
	}
	slices.Sort(diffs)
	return assert.Fail(t, what+": wrong data", strings.Join(diffs, "\n"))
}

// open opens a running volume's device with flag (os.O_RDONLY or
// os.O_RDWR).
func (e *env) open(v storage.Volume, flag int) *os.File {
	e.t.Helper()
	f, err := e.cfg.OpenDevice(e.t, v, flag)
	require.NoError(e.t, err, "open device of %s", v.Config().VID)
	return f
}

// write writes the block tagged tag at off to a running volume's device
// and syncs it, as a VM would.
func (e *env) write(v storage.Volume, off int64, tag byte) {
	e.t.Helper()
	require.NoError(e.t, e.writeErr(v, off, tag))
}

// writeErr is write for goroutines: it returns its error.
func (e *env) writeErr(v storage.Volume, off int64, tag byte) error {
	f, err := e.cfg.OpenDevice(e.t, v, os.O_RDWR)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(block(tag, off), off); err != nil {
		return err
	}
	return f.Sync()
}

// deviceSize returns the size of a running volume's device.
func (e *env) deviceSize(v storage.Volume) int64 {
	e.t.Helper()
	f := e.open(v, os.O_RDONLY)
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	require.NoError(e.t, err)
	return n
}

// readDevice reads a running volume's device.
func (e *env) readDevice(v storage.Volume) image {
	e.t.Helper()
	f := e.open(v, os.O_RDONLY)
	defer f.Close()
	img, err := readImage(f)
	require.NoError(e.t, err, "read device of %s", v.Config().VID)
	return img
}

// checkDevice checks a running volume's data.
func (e *env) checkDevice(v storage.Volume, want content, what string) bool {
	e.t.Helper()
	return checkContent(e.t, e.readDevice(v), want, fmt.Sprintf("%s: device of %s", what, v.Config().VID))
}

// export reads a volume's committed data, through Export.
func (e *env) export(v storage.Volume) (image, error) {
	path, err := v.Export(e.ctx)
	if err != nil {
		return image{}, err
	}
	f, err := os.Open(path)
	var img image
	if err == nil {
		img, err = readImage(f)
		f.Close()
	}
	if eerr := v.ExportEnd(e.ctx, path); err == nil {
		err = eerr
	}
	return img, err
}

// checkExport checks a volume's committed data.
func (e *env) checkExport(v storage.Volume, want content, what string) bool {
	e.t.Helper()
	img, err := e.export(v)
	require.NoError(e.t, err, "export %s", v.Config().VID)
	return checkContent(e.t, img, want, fmt.Sprintf("%s: export of %s", what, v.Config().VID))
}

// volumeState is what the suite can observe of a volume without changing
// it.
type volumeState struct {
	Config    storage.VolumeConfig
	Running   bool
	Dirty     bool
	Size      int64
	Revisions []storage.Revision
	Export    string // a hash of the exported data, or the export error
	Device    string // a hash of a running volume's device
}

// state returns the observable state of every volume of the pool.
func (e *env) state() []volumeState {
	e.t.Helper()
	var out []volumeState
	for _, v := range e.pool.Volumes() {
		s := volumeState{Config: v.Config(), Running: e.running(v), Dirty: e.dirty(v), Size: e.size(v), Revisions: e.revisions(v)}
		if img, err := e.export(v); err != nil {
			s.Export = "error: " + err.Error()
		} else {
			s.Export = img.hash()
		}
		if s.Running {
			s.Device = e.readDevice(v).hash()
		}
		out = append(out, s)
	}
	return out
}

// assertUnchanged checks that the pool's state is still before, and
// reports each difference on its own line.
func (e *env) assertUnchanged(before []volumeState, what string) {
	e.t.Helper()
	after := e.state()
	if reflect.DeepEqual(before, after) {
		return
	}
	var diffs []string
	index := func(states []volumeState) map[string]volumeState {
		m := make(map[string]volumeState)
		for _, s := range states {
			m[s.Config.VID] = s
		}
		return m
	}
	b, a := index(before), index(after)
	for vid := range b {
		if _, ok := a[vid]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: gone", vid))
		}
	}
	for vid, as := range a {
		bs, ok := b[vid]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s: new volume", vid))
			continue
		}
		bv, av := reflect.ValueOf(bs), reflect.ValueOf(as)
		for i := range bv.NumField() {
			if x, y := bv.Field(i).Interface(), av.Field(i).Interface(); !reflect.DeepEqual(x, y) {
				diffs = append(diffs, fmt.Sprintf("%s: %s %s -> %s", vid, bv.Type().Field(i).Name, show(x), show(y)))
			}
		}
	}
	slices.Sort(diffs)
	assert.Fail(e.t, what+" changed the pool's volumes", strings.Join(diffs, "\n"))
}

// show formats a state field compactly.
func show(x any) string {
	switch x := x.(type) {
	case storage.VolumeConfig:
		keep := "nil"
		if x.RevisionsToKeep != nil {
			keep = fmt.Sprint(*x.RevisionsToKeep)
		}
		return fmt.Sprintf("{size %d rw %v snap %v save %v source %q keep %s}", x.Size, x.RW, x.SnapOnStart, x.SaveOnStop, x.Source, keep)
	case []storage.Revision:
		var ids []string
		for _, r := range x {
			ids = append(ids, r.ID+"@"+r.Timestamp())
		}
		return fmt.Sprint(ids)
	case string:
		if len(x) > 16 && !strings.HasPrefix(x, "error") {
			return x[:16]
		}
		return fmt.Sprintf("%q", x)
	}
	return fmt.Sprint(x)
}
