package pool

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"github.com/vmpool/vmpool/storage/ephemeral"
)

// ManagerOptions configure a Manager.
type ManagerOptions struct {
	// Logger receives the Manager's structured log and is passed on to
	// every pool (storage.PoolConfig.Logger), whose driver adds the pool's
	// name to its lines. The zero value logs nothing.
	Logger zerolog.Logger
	// LockWait bounds every wait for a lock another process holds: the
	// state directory's in OpenManager and each pool's when it is opened
	// or added (then the error wraps storage.ErrInUse and names the
	// holder). Zero means DefaultLockWait. A lock this process holds
	// already is refused at once.
	LockWait time.Duration
	// Encryptor makes the dm-crypt mappings of ephemeral volumes when
	// StartVM starts them (storage.NewVMSet); nil means
	// ephemeral.Cryptsetup{}, cryptsetup as Qubes runs it. An ephemeral
	// volume never runs unencrypted.
	Encryptor storage.Encryptor
}

// ErrNotSaved is wrapped by the error of a Manager method whose operation
// was done (a VM stopped and committed, a volume reverted or resized) but
// whose state file could not be written afterwards (a full or read-only
// filesystem): the disk has the change, the state file does not yet. It
// is not a failure of the operation; retrying it would do it again. The
// next successful save, or the next OpenManager (which reads the sizes
// from the disk), brings the state file up to date.
var ErrNotSaved = errors.New("done, but the state could not be saved")

// DefaultLockWait is the LockWait of a Manager whose options set none.
const DefaultLockWait = 30 * time.Second

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
//
// A recorded pool that cannot be opened does not keep the Manager from
// opening: a pool whose driver is not registered in the program (an
// lvm_thin pool before its driver exists), or whose driver's Open refuses
// it for a reason of that pool alone (its directory records another state
// as owner, another process holds it, a parameter the driver does not
// know), is kept as unavailable. It is listed by Pools and Pool with its
// recorded driver and parameters ([Unavailable] says why), its VMs'
// volume configurations stay as recorded and are saved back unchanged,
// and every operation on it or on those volumes (StartVM, CreateVolume,
// ResizeVolume, SetPoolParameter, ...) fails with an error wrapping
// ErrUnavailable, while the other pools work. RemovePool removes an
// unavailable pool that no volume uses; RemovePoolWith with Force also
// one that volumes use (their state cannot be read, so they are not
// checked for running). The next OpenManager tries the pool again.
type Manager struct {
	dir      string
	id       string // the state's ID, the owner recorded in its pools' directories
	log      zerolog.Logger
	lock     *fsutil.Lock
	lockWait time.Duration
	enc      storage.Encryptor

	// mu guards closed, pools and vms: held exclusively to add or remove
	// a pool or volume, shared to use one. It is taken before saveMu.
	mu     sync.RWMutex
	closed bool
	pools  map[string]storage.Pool
	vms    map[string]map[string]storage.Volume // VM name → volume name → volume
	// migrating notes the pools whose migration has its last step to do:
	// pool name → the driver it was migrated from (see MigratePool).
	migrating map[string]string

	// saveMu serialises writes of the state file; written is the file's
	// content as last read or written, so that an unchanged state is not
	// rewritten.
	saveMu  sync.Mutex
	written []byte

	// bg are the pools whose background work CancelBackground abandons;
	// bgMu is not held by Close, so that a signal handler can cancel
	// while Close waits.
	bgMu sync.Mutex
	bg   []storage.BackgroundCanceller
}

