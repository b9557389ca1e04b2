package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Set holds the volumes of one VM and starts and stops them together, as
// Qubes' Storage does for a domain. When all its volumes share one
// [Batch] (they implement [Batcher] and live in one pool whose driver
// batches), Set starts and stops them through it; otherwise it calls each
// volume's Start and Stop concurrently.
type Set struct {
	volumes []Volume
}

// NewSet returns a Set of the given volumes.
func NewSet(volumes ...Volume) *Set {
	return &Set{volumes: append([]Volume(nil), volumes...)}
}

// Volumes returns the volumes of the set.
func (s *Set) Volumes() []Volume { return append([]Volume(nil), s.volumes...) }

// Verify checks every volume; it returns all the failures joined.
func (s *Set) Verify(ctx context.Context) error {
	return s.each(ctx, func(ctx context.Context, v Volume) error { return v.Verify(ctx) })
}

// Start verifies all volumes, then starts them concurrently. If any start
// fails, the volumes this call started are aborted (discarded without a
// commit, so no revision is created or pruned) and the error is returned;
// a volume that was dirty before the call (an origin whose uncommitted
// data the start resumed after a crash) keeps its running image. A snapshot
// or volatile volume that ran before the call started fresh, so its old
// image is gone either way, and it is aborted like the others.
func (s *Set) Start(ctx context.Context) error {
	if err := s.Verify(ctx); err != nil {
		return err
	}
	wasDirty := make([]bool, len(s.volumes))
	for i, v := range s.volumes {
		dirty, err := v.IsDirty(ctx)
		if err != nil {
			return fmt.Errorf("start %s: %w", v.Config().VID, err)
		}
		wasDirty[i] = dirty
	}
	started := make([]bool, len(s.volumes))
	var err error
	b := s.batch()
	if b != nil {
		errs := b.Start(ctx, s.Volumes())
		for i := range s.volumes {
			started[i] = errs[i] == nil
		}
		err = errors.Join(errs...)
	} else {
		err = s.eachIndex(ctx, func(ctx context.Context, i int, v Volume) error {
			if err := v.Start(ctx); err != nil {
				return err
			}
			started[i] = true
			return nil
		})
	}
	if err == nil {
		return nil
	}
	// Roll back with a context that is not cancelled: a cancelled start
	// must still leave the volumes as they were.
	rollback := context.WithoutCancel(ctx)
	var abort []Volume
	for i, v := range s.volumes {
		if started[i] && !wasDirty[i] {
			abort = append(abort, v)
		}
	}
	var aerrs []error
	if b != nil && len(abort) > 0 {
		aerrs = b.Stop(rollback, abort, true)
	} else {
		for _, v := range abort {
			aerrs = append(aerrs, v.Abort(rollback))
		}
	}
	errs := []error{err}
	for i, aerr := range aerrs {
		if aerr != nil {
			errs = append(errs, fmt.Errorf("roll back %s: %w", abort[i].Config().VID, aerr))
		}
	}
	return errors.Join(errs...)
}

// Stop stops all volumes concurrently (or through their Batch) and returns
// all failures joined.
func (s *Set) Stop(ctx context.Context) error {
	if b := s.batch(); b != nil {
		return errors.Join(b.Stop(ctx, s.Volumes(), false)...)
	}
	return s.each(ctx, func(ctx context.Context, v Volume) error { return v.Stop(ctx) })
}

// Batcher is implemented by volumes whose pool starts and stops several of
// its volumes at once faster than one by one: lvm_thin runs the LV
// operations of all of them in one lvm process and reads the LV report
// once. Set uses it when every one of its volumes returns the same Batch.
type Batcher interface {
	Volume
	// Batch returns the value that starts and stops this volume together
	// with the other volumes of the same Batch (its pool's).
	Batch() Batch
}

// Batch starts and stops volumes of one pool together. Each volume gets
// its own result, as if its own Start, Stop or Abort had run: a volume
// that fails leaves nothing half-made, and the others are not affected
// by its failure.
type Batch interface {
	// Start starts vols; it returns one error per volume, nil for those
	// that started.
	Start(ctx context.Context, vols []Volume) []error
	// Stop stops vols, or aborts them (see Volume.Abort) when abort is
	// set; it returns one error per volume.
	Stop(ctx context.Context, vols []Volume, abort bool) []error
}

// batch returns the Batch every volume of the set shares, or nil.
func (s *Set) batch() Batch {
	var b Batch
	for _, v := range s.volumes {
		bv, ok := v.(Batcher)
		if !ok {
			return nil
		}
		vb := bv.Batch()
		if vb == nil || b != nil && vb != b {
			return nil
		}
		b = vb
	}
	return b
}

func (s *Set) each(ctx context.Context, fn func(context.Context, Volume) error) error {
	return s.eachIndex(ctx, func(ctx context.Context, _ int, v Volume) error { return fn(ctx, v) })
}

// eachIndex runs fn on every volume concurrently and joins the errors.
func (s *Set) eachIndex(ctx context.Context, fn func(context.Context, int, Volume) error) error {
	errs := make([]error, len(s.volumes))
	var wg sync.WaitGroup
	for i, v := range s.volumes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(ctx, i, v)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
