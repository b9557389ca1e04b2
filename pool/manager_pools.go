package pool

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
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
	return m.addPool(ctx, name, driver, params, addOptions{})
}

// AdoptPool is AddPool for a directory that records another owner (the
// pool of another state directory, see storage.PoolConfig.Owner), which
// AddPool refuses with ErrInUse: the directory becomes this state's. The
// other state's volumes are not taken over; CreateVolume still refuses to
// replace their data.
func (m *Manager) AdoptPool(ctx context.Context, name, driver string, params map[string]string) (storage.Pool, error) {
	return m.addPool(ctx, name, driver, params, addOptions{adopt: true})
}

// addOptions modify addPool: adopt takes over a directory of another
// owner; first refuses a state that has pools already (ErrExists).
type addOptions struct{ adopt, first bool }

func (m *Manager) addPool(ctx context.Context, name, driver string, params map[string]string, opts addOptions) (storage.Pool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return nil, err
	}
	if opts.first && len(m.pools) > 0 {
		return nil, fmt.Errorf("add pool %s: the state has pools already: %w", name, storage.ErrExists)
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
	p, err := m.openPool(ctx, name, driver, params, opts.adopt)
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

// RemovePool removes the pool named name from the state, as Qubes'
// admin.pool.Remove (app.remove_pool) does: it is RemovePoolWith without
// options, so a pool that holds a volume of any VM is ErrInUse (Qubes'
// "Storage pool is in use") and nothing changes.
func (m *Manager) RemovePool(ctx context.Context, name string) error {
	return m.RemovePoolWith(ctx, name, RemovePoolOptions{})
}

// RemovePoolOptions modify RemovePoolWith.
type RemovePoolOptions struct {
	// Force removes a pool that holds volumes of VMs. Qubes has no such
	// option (admin.pool.Remove always refuses); forcing only makes the
	// Manager forget: the pool and the configurations of the volumes that
	// live in it leave the state (a VM left without volumes is forgotten,
	// a VM with volumes in other pools keeps those), and nothing on disk
	// is touched. The pool's Destroy is not called, and the volumes'
	// images and revisions stay where they are; adding the pool again
	// later does not bring the configurations back, and CreateVolume
	// refuses to replace a save_on_stop volume's data left there
	// (ErrExists). A volume that runs is refused even so (ErrRunning):
	// its VM would run on images the Manager no longer stops or commits.
	Force bool
}

// RemovePoolWith removes the pool named name from the state and saves,
// then closes the pool. An unknown name is ErrNotFound. A pool that holds
// a volume of any VM is ErrInUse unless opts.Force is set (see
// RemovePoolOptions). Without Force the pool's Destroy runs after the
// removal is saved; an unavailable pool (see [ErrUnavailable]) has no
// Destroy run, and with Force its volumes are forgotten without asking
// whether they run, which it cannot tell. If the
// state cannot be saved, the pool stays listed and open and its volumes
// stay registered.
//
// Qubes also refuses a pool that is one of its default_pool* properties
// ("Storage pool is in use: set as default_pool"). The Manager keeps no
// such property, so that check is its caller's; [Manager.DefaultPool]
// says which pool Qubes' rules choose.
func (m *Manager) RemovePoolWith(ctx context.Context, name string, opts RemovePoolOptions) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return err
	}
	fail := func(err error) error { return fmt.Errorf("remove pool %s: %w", name, err) }
	p, err := m.lookupPool(name)
	if err != nil {
		return fail(err)
	}
	type user struct {
		vm string
		v  storage.Volume
	}
	var users []user
	var names []string // VM:volume
	for vm, v := range m.allVolumes() {
		if cfg := v.Config(); cfg.Pool == name {
			users = append(users, user{vm, v})
			names = append(names, vm+":"+cfg.Name)
		}
	}
	if len(users) > 0 && !opts.Force {
		return fail(fmt.Errorf("storage pool is in use by %s; remove those volumes first, or force the removal to forget them and leave their images on disk: %w",
			strings.Join(names, ", "), storage.ErrInUse))
	}
	// An unavailable pool cannot say whether its volumes run (nor stop
	// them): forcing forgets them unchecked, and there is nothing to
	// destroy.
	_, unavailable := p.(*unavailablePool)
	var running []string
	for i, u := range users {
		if unavailable {
			break
		}
		r, err := u.v.IsRunning(ctx)
		if err != nil {
			return fail(fmt.Errorf("volume %s: %w", names[i], err))
		}
		if r {
			running = append(running, names[i])
		}
	}
	if len(running) > 0 {
		return fail(fmt.Errorf("volumes %s run; stop their VMs first: %w", strings.Join(running, ", "), storage.ErrRunning))
	}
	delete(m.pools, name)
	from, migrating := m.migrating[name]
	delete(m.migrating, name)
	for _, u := range users {
		m.dropVolume(u.vm, u.v.Config().Name)
	}
	if err := m.save(); err != nil {
		m.pools[name] = p
		if migrating {
			m.migrating[name] = from
		}
		for _, u := range users {
			m.addVolume(u.vm, u.v)
		}
		return fail(err)
	}
	if len(users) > 0 {
		ev := m.log.Warn().Str("op", "remove-pool").Str("pool", name).Strs("volumes", names)
		if dir, ok := p.Config()["dir_path"]; ok {
			ev = ev.Str("dir_path", dir)
		}
		ev.Msg("forgot the pool and its volumes; their images stay on disk")
	}
	// Destroy comes after the removal is recorded, so that the state never
	// lists a pool whose storage is gone.
	var derr error
	if !opts.Force && !unavailable {
		if derr = p.Destroy(ctx); derr != nil {
			derr = fmt.Errorf("the pool is removed from the state, but destroying it failed: %w", derr)
		}
	}
	if err := errors.Join(derr, p.Close()); err != nil {
		return fail(err)
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
	return m.lookupPool(name)
}

