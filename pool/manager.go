package pool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// ManagerOptions configure a Manager.
type ManagerOptions struct {
	// Logger receives the Manager's structured log and is passed on to
	// every pool (storage.PoolConfig.Logger), whose driver adds the pool's
	// name to its lines. The zero value logs nothing.
	Logger zerolog.Logger
}

// Manager keeps the named pools of one host and the volume configurations
// of its VMs in one state file (see [StateFile]), as Qubes keeps them in
// qubes.xml. It re-creates the pools and volumes from that file when it
// opens, and writes the file back, atomically, after every change it makes
// (Qubes' app.save()). A Manager holds an exclusive flock on its directory
// from OpenManager to Close, so a second process cannot change the state
// underneath it.
//
// Methods that add or remove pools or volumes run one at a time; methods
// that use existing volumes (StartVM, ResizeVolume, ImportData, ...) run
// in parallel with each other, the drivers serialising what touches one
// volume. A Manager is safe for concurrent use.
//
// The Volume and Pool values a Manager returns may be used directly; a
// caller that changes a volume's size that way (Resize, ImportData,
// ImportVolume, Revert) calls Save afterwards.
type Manager struct {
	dir  string
	log  zerolog.Logger
	lock *fsutil.Lock

	// mu guards closed, pools and vms: held exclusively to add or remove
	// a pool or volume, shared to use one. It is taken before saveMu.
	mu     sync.RWMutex
	closed bool
	pools  map[string]storage.Pool
	vms    map[string]map[string]storage.Volume // VM name → volume name → volume

	// saveMu serialises writes of the state file; written is the file's
	// content as last read or written, so that an unchanged state is not
	// rewritten.
	saveMu  sync.Mutex
	written []byte
}

// OpenManager opens the Manager whose state lives in dir, creating dir
// (mode 0700) if it is missing. It takes an exclusive flock on dir, waiting
// until ctx ends for another holder to release it (then the error wraps
// storage.ErrInUse). It reads dir/state.json (a missing file is an empty
// state; malformed JSON, an unknown field or a version other than 1 is an
// error wrapping storage.ErrInvalidConfig, and the file is left alone),
// opens every pool with [Open] (Setup is not run again) and registers
// every volume configuration with its pool's InitVolume. On any error
// nothing stays open.
func OpenManager(ctx context.Context, dir string, opts ManagerOptions) (*Manager, error) {
	if err := makeStateDir(dir); err != nil {
		return nil, fmt.Errorf("open pool manager: %w", err)
	}
	lock, err := fsutil.LockPath(ctx, dir)
	if err != nil {
		if errors.Is(err, fsutil.ErrLocked) {
			return nil, fmt.Errorf("open pool manager: another process holds the lock on %s: %w (%w)", dir, storage.ErrInUse, ctx.Err())
		}
		return nil, fmt.Errorf("open pool manager: %w", err)
	}
	m := &Manager{
		dir:   dir,
		log:   opts.Logger,
		lock:  lock,
		pools: make(map[string]storage.Pool),
		vms:   make(map[string]map[string]storage.Volume),
	}
	if err := m.load(ctx); err != nil {
		m.closeAll()
		return nil, fmt.Errorf("open pool manager %s: %w", dir, err)
	}
	return m, nil
}

// makeStateDir creates dir with mode 0700 if it does not exist and makes
// its name durable.
func makeStateDir(dir string) error {
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return fsutil.SyncDir(filepath.Dir(filepath.Clean(dir)))
}

// load reads the state file, opens its pools and registers its volumes.
func (m *Manager) load(ctx context.Context) error {
	st, data, err := readState(filepath.Join(m.dir, StateFile))
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(st.Pools)) {
		ps := st.Pools[name]
		if err := storage.ValidatePoolName(name); err != nil {
			return fmt.Errorf("state file: %w", err)
		}
		p, err := Open(ctx, ps.Driver, storage.PoolConfig{Name: name, Params: maps.Clone(ps.Params), Logger: m.log})
		if err != nil {
			return fmt.Errorf("open pool %s: %w", name, err)
		}
		m.pools[name] = p
	}
	// A snap_on_start volume is registered after its source, so a driver
	// may resolve the source in InitVolume.
	type entry struct {
		vm  string
		cfg storage.VolumeConfig
	}
	var todo []entry
	for _, vm := range slices.Sorted(maps.Keys(st.VMs)) {
		if err := storage.ValidateVMName(vm); err != nil {
			return fmt.Errorf("state file: %w", err)
		}
		vols := st.VMs[vm].Volumes
		for _, name := range slices.Sorted(maps.Keys(vols)) {
			cfg := vols[name]
			if cfg.Name != name {
				return fmt.Errorf("%w: state file: VM %s: volume %q is stored under the name %q", storage.ErrInvalidConfig, vm, cfg.Name, name)
			}
			todo = append(todo, entry{vm, cfg})
		}
	}
	for len(todo) > 0 {
		var later []entry
		for _, e := range todo {
			if e.cfg.Source != "" && !m.registered(e.cfg.Pool, e.cfg.Source) {
				later = append(later, e)
				continue
			}
			if err := m.initVolume(e.vm, e.cfg); err != nil {
				return err
			}
		}
		if len(later) == len(todo) {
			// Sources missing or in a cycle: let the driver judge them.
			for _, e := range later {
				if err := m.initVolume(e.vm, e.cfg); err != nil {
					return err
				}
			}
			break
		}
		todo = later
	}
	m.written = data
	return nil
}

