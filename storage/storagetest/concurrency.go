package storagetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/stretchr/testify/assert"

	"github.com/vmpool/vmpool/storage"
)

var concurrencyCases = []testCase{
	{"parallel_volumes", concurrentVolumes},
	{"serialised_operations", concurrentOneVolume},
}

// cycle starts v, runs during (if set) and stops v; it returns the first
// error, for use in goroutines.
func (e *env) cycle(v storage.Volume, during func() error) error {
	if err := v.Start(e.ctx); err != nil {
		return err
	}
	if during != nil {
		if err := during(); err != nil {
			return err
		}
	}
	return v.Stop(e.ctx)
}

// concurrentVolumes: eight volumes start, take writes and stop in parallel.
func concurrentVolumes(e *env) {
	const n, rounds = 8, 3
	vols := make([]storage.Volume, n)
	for i := range vols {
		vols[i] = e.create(e.originConf(e.vid(fmt.Sprintf("vm%d", i), "private"), volSize, e.keep(1)))
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, v := range vols {
		wg.Go(func() {
			for r := range rounds {
				if errs[i] = e.cycle(v, func() error { return e.writeErr(v, int64(r)*mib, byte(0x90+i)) }); errs[i] != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	for i, v := range vols {
		if !assert.NoError(e.t, errs[i], "volume %d", i) {
			continue
		}
		want := zeros(volSize)
		for r := range rounds {
			want = want.with(int64(r)*mib, byte(0x90+i))
		}
		e.checkExport(v, want, "after parallel runs")
		assert.Len(e.t, e.revisions(v), min(rounds, e.keep(1)))
	}
}

// concurrentOneVolume: operations on one volume are serialised. Ten
// goroutines grow it to different sizes (a grow that another one has
// overtaken is a refused shrink) while another starts and stops it; the
// volume ends as large as the largest request, with its data.
func concurrentOneVolume(e *env) {
	const resizers, cycles = 10, 5
	v := e.create(e.originConf(e.vid("vm1", "private"), volSize, e.keep(1)))
	want := e.run(v, zeros(volSize), 0x91, 0)
	var sizes []int64
	for i := range resizers {
		sizes = append(sizes, volSize+int64((i*7)%resizers+1)*mib)
	}
	errs := make([]error, resizers+1)
	var wg sync.WaitGroup
	for i, size := range sizes {
		wg.Go(func() {
			if err := v.Resize(e.ctx, size, storage.ResizeOptions{}); err != nil && !errors.Is(err, storage.ErrShrink) {
				errs[i] = err
			}
		})
	}
	wg.Go(func() {
		for range cycles {
			if errs[resizers] = e.cycle(v, nil); errs[resizers] != nil {
				return
			}
		}
	})
	wg.Wait()
	for _, err := range errs {
		assert.NoError(e.t, err)
	}
	largest := slices.Max(sizes)
	assert.Equal(e.t, largest, e.size(v), "the largest request wins")
	assert.Equal(e.t, largest, v.Config().Size)
	e.checkExport(v, want.resized(largest), "after concurrent resizes")
}