// OpenManager opens the Manager whose state lives in dir, creating dir
// (mode 0700) if it is missing. It takes an exclusive flock on dir, waiting
// up to opts.LockWait (or until ctx ends) for another holder to release it
// (then the error wraps storage.ErrInUse and names the holder). It reads dir/state.json (a missing file is an empty
// state; malformed JSON, an unknown field or a version other than 1 is an
// error wrapping storage.ErrInvalidConfig, and the file is left alone),
// opens every pool with [Open] (Setup is not run again) and registers
// every volume configuration with its pool's InitVolume. A pool that
// cannot be opened is kept as unavailable (see [ErrUnavailable]) unless
// ctx ended meanwhile. On any error nothing stays open.
func OpenManager(ctx context.Context, dir string, opts ManagerOptions) (*Manager, error) {
	if err := makeStateDir(dir); err != nil {
		return nil, fmt.Errorf("open pool manager: %w", err)
	}
	wait := opts.LockWait
	if wait <= 0 {
		wait = DefaultLockWait
	}
	lctx, cancel := context.WithTimeout(ctx, wait)
	lock, err := fsutil.LockPath(lctx, dir)
	cancel()
	if err != nil {
		if errors.Is(err, fsutil.ErrLocked) {
			return nil, fmt.Errorf("open pool manager: %w: %w", storage.ErrInUse, err)
		}
		return nil, fmt.Errorf("open pool manager: %w", err)
	}
	m := &Manager{
		dir:       dir,
		log:       opts.Logger,
		lock:      lock,
		lockWait:  wait,
		enc:       opts.Encryptor,
		pools:     make(map[string]storage.Pool),
		vms:       make(map[string]map[string]storage.Volume),
		migrating: make(map[string]string),
	}
	if m.enc == nil {
		m.enc = ephemeral.Cryptsetup{}
	}
	if err := removeStateTemps(dir); err != nil {
		m.closeAll()
		return nil, fmt.Errorf("open pool manager %s: remove temporary state files: %w", dir, err)
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
	m.id = st.ID
	if m.id == "" {
		if m.id, err = newStateID(); err != nil {
			return err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(st.Pools)) {
		ps := st.Pools[name]
		if err := storage.ValidatePoolName(name); err != nil {
			return fmt.Errorf("state file: %w", err)
		}
		p, err := m.openPool(ctx, name, ps.Driver, ps.Params, false)
		if err != nil {
			if cerr := ctx.Err(); cerr != nil { // the caller's, maybe the cause
				if !errors.Is(err, cerr) {
					err = fmt.Errorf("%w (%w)", err, cerr)
				}
				return fmt.Errorf("open pool %s: %w", name, err)
			}
			p = m.keepUnavailable(name, ps, err)
		} else if err := m.probe(ctx, p); err != nil {
			m.closePool(p)
			p = m.keepUnavailable(name, ps, err)
		}
		m.pools[name] = p
		m.track(p)
		if ps.MigratingFrom != "" {
			m.migrating[name] = ps.MigratingFrom
		}
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
	// Drivers read sizes from the disk: a change whose save failed (a
	// resize, an import) is recorded now if the state can be written; if
	// it cannot, the next save records it.
	if data != nil {
		if err := m.save(); err != nil {
			m.log.Warn().Err(err).Msg("the state file is stale and cannot be updated")
		}
	}
	m.finishMigrations(ctx)
	for vm, v := range m.allVolumes() {
		if _, ok := v.(*unavailableVolume); ok {
			continue // its pool's warning said it
		}
		if err := v.Verify(ctx); err != nil {
			m.log.Warn().Err(err).Str("vm", vm).Str("vid", v.Config().VID).Msg("volume is listed in the state but its image is missing")
		}
	}
	return nil
}

// probe asks a pool that is not a directory (lvm_thin) whether its
// storage is here, as its Open does not: a volume group that is not
// active on this host (another installation's, a disk not attached)
// makes the pool unavailable, not the Manager unable to open.
func (m *Manager) probe(ctx context.Context, p storage.Pool) error {
	if _, isDir := p.Config()["dir_path"]; isDir {
		return nil
	}
	u, err := p.Usage(ctx)
	if err != nil {
		return err
	}
	if u.Unavailable {
		cfg := p.Config()
		var where []string
		for _, k := range slices.Sorted(maps.Keys(cfg)) {
			if k != "name" && k != "driver" {
				where = append(where, k+"="+cfg[k])
			}
		}
		return fmt.Errorf("its storage (%s) is not on this host: %w", strings.Join(where, " "), storage.ErrNotFound)
	}
	return nil
}

// keepUnavailable returns the placeholder of the recorded pool name,
// which could not be opened because of err, and logs why.
func (m *Manager) keepUnavailable(name string, ps poolState, err error) *unavailablePool {
	p := newUnavailablePool(name, ps.Driver, ps.Params, err)
	m.log.Warn().Err(err).Str("pool", name).Str("driver", ps.Driver).
		Msg("the pool cannot be opened; it is kept as unavailable, with its volumes as recorded")
	return p
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
	if up, ok := p.(*unavailablePool); ok {
		v, err := up.record(cfg)
		if err != nil {
			return fmt.Errorf("state file: volume %s of VM %s: %w", cfg.Name, vm, err)
		}
		m.addVolume(vm, v)
		return nil
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

// restoreState puts the state file back to data, as last read or written
// before a change that failed; nil data means there was no file. The
// caller holds mu.
func (m *Manager) restoreState(data []byte) error {
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	if bytes.Equal(data, m.written) {
		return nil
	}
	if data == nil {
		if _, err := fsutil.Remove(filepath.Join(m.dir, StateFile)); err != nil {
			return fmt.Errorf("restore state: %w", err)
		}
	} else if err := writeState(m.dir, data); err != nil {
		return fmt.Errorf("restore state: %w", err)
	}
	m.written = data
	return nil
}

// snapshot returns the state of the live objects; the caller holds mu.
func (m *Manager) snapshot() *state {
	st := &state{Version: stateVersion, ID: m.id, Pools: make(map[string]poolState), VMs: make(map[string]vmState)}
	for name, p := range m.pools {
		st.Pools[name] = poolState{Driver: p.Driver(), Params: persistentParams(p), MigratingFrom: m.migrating[name]}
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

// CancelBackground abandons the background work of every pool that can
// (storage.BackgroundCanceller: file-reflink's precache copies), so that
// Close returns without waiting for it, as a program told to stop wants.
// What the Manager's methods did is durable already.
// It may be called while Close runs, from another goroutine (a signal
// handler): it takes no lock Close holds.
func (m *Manager) CancelBackground() {
	m.bgMu.Lock()
	defer m.bgMu.Unlock()
	for _, c := range m.bg {
		c.CancelBackground()
	}
}

// track notes p's background work for CancelBackground.
func (m *Manager) track(p storage.Pool) {
	if c, ok := p.(storage.BackgroundCanceller); ok {
		m.bgMu.Lock()
		m.bg = append(m.bg, c)
		m.bgMu.Unlock()
	}
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

// openPool opens a pool with the driver's Open, as owned by this state
// (adopt: taking over a directory recorded for another owner at Setup),
// waiting at most lockWait for the pool's lock.
func (m *Manager) openPool(ctx context.Context, name, driver string, params map[string]string, adopt bool) (storage.Pool, error) {
	ctx, cancel := context.WithTimeout(ctx, m.lockWait)
	defer cancel()
	return Open(ctx, driver, storage.PoolConfig{Name: name, Params: maps.Clone(params), Logger: m.log, Owner: m.owner(name), Adopt: adopt})
}

// owner is the owner this state records in the directory of its pool
// name.
func (m *Manager) owner(name string) storage.PoolOwner {
	return storage.PoolOwner{ID: m.id, Desc: fmt.Sprintf("pool %s of the vmpool state in %s", name, m.dir)}
}

// newStateID returns a random state ID.
func newStateID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("state ID: %w", err)
	}
	return hex.EncodeToString(b), nil
}