// registered reports whether vid is registered in the pool named pool.
func (m *Manager) registered(pool, vid string) bool {
	p, ok := m.pools[pool]
	if !ok {
		return false
	}
	_, err := p.Volume(vid)
	return err == nil
}

// initVolume registers a stored volume configuration of vm with its pool.
func (m *Manager) initVolume(vm string, cfg storage.VolumeConfig) error {
	p, ok := m.pools[cfg.Pool]
	if !ok {
		return fmt.Errorf("%w: state file: volume %s of VM %s is in pool %q, which does not exist", storage.ErrNotFound, cfg.Name, vm, cfg.Pool)
	}
	v, err := p.InitVolume(cfg)
	if err != nil {
		return fmt.Errorf("init volume %s of VM %s: %w", cfg.Name, vm, err)
	}
	m.addVolume(vm, v)
	return nil
}

// allVolumes yields every volume with its VM's name, sorted by VM and
// volume name; the caller holds mu.
func (m *Manager) allVolumes() iter.Seq2[string, storage.Volume] {
	return func(yield func(string, storage.Volume) bool) {
		for _, vm := range slices.Sorted(maps.Keys(m.vms)) {
			for _, name := range slices.Sorted(maps.Keys(m.vms[vm])) {
				if !yield(vm, m.vms[vm][name]) {
					return
				}
			}
		}
	}
}

func (m *Manager) addVolume(vm string, v storage.Volume) {
	if m.vms[vm] == nil {
		m.vms[vm] = make(map[string]storage.Volume)
	}
	m.vms[vm][v.Config().Name] = v
}

func (m *Manager) dropVolume(vm, name string) {
	delete(m.vms[vm], name)
	if len(m.vms[vm]) == 0 {
		delete(m.vms, vm)
	}
}

// Save writes the state file from the live pools and volumes (every
// volume's Config), as Qubes' app.save() does. Every method of the Manager
// that changes something calls it; a caller that changed a volume through
// its Volume value calls it too. An unchanged state is not rewritten.
func (m *Manager) Save(ctx context.Context) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return m.save()
}

// save writes the state file; the caller holds mu.
func (m *Manager) save() error {
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	data, err := m.snapshot().encode()
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if bytes.Equal(data, m.written) {
		return nil
	}
	start := time.Now()
	if err := writeState(m.dir, data); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	m.written = data
	m.log.Debug().Str("op", "save").Str("path", filepath.Join(m.dir, StateFile)).
		Int("bytes", len(data)).Dur("duration", time.Since(start)).Msg("saved state")
	return nil
}

// snapshot returns the state of the live objects; the caller holds mu.
func (m *Manager) snapshot() *state {
	st := &state{Version: stateVersion, Pools: make(map[string]poolState), VMs: make(map[string]vmState)}
	for name, p := range m.pools {
		st.Pools[name] = poolState{Driver: p.Driver(), Params: persistentParams(p)}
	}
	for vm, vols := range m.vms {
		vs := vmState{Volumes: make(map[string]storage.VolumeConfig, len(vols))}
		for name, v := range vols {
			vs.Volumes[name] = v.Config()
		}
		st.VMs[vm] = vs
	}
	return st
}

// persistentParams returns the parameters to open p with again: its Config
// without name and driver. Parameters the driver does not report (such as
// file-reflink's setup_check, which Qubes does not persist either) are
// dropped.
func persistentParams(p storage.Pool) map[string]string {
	params := p.Config()
	delete(params, "name")
	delete(params, "driver")
	return params
}

// check returns an error once the Manager is closed; the caller holds mu.
func (m *Manager) check() error {
	if m.closed {
		return fmt.Errorf("pool manager %s: %w", m.dir, storage.ErrClosed)
	}
	return nil
}

