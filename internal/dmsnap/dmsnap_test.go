package dmsnap

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// qubesEmpty is file.py's EMPTY_SNAPSHOT: the header the kernel writes to
// a fresh 256-sector store, then an empty metadata chunk.
func qubesEmpty() []byte {
	b := make([]byte, 262144)
	copy(b, "SnAp\x01\x00\x00\x00\x01\x00\x00\x00\x00\x01\x00\x00")
	return b
}

func TestEncodeEmptyIsQubesHeader(t *testing.T) {
	assert.Equal(t, qubesEmpty(), Encode(QubesChunkSectors, nil, nil))
	st, err := Read(bytes.NewReader(qubesEmpty()), 262144)
	require.NoError(t, err)
	assert.Equal(t, int64(128<<10), st.ChunkSize)
	assert.Empty(t, st.Exceptions)
}

func TestReadZeroStore(t *testing.T) {
	for _, size := range []int64{0, 16, 1 << 20} {
		st, err := Read(bytes.NewReader(make([]byte, size)), size)
		require.NoError(t, err, "size %d", size)
		assert.Empty(t, st.Exceptions)
	}
}

func TestRestore(t *testing.T) {
	// 8 sectors per chunk (4 KiB): 256 exceptions per area, so 600
	// exceptions fill two areas and start a third.
	const sectors = 8
	const chunk = sectors * 512
	const nchunks = 700
	rng := rand.New(rand.NewPCG(1, 2))
	before := make([]byte, nchunks*chunk)
	for i := range before {
		before[i] = byte(rng.Uint32())
	}
	now := bytes.Clone(before)
	old := map[uint64][]byte{}
	var order []uint64
	for _, c := range rng.Perm(nchunks)[:600] {
		o := uint64(c)
		old[o] = bytes.Clone(before[c*chunk : (c+1)*chunk])
		order = append(order, o)
		for i := c * chunk; i < (c+1)*chunk; i++ {
			now[i] = ^now[i]
		}
	}
	cow := Encode(sectors, old, order)
	st, err := Read(bytes.NewReader(cow), int64(len(cow)))
	require.NoError(t, err)
	require.Len(t, st.Exceptions, 600)
	for i, e := range st.Exceptions {
		assert.Equal(t, order[i], e.Old)
	}
	dst := &buffer{b: bytes.Clone(now)}
	require.NoError(t, st.Restore(context.Background(), dst, bytes.NewReader(cow), int64(len(now))))
	assert.True(t, bytes.Equal(before, dst.b), "the restored image is the image before")

	// A shorter limit: chunks at or beyond it are skipped, one across it is cut.
	limit := int64(100*chunk + 100)
	dst = &buffer{b: bytes.Clone(now[:limit])}
	require.NoError(t, st.Restore(context.Background(), dst, bytes.NewReader(cow), limit))
	assert.Equal(t, limit, int64(len(dst.b)), "nothing written beyond the limit")
	assert.True(t, bytes.Equal(before[:limit], dst.b))
}

func TestReadRefuses(t *testing.T) {
	good := Encode(8, map[uint64][]byte{3: {1}}, []uint64{3})
	mutate := func(off int, v uint32) []byte {
		b := bytes.Clone(good)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"magic":         {mutate(0, 0x12345678), ErrFormat},
		"version":       {mutate(8, 2), ErrFormat},
		"chunk size 0":  {mutate(12, 0), ErrFormat},
		"chunk size 12": {mutate(12, 12), ErrFormat},
		"huge chunks":   {mutate(12, 1<<30), ErrFormat},
		"invalidated":   {mutate(4, 0), ErrInvalidated},
		"short":         {good[:10], ErrFormat},
	}
	outside := bytes.Clone(good)
	binary.LittleEndian.PutUint64(outside[4096+8:], 99)
	cases["exception outside the store"] = struct {
		b    []byte
		want error
	}{outside, ErrFormat}
	for name, c := range cases {
		_, err := Read(bytes.NewReader(c.b), int64(len(c.b)))
		assert.ErrorIs(t, err, c.want, name)
	}
}

func FuzzRead(f *testing.F) {
	f.Add(qubesEmpty()[:4096])
	f.Add(Encode(8, map[uint64][]byte{0: {7}, 5: {9}}, []uint64{5, 0}))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for _, e := range st.Exceptions {
			if e.New == 0 || int64(e.New) >= int64(len(b))/st.ChunkSize {
				t.Fatalf("exception %+v outside a store of %d bytes", e, len(b))
			}
		}
		dst := &buffer{b: make([]byte, 1<<16)}
		if err := st.Restore(context.Background(), dst, bytes.NewReader(b), int64(len(dst.b))); err != nil {
			t.Fatalf("restore of a store Read accepted: %v", err)
		}
		if len(dst.b) != 1<<16 {
			t.Fatalf("restore wrote beyond its limit: %d bytes", len(dst.b))
		}
	})
}

// buffer is an io.WriterAt over a byte slice that grows as written.
type buffer struct{ b []byte }

func (w *buffer) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > int64(len(w.b)) {
		w.b = append(w.b, make([]byte, end-int64(len(w.b)))...)
	}
	return copy(w.b[off:], p), nil
}
