package storagetest

import (
	"math/rand/v2"
	"os"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

var usageCases = []testCase{
	{"sparse", usageSparse},
	{"pool", usagePool},
}

func (e *env) usage(v storage.Volume) int64 {
	e.t.Helper()
	n, err := v.Usage(e.ctx)
	require.NoError(e.t, err)
	return n
}

// usageSparse: a new 1 GiB volume uses almost nothing; writing 4 MiB
// makes its usage grow by at least that.
func usageSparse(e *env) {
	t := e.t
	const size, written = 1 << 30, 4 * mib
	v := e.create(e.originConf(e.vid("vm1", "private"), size, e.keep(1)))
	e.flush()
	assert.Less(t, e.usage(v), int64(mib), "a new sparse volume")
	assert.Equal(t, int64(size), e.size(v))
	e.start(v)
	before := e.usage(v)
	assert.Less(t, before, int64(mib), "a started sparse volume")
	f := e.open(v, os.O_RDWR)
	data := make([]byte, written)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	_, err := f.WriteAt(data, 16*mib)
	require.NoError(t, err)
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())
	assert.GreaterOrEqual(t, e.usage(v)-before, int64(written), "usage after writing %d bytes", written)
	e.stop(v)
	e.flush()
	assert.GreaterOrEqual(t, e.usage(v), int64(written), "usage of the committed volume")
	assert.Less(t, e.usage(v), int64(size/2), "the committed volume is still sparse")
}

// usagePool: the pool reports its size and use.
func usagePool(e *env) {
	t := e.t
	v := e.create(e.originConf(e.vid("vm1", "private"), volSize, e.keep(1)))
	e.run(v, zeros(volSize), 0xa0, 0)
	e.flush()
	u, err := e.pool.Usage(e.ctx)
	require.NoError(t, err)
	assert.Positive(t, u.DataSize)
	assert.GreaterOrEqual(t, u.DataUsage, int64(0))
	assert.LessOrEqual(t, u.DataUsage, u.DataSize)
}