// AddPool opens a new pool named name with the given driver and
// parameters, runs its Setup (file-reflink refuses a filesystem without
// reflinks there unless setup_check=no) and saves it. A malformed name or a
// "name" or "driver" parameter is ErrInvalidConfig, a name in use
// ErrExists, an unknown driver ErrNotFound. On any failure nothing is
// saved and the pool is closed; what Setup made stays (as in Qubes, where
// a pool's directory may hold data from before).
func (m *Manager) AddPool(ctx context.Context, name, driver string, params map[string]string) (storage.Pool, error) {
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
	p, err := Open(ctx, driver, storage.PoolConfig{Name: name, Params: maps.Clone(params), Logger: m.log})
	if err != nil {
		return nil, fmt.Errorf("add pool %s: %w", name, err)
	}
	if err := p.Setup(ctx); err != nil {
		m.closePool(p)
		return nil, fmt.Errorf("add pool %s: %w", name, err)
	}
	m.pools[name] = p
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

// CreateVolume adds the volume cfg to VM vm: it registers it with the pool
// named cfg.Pool (InitVolume), creates its images and saves. The VM exists
// as long as it has volumes. A malformed VM name or configuration is
// ErrInvalidConfig; an unknown pool, or a snap_on_start source that is not
// a volume of the same pool, ErrNotFound; a volume of that name in the VM,
// or of that vid in the pool, ErrExists. On failure the volume is removed
// again and nothing is saved.
func (m *Manager) CreateVolume(ctx context.Context, vm string, cfg storage.VolumeConfig) (storage.Volume, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return nil, err
	}
	fail := func(err error) (storage.Volume, error) {
		return nil, fmt.Errorf("create volume %s of VM %s: %w", cfg.Name, vm, err)
	}
	if err := storage.ValidateVMName(vm); err != nil {
		return fail(err)
	}
	if err := cfg.Validate(); err != nil {
		return fail(err)
	}
	if cfg.Pool == "" {
		return fail(fmt.Errorf("%w: the volume configuration names no pool", storage.ErrInvalidConfig))
	}
	p, ok := m.pools[cfg.Pool]
	if !ok {
		return fail(fmt.Errorf("no pool %q: %w", cfg.Pool, storage.ErrNotFound))
	}
	if _, ok := m.vms[vm][cfg.Name]; ok {
		return fail(fmt.Errorf("VM %s has a volume %s: %w", vm, cfg.Name, storage.ErrExists))
	}
	if cfg.SnapOnStart {
		if _, err := p.Volume(cfg.Source); err != nil {
			return fail(fmt.Errorf("source %s is not a volume of pool %s: %w", cfg.Source, cfg.Pool, storage.ErrNotFound))
		}
	}
	v, err := p.InitVolume(cfg)
	if err != nil {
		return fail(err)
	}
	if err := v.Create(ctx); err != nil {
		m.undoCreate(ctx, v)
		return fail(err)
	}
	m.addVolume(vm, v)
	if err := m.save(); err != nil {
		m.dropVolume(vm, cfg.Name)
		m.undoCreate(ctx, v)
		return fail(err)
	}
	return v, nil
}

// undoCreate removes a volume whose creation failed; an error is logged,
// not returned over the failure's.
func (m *Manager) undoCreate(ctx context.Context, v storage.Volume) {
	if err := v.Remove(context.WithoutCancel(ctx)); err != nil {
		m.log.Error().Err(err).Str("pool", v.Config().Pool).Str("vid", v.Config().VID).Msg("remove volume after failed create")
	}
}

// RemoveVolume removes volume name of VM vm: its images, revisions and
// configuration; a VM left without volumes is forgotten. A running volume
// is ErrRunning; a volume that is the snap_on_start source of another
// volume ErrInUse.
func (m *Manager) RemoveVolume(ctx context.Context, vm, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return err
	}
	fail := func(err error) error { return fmt.Errorf("remove volume %s of VM %s: %w", name, vm, err) }
	v, err := m.volume(vm, name)
	if err != nil {
		return fail(err)
	}
	running, err := v.IsRunning(ctx)
	if err != nil {
		return fail(err)
	}
	if running {
		return fail(storage.ErrRunning)
	}
	cfg := v.Config()
	for ovm, o := range m.allVolumes() {
		if ocfg := o.Config(); ocfg.Pool == cfg.Pool && ocfg.Source == cfg.VID {
			return fail(fmt.Errorf("it is the source of volume %s of VM %s: %w", ocfg.Name, ovm, storage.ErrInUse))
		}
	}
	if err := v.Remove(ctx); err != nil {
		return fail(err)
	}
	m.dropVolume(vm, name)
	if err := m.save(); err != nil {
		return fail(err)
	}
	return nil
}

// Volume returns volume name of VM vm, or an error wrapping ErrNotFound.
func (m *Manager) Volume(vm, name string) (storage.Volume, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(); err != nil {
		return nil, err
	}
	return m.volume(vm, name)
}