// lookupPool returns the pool named name, or an error wrapping
// ErrNotFound; the caller holds mu.
func (m *Manager) lookupPool(name string) (storage.Pool, error) {
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
	p, err := m.lookupPool(name)
	if err != nil {
		return fail(err)
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

// IncludedIn returns the name of the pool whose directory holds the
// directory of the pool named name, or "" when there is none, as Qubes'
// Pool.included_in does for its file, file-reflink and linux-kernel pools
// (qubes.storage.search_pool_containing_dir, which reflink.py and file.py
// call). The directories are the pools' dir_path parameters (their
// Config), resolved as Python's os.path.realpath resolves them: symlinks
// followed where they exist, missing parts taken as written. Another
// pool holds the directory if its resolved directory is the same one or
// a parent. A pool without a dir_path (lvm_thin) is included in none, as
// Qubes' lvm_thin has no included_in. Where several pools hold the
// directory, the innermost is returned (among equals, the first by name):
// Qubes returns the first in qubes.xml's order, which the state does not
// keep. An unknown name is ErrNotFound.
//
// Qubes' search then tries lvm_thin pools: one whose volume_group and
// thin_pool are those of the thin volume holding the directory's
// filesystem (DirectoryThinPool.thin_pool: "dmsetup table" of the
// directory's st_dev, whose thin target names the pool's -tpool device,
// read from /sys/dev/block/MAJOR:MINOR/dm/name). That needs LVM and is
// not done here: a directory on a thin volume is reported in no pool
// unless a pool's directory holds it.
//
// The Admin API's admin.pool.Info prints "included_in=NAME" as its last
// line, after "size=" and "usage=", only when there is such a pool.
func (m *Manager) IncludedIn(name string) (string, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(); err != nil {
		return "", err
	}
	fail := func(err error) (string, error) { return "", fmt.Errorf("included_in of pool %s: %w", name, err) }
	p, err := m.lookupPool(name)
	if err != nil {
		return fail(err)
	}
	dir, ok := p.Config()["dir_path"]
	if !ok || dir == "" {
		return "", nil
	}
	rdir, err := realPath(dir)
	if err != nil {
		return fail(err)
	}
	best, bestDir := "", ""
	for _, other := range slices.Sorted(maps.Keys(m.pools)) {
		odir, ok := m.pools[other].Config()["dir_path"]
		if other == name || !ok || odir == "" {
			continue
		}
		oreal, err := realPath(odir)
		if err != nil {
			return fail(fmt.Errorf("pool %s: %w", other, err))
		}
		if inDir(rdir, oreal) && len(oreal) > len(bestDir) {
			best, bestDir = other, oreal
		}
	}
	return best, nil
}

// inDir reports whether path is dir or lies below it; both are absolute
// and clean.
func inDir(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// realPath returns the absolute path of p with every symlink resolved, as
// Python's os.path.realpath (non-strict) does after os.path.abspath: a
// part that does not exist or cannot be read is taken as written, and
// where a chain of links is longer than maxSymlinks (a loop), the rest is
// taken as written from there.
func realPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	resolved := "/"
	rest := strings.Split(abs, "/")
	for links := 0; len(rest) > 0; {
		part := rest[0]
		rest = rest[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			resolved = filepath.Dir(resolved)
			continue
		}
		next := filepath.Join(resolved, part)
		st, err := os.Lstat(next)
		if err != nil || st.Mode()&fs.ModeSymlink == 0 {
			resolved = next
			continue
		}
		target, err := os.Readlink(next)
		if links++; err != nil || links > maxSymlinks {
			return filepath.Join(append([]string{next}, rest...)...), nil
		}
		if filepath.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return resolved, nil
}

// maxSymlinks bounds the symlinks realPath follows, as the kernel's
// MAXSYMLINKS (40) bounds a path lookup's.
const maxSymlinks = 40
