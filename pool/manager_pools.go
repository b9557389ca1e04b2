package pool

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vmpool/vmpool/storage"
)

// AddPool opens a new pool named name with the given driver and
// parameters, runs its Setup (file-reflink refuses a filesystem without
// reflinks there unless setup_check=no) and saves it. A malformed name or a
// "name" or "driver" parameter is ErrInvalidConfig, a name in use
// ErrExists, an unknown driver ErrNotFound. On any failure nothing is
// saved and the pool is closed; what Setup made stays (as in Qubes, where
// a pool's directory may hold data from before). A dir_path that is the
// directory of a pool this Manager holds (the same path, a symlink to it)
// or its state directory is ErrExists at once.
func (m *Manager) AddPool(ctx context.Context, name, driver string, params map[string]string) (storage.Pool, error) {
	return m.addPool(ctx, name, driver, params, false)
}

// AdoptPool is AddPool for a directory that records another owner (the
// pool of another state directory, see storage.PoolConfig.Owner), which
// AddPool refuses with ErrInUse: the directory becomes this state's. The
// other state's volumes are not taken over; CreateVolume still refuses to
// replace their data.
func (m *Manager) AdoptPool(ctx context.Context, name, driver string, params map[string]string) (storage.Pool, error) {
	return m.addPool(ctx, name, driver, params, true)
}

func (m *Manager) addPool(ctx context.Context, name, driver string, params map[string]string, adopt bool) (storage.Pool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return nil, err
	}
	if err := storage.ValidatePoolName(name); err != nil {
		return nil, fmt.Errorf("add pool: %w", err)
	}
	if _, ok := m.pools[name]; ok {
		return nil, fmt.Errorf("add pool %s: pool named %s: %w", name, name, storage.ErrExists)
	}
	for _, k := range []string{"name", "driver"} {
		if _, ok := params[k]; ok {
			return nil, fmt.Errorf("add pool %s: %w: %q is not a driver parameter", name, storage.ErrInvalidConfig, k)
		}
	}
	if err := m.checkPlace(params); err != nil {
		return nil, fmt.Errorf("add pool %s: %w", name, err)
	}
	// The state's ID is saved before a directory records it; if the pool
	// is not added after all, the state file is put back as it was.
	before := m.written
	if err := m.save(); err != nil {
		return nil, fmt.Errorf("add pool %s: %w", name, err)
	}
	fail := func(err error) (storage.Pool, error) {
		if rerr := m.restoreState(before); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return nil, fmt.Errorf("add pool %s: %w", name, err)
	}
	p, err := m.openPool(ctx, name, driver, params, adopt)
	if err != nil {
		return fail(err)
	}
	sctx, cancel := context.WithTimeout(ctx, m.lockWait) // Setup locks a directory it creates
	err = p.Setup(sctx)
	cancel()
	if err != nil {
		m.closePool(p)
		return fail(err)
	}
	m.pools[name] = p
	m.track(p)
	if err := m.save(); err != nil {
		delete(m.pools, name)
		m.closePool(p)
		return nil, fmt.Errorf("add pool %s: %w", name, err)
	}
	return p, nil
}

// closePool closes p after a failure; an error is logged, not returned
// over the failure's.
func (m *Manager) closePool(p storage.Pool) {
	if err := p.Close(); err != nil {
		m.log.Error().Err(err).Str("pool", p.Name()).Msg("close pool after failure")
	}
}

// RemovePool destroys the pool named name, closes it and saves. An unknown
// name is ErrNotFound; a pool that holds a volume of any VM is ErrInUse
// (Qubes' "Storage pool is in use").
func (m *Manager) RemovePool(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return err
	}
	p, ok := m.pools[name]
	if !ok {
		return fmt.Errorf("remove pool %s: no pool %q: %w", name, name, storage.ErrNotFound)
	}
	var users []string
	for vm, v := range m.allVolumes() {
		if cfg := v.Config(); cfg.Pool == name {
			users = append(users, vm+":"+cfg.Name)
		}
	}
	if len(users) > 0 {
		return fmt.Errorf("remove pool %s: storage pool is in use by %s: %w", name, strings.Join(users, ", "), storage.ErrInUse)
	}
	if err := p.Destroy(ctx); err != nil {
		return fmt.Errorf("remove pool %s: %w", name, err)
	}
	delete(m.pools, name)
	cerr := p.Close()
	if err := m.save(); err != nil {
		return fmt.Errorf("remove pool %s: %w", name, errors.Join(err, cerr))
	}
	if cerr != nil {
		return fmt.Errorf("remove pool %s: %w", name, cerr)
	}
	return nil
}

// Pool returns the pool named name, or an error wrapping ErrNotFound.
func (m *Manager) Pool(name string) (storage.Pool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(); err != nil {
		return nil, err
	}
	p, ok := m.pools[name]
	if !ok {
		return nil, fmt.Errorf("no pool %q: %w", name, storage.ErrNotFound)
	}
	return p, nil
}

// Pools returns the pools, sorted by name; none once the Manager is closed.
func (m *Manager) Pools() []storage.Pool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	pools := make([]storage.Pool, 0, len(m.pools))
	for _, name := range slices.Sorted(maps.Keys(m.pools)) {
		pools = append(pools, m.pools[name])
	}
	return pools
}

// SetPoolParameter changes parameter key of the pool named name and saves
// it, as qvm-pool set (admin.pool.Set.revisions_to_keep and
// .ephemeral_volatile) does; the driver decides which parameters may
// change (see storage.Pool.SetParameter). If the state cannot be saved,
// the old value is put back.
func (m *Manager) SetPoolParameter(ctx context.Context, name, key, value string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return err
	}
	fail := func(err error) error { return fmt.Errorf("set %s of pool %s: %w", key, name, err) }
	p, ok := m.pools[name]
	if !ok {
		return fail(fmt.Errorf("no pool %q: %w", name, storage.ErrNotFound))
	}
	old, had := p.Config()[key]
	if err := p.SetParameter(ctx, key, value); err != nil {
		return err
	}
	if err := m.save(); err != nil {
		if had {
			if uerr := p.SetParameter(context.WithoutCancel(ctx), key, old); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w", uerr))
			}
		}
		return fail(err)
	}
	return nil
}

// checkPlace refuses a new pool whose dir_path is the directory of a pool
// m holds, or m's state directory: opening it would wait for m's own lock.
// The caller holds mu.
func (m *Manager) checkPlace(params map[string]string) error {
	dir, ok := params["dir_path"]
	if !ok || dir == "" {
		return nil
	}
	if samePlace(dir, m.dir) {
		return fmt.Errorf("directory %s is the state directory of this pool manager: %w", dir, storage.ErrExists)
	}
	for _, name := range slices.Sorted(maps.Keys(m.pools)) {
		if other, ok := m.pools[name].Config()["dir_path"]; ok && samePlace(dir, other) {
			return fmt.Errorf("directory %s is already pool %s: %w", dir, name, storage.ErrExists)
		}
	}
	return nil
}

// samePlace reports whether paths a and b name the same directory: the
// same file where both exist (symlinks followed), else the same absolute
// path.
func samePlace(a, b string) bool {
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(sa, sb)
	}
	absA, errA := filepath.Abs(a)
	absB, errB := filepath.Abs(b)
	return errA == nil && errB == nil && absA == absB
}