// volume looks a volume up; the caller holds mu.
func (m *Manager) volume(vm, name string) (storage.Volume, error) {
	vols, ok := m.vms[vm]
	if !ok {
		return nil, fmt.Errorf("no VM %q: %w", vm, storage.ErrNotFound)
	}
	v, ok := vols[name]
	if !ok {
		return nil, fmt.Errorf("VM %s has no volume %q: %w", vm, name, storage.ErrNotFound)
	}
	return v, nil
}

// VMs returns the names of the VMs that have volumes, sorted.
func (m *Manager) VMs() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Sorted(maps.Keys(m.vms))
}

// VMVolumes returns the volumes of VM vm, sorted by name, as a
// storage.Set; an unknown VM is ErrNotFound.
func (m *Manager) VMVolumes(vm string) (*storage.Set, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(); err != nil {
		return nil, err
	}
	return m.vmVolumes(vm)
}

// vmVolumes builds the Set of vm; the caller holds mu.
func (m *Manager) vmVolumes(vm string) (*storage.Set, error) {
	vols, ok := m.vms[vm]
	if !ok {
		return nil, fmt.Errorf("no VM %q: %w", vm, storage.ErrNotFound)
	}
	set := make([]storage.Volume, 0, len(vols))
	for _, name := range slices.Sorted(maps.Keys(vols)) {
		set = append(set, vols[name])
	}
	return storage.NewSet(set...), nil
}

// StartVM starts all volumes of VM vm through storage.Set: verified, then
// started concurrently, the ones started rolled back without a commit if
// any fails. It saves afterwards.
func (m *Manager) StartVM(ctx context.Context, vm string) error {
	return m.withVM(vm, "start", func(set *storage.Set) error { return set.Start(ctx) })
}

// StopVM stops all volumes of VM vm concurrently (origins commit) and
// saves. Stopping a stopped VM does nothing.
func (m *Manager) StopVM(ctx context.Context, vm string) error {
	return m.withVM(vm, "stop", func(set *storage.Set) error { return set.Stop(ctx) })
}

// withVM runs fn on the volumes of vm, then saves, even when fn failed
// half-way (a volume that stopped may have changed).
func (m *Manager) withVM(vm, op string, fn func(*storage.Set) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(); err != nil {
		return err
	}
	set, err := m.vmVolumes(vm)
	if err == nil {
		err = errors.Join(fn(set), m.save())
	}
	if err != nil {
		return fmt.Errorf("%s VM %s: %w", op, vm, err)
	}
	return nil
}

// withVolume runs fn on volume name of vm, then saves, even when fn
// failed half-way (a size may have changed).
func (m *Manager) withVolume(vm, name, op string, fn func(storage.Volume) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(); err != nil {
		return err
	}
	v, err := m.volume(vm, name)
	if err == nil {
		err = fn(v)
		err = errors.Join(err, m.save())
	}
	if err != nil {
		return fmt.Errorf("%s volume %s of VM %s: %w", op, name, vm, err)
	}
	return nil
}

// ResizeVolume resizes volume name of VM vm, running or not, and saves its
// new size. Shrinking needs opts.Force (else ErrShrink).
func (m *Manager) ResizeVolume(ctx context.Context, vm, name string, size int64, opts storage.ResizeOptions) error {
	return m.withVolume(vm, name, "resize", func(v storage.Volume) error { return v.Resize(ctx, size, opts) })
}

// RevertVolume makes revision rev (the newest when empty) the committed
// state of volume name of VM vm and saves, as the Admin API's
// admin.vm.volume.Revert does. A volume that is not cleanly stopped is
// ErrDirty; an unknown revision ErrNotFound.
func (m *Manager) RevertVolume(ctx context.Context, vm, name, rev string) error {
	return m.withVolume(vm, name, "revert", func(v storage.Volume) error {
		if rev != "" {
			if err := storage.ValidateRevisionID(rev); err != nil {
				return err
			}
		}
		return v.Revert(ctx, rev)
	})
}

// Close closes every pool (each waits for its background work), releases
// the lock on the state directory and makes later calls fail with
// storage.ErrClosed. The state was saved by the calls that changed it.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return err
	}
	m.closed = true
	return m.closeAll()
}

// closeAll closes the pools and releases the lock; the caller holds mu or
// has the only reference to m.
func (m *Manager) closeAll() error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(m.pools)) {
		if err := m.pools[name].Close(); err != nil {
			errs = append(errs, fmt.Errorf("close pool %s: %w", name, err))
		}
	}
	m.pools, m.vms = nil, nil
	if err := m.lock.Unlock(); err != nil {
		errs = append(errs, fmt.Errorf("unlock %s: %w", m.dir, err))
	}
	return errors.Join(errs...)
}
