package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Set holds the volumes of one VM and starts and stops them together, as
// Qubes' Storage does for a domain.
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
	err := s.eachIndex(ctx, func(ctx context.Context, i int, v Volume) error {
		if err := v.Start(ctx); err != nil {
			return err
		}
		started[i] = true
		return nil
	})
	if err == nil {
		return nil
	}
	// Roll back with a context that is not cancelled: a cancelled start
	// must still leave the volumes as they were.
	rollback := context.WithoutCancel(ctx)
	var errs []error
	for i, v := range s.volumes {
		if started[i] && !wasDirty[i] {
			if aerr := v.Abort(rollback); aerr != nil {
				errs = append(errs, fmt.Errorf("roll back %s: %w", v.Config().VID, aerr))
			}
		}
	}
	return errors.Join(append([]error{err}, errs...)...)
}

// Stop stops all volumes concurrently and returns all failures joined.
func (s *Set) Stop(ctx context.Context) error {
	return s.each(ctx, func(ctx context.Context, v Volume) error { return v.Stop(ctx) })
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
