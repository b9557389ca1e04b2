package file

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/vmpool/vmpool/internal/filepool"
	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

// DriverName is the name the driver registers under.
const DriverName = "file"

func init() { pool.Register(DriverName, Driver{}) }

// Driver makes file pools.
type Driver struct{}

// Parameters lists revisions_to_keep, dir_path (required) and
// ephemeral_volatile, in the order of Qubes' FilePool.
func (Driver) Parameters() []storage.Parameter {
	return []storage.Parameter{
		{Name: "revisions_to_keep", Doc: "revisions each origin volume keeps by default: -1 (no snapshots), 0 or 1; default 1"},
		{Name: "dir_path", Required: true, Doc: "the pool's directory; its parent must exist"},
		{Name: "ephemeral_volatile", Doc: "make volatile volumes ephemeral by default (True/False); default False"},
	}
}

// Open validates the parameters and returns the pool; it makes nothing on
// disk (Setup does). If dir_path exists, the pool locks it (a lock held by
// another process is waited for until ctx ends, one held by this process
// is refused at once; both storage.ErrInUse), refuses it when it records
// another owner than cfg.Owner and records cfg.Owner where it records
// none, as file-reflink does.
func (d Driver) Open(ctx context.Context, cfg storage.PoolConfig) (storage.Pool, error) {
	return d.open(ctx, cfg, dmLayer{})
}

func (Driver) open(ctx context.Context, cfg storage.PoolConfig, layer blockLayer) (*filePool, error) {
	p, err := newPool(cfg, layer)
	if err != nil {
		return nil, &storage.Error{Op: "open", Pool: cfg.Name, Err: err}
	}
	if st, err := os.Stat(p.dir); err == nil && st.IsDir() {
		if err := p.lockDir(ctx); err != nil {
			return nil, &storage.Error{Op: "open", Pool: cfg.Name, Err: err}
		}
		if err := filepool.CheckOwner(p.dir, p.owner, p.adopt, p.log); err != nil {
			p.Close()
			return nil, &storage.Error{Op: "open", Pool: cfg.Name, Err: err}
		}
	}
	return p, nil
}

// filePool is a file pool: a storage.Pool.
type filePool struct {
	name              string
	dir               string
	revisionsToKeep   atomic.Int64 // the default of new volumes
	ephemeralVolatile atomic.Bool
	log               zerolog.Logger
	owner             storage.PoolOwner
	adopt             bool
	layer             blockLayer

	// dmMu serialises the device-mapper work of all volumes, as the
	// global lock of Qubes' file.py does: a snapshot's start reads (and
	// may create) its source's cow while the source commits.
	dmMu sync.Mutex

	mu       sync.Mutex
	volumes  map[string]*volume
	lock     *fsutil.Lock
	closed   bool
	inflight sync.WaitGroup
}

func newPool(cfg storage.PoolConfig, layer blockLayer) (*filePool, error) {
	if cfg.Name == "" {
		return nil, fmt.Errorf("%w: pool name is empty", storage.ErrInvalidConfig)
	}
	p := &filePool{
		name:    cfg.Name,
		owner:   cfg.Owner,
		adopt:   cfg.Adopt,
		log:     cfg.Logger.With().Str("pool", cfg.Name).Logger(),
		layer:   layer,
		volumes: make(map[string]*volume),
	}
	abs, err := filepool.DirPath(DriverName, cfg.Params, Driver{}.Parameters())
	if err != nil {
		return nil, err
	}
	p.dir = abs
	p.revisionsToKeep.Store(1)
	if s, ok := cfg.Params["revisions_to_keep"]; ok {
		n, err := parseRevisionsToKeep(s)
		if err != nil {
			return nil, err
		}
		p.revisionsToKeep.Store(int64(n))
	}
	if s, ok := cfg.Params["ephemeral_volatile"]; ok {
		b, err := filepool.ParseBool(s)
		if err != nil {
			return nil, fmt.Errorf("%w: ephemeral_volatile: %w", storage.ErrInvalidConfig, err)
		}
		p.ephemeralVolatile.Store(b)
	}
	return p, nil
}

// maxRevisions is the most revisions a file volume keeps: its one
// "<vid>-cow.img.old".
const maxRevisions = 1

// parseRevisionsToKeep parses a pool's revisions_to_keep: an integer of at
// least -1 (ErrInvalidConfig), at most 1 (ErrUnsupported, as Qubes'
// NotImplementedError "FilePool supports maximum 1 volume revision to
// keep").
func parseRevisionsToKeep(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < -1 {
		return 0, fmt.Errorf("%w: revisions_to_keep %q: want an integer of at least -1", storage.ErrInvalidConfig, s)
	}
	if n > maxRevisions {
		return 0, fmt.Errorf("revisions_to_keep %d: the file driver keeps at most %d revision: %w", n, maxRevisions, storage.ErrUnsupported)
	}
	return n, nil
}

// lockDir takes the pool directory's lock, once.
func (p *filePool) lockDir(ctx context.Context) error {
	p.mu.Lock()
	held := p.lock != nil
	p.mu.Unlock()
	if held {
		return nil
	}
	l, err := filepool.Lock(ctx, p.dir)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lock != nil {
		return l.Unlock()
	}
	p.lock = l
	return nil
}

// begin marks an operation in flight; it fails once the pool is closed.
func (p *filePool) begin() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return storage.ErrClosed
	}
	p.inflight.Add(1)
	return nil
}

func (p *filePool) end() { p.inflight.Done() }

// Name returns the pool's name.
func (p *filePool) Name() string { return p.name }

// Driver returns "file".
func (p *filePool) Driver() string { return DriverName }

// Config returns name, driver, dir_path, revisions_to_keep and
// ephemeral_volatile, as Qubes' FilePool.config.
func (p *filePool) Config() map[string]string {
	return map[string]string{
		"name":               p.name,
		"driver":             DriverName,
		"dir_path":           p.dir,
		"revisions_to_keep":  strconv.FormatInt(p.revisionsToKeep.Load(), 10),
		"ephemeral_volatile": filepool.PyBool(p.ephemeralVolatile.Load()),
	}
}

// Capabilities: at most one revision, no revert, no snapshot-then-commit,
// never outdated (Qubes' is_outdated is always False), no import into a
// running volume, no reflinks.
func (p *filePool) Capabilities() storage.Capabilities {
	return storage.Capabilities{MaxRevisions: maxRevisions}
}

// Setup creates dir_path (not its parents), locks it, refuses a directory
// recorded for another owner (unless PoolConfig.Adopt), creates appvms/
// and vm-templates/ and records PoolConfig.Owner. There is no setup_check:
// the file driver works on any filesystem.
func (p *filePool) Setup(ctx context.Context) error {
	if err := p.begin(); err != nil {
		return &storage.Error{Op: "setup", Pool: p.name, Err: err}
	}
	defer p.end()
	if err := p.setup(ctx); err != nil {
		return &storage.Error{Op: "setup", Pool: p.name, Err: err}
	}
	return nil
}

func (p *filePool) setup(ctx context.Context) error {
	if st, err := os.Lstat(p.dir); err == nil && !st.IsDir() {
		return fmt.Errorf("%w: dir_path %s is a %s, not a directory", storage.ErrInvalidConfig, p.dir, filepool.FileKind(st.Mode()))
	}
	if _, err := p.mkdir(p.dir); err != nil {
		return err
	}
	if err := p.lockDir(ctx); err != nil {
		return err
	}
	if err := filepool.CheckOwner(p.dir, p.owner, p.adopt, p.log); err != nil {
		return err
	}
	return filepool.MakeTree(p.dir, p.owner, p.mkdir)
}

// Destroy does nothing, as in Qubes: the images stay.
func (p *filePool) Destroy(ctx context.Context) error { return nil }

// Usage reports the filesystem's size and use (statvfs), as Qubes does;
// with the pool's directory missing, Unavailable.
func (p *filePool) Usage(ctx context.Context) (storage.PoolUsage, error) {
	u, err := filepool.Usage(p.dir)
	if err != nil {
		return storage.PoolUsage{}, &storage.Error{Op: "usage", Pool: p.name, Err: err}
	}
	return u, nil
}

// SetParameter changes revisions_to_keep (-1, 0 or 1; the default of
// volumes registered from now on) or ephemeral_volatile (yes/no,
// true/false, on/off, 1/0, any case, as the Admin API's pool.Set parses
// it). dir_path cannot change: storage.ErrUnsupported.
func (p *filePool) SetParameter(ctx context.Context, name, value string) error {
	fail := func(err error) error { return &storage.Error{Op: "set " + name, Pool: p.name, Err: err} }
	if err := p.begin(); err != nil {
		return fail(err)
	}
	defer p.end()
	switch name {
	case "revisions_to_keep":
		n, err := parseRevisionsToKeep(value)
		if err != nil {
			return fail(err)
		}
		p.revisionsToKeep.Store(int64(n))
	case "ephemeral_volatile":
		b, err := storage.ParsePropertyBool(value)
		if err != nil {
			return fail(err)
		}
		p.ephemeralVolatile.Store(b)
	case "dir_path":
		return fail(fmt.Errorf("%s is fixed when the pool is added: %w", name, storage.ErrUnsupported))
	default:
		return fail(fmt.Errorf("%w: unknown parameter %q (file can change revisions_to_keep, ephemeral_volatile)", storage.ErrInvalidConfig, name))
	}
	return nil
}

// InitVolume registers a volume from its configuration, changing nothing
// on disk. The vid must be appvms/VM/NAME or vm-templates/VM/NAME, NAME
// equal to cfg.Name (filled in from the vid when empty); a snap_on_start
// source is a vid of this pool. Snapshot-then-commit volumes are
// storage.ErrUnsupported (Qubes' NotImplementedError), so is a
// revisions_to_keep above 1. As in Qubes, a volume that is not
// save_on_stop keeps no revisions (revisions_to_keep 0). A save_on_stop
// volume whose image exists takes its size from it.
func (p *filePool) InitVolume(cfg storage.VolumeConfig) (storage.Volume, error) {
	fail := func(err error) (storage.Volume, error) {
		return nil, &storage.Error{Op: "init volume", Pool: p.name, VID: cfg.VID, Err: err}
	}
	if err := p.begin(); err != nil {
		return fail(err)
	}
	defer p.end()
	if err := filepool.CheckVolumeConfig(&cfg, p.name); err != nil {
		return fail(err)
	}
	if cfg.Kind() == storage.SnapshotCommit {
		return fail(fmt.Errorf("snap_on_start + save_on_stop: %w", storage.ErrUnsupported))
	}
	if !cfg.SaveOnStop {
		zero := 0
		cfg.RevisionsToKeep = &zero
	}
	if cfg.RevisionsToKeep == nil {
		n := int(p.revisionsToKeep.Load())
		cfg.RevisionsToKeep = &n
	}
	if n := *cfg.RevisionsToKeep; n > maxRevisions {
		return fail(fmt.Errorf("revisions_to_keep %d: the file driver keeps at most %d revision: %w", n, maxRevisions, storage.ErrUnsupported))
	}
	v := newVolume(p, cfg)
	v.sz = v.diskSize()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.volumes[cfg.VID]; dup {
		return fail(storage.ErrExists)
	}
	p.volumes[cfg.VID] = v
	return v, nil
}

// ForgetVolume unregisters volume vid, leaving its files alone; later
// operations on it fail with storage.ErrNotFound.
func (p *filePool) ForgetVolume(ctx context.Context, vid string) error {
	v := p.lookup(vid)
	if v == nil {
		return &storage.Error{Op: "forget volume", Pool: p.name, VID: vid, Err: storage.ErrNotFound}
	}
	if err := v.lock(ctx); err != nil {
		return v.wrap("forget volume", err)
	}
	defer v.unlock()
	v.removed = true
	p.forget(vid)
	return nil
}

func (p *filePool) forget(vid string) {
	p.mu.Lock()
	delete(p.volumes, vid)
	p.mu.Unlock()
}

// lookup returns the registered volume vid, or nil.
func (p *filePool) lookup(vid string) *volume {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.volumes[vid]
}

// Volume returns the registered volume vid.
func (p *filePool) Volume(vid string) (storage.Volume, error) {
	if v := p.lookup(vid); v != nil {
		return v, nil
	}
	return nil, &storage.Error{Op: "get volume", Pool: p.name, VID: vid, Err: storage.ErrNotFound}
}

// Volumes returns the registered volumes, sorted by vid.
func (p *filePool) Volumes() []storage.Volume {
	p.mu.Lock()
	defer p.mu.Unlock()
	vids := slices.Sorted(maps.Keys(p.volumes))
	out := make([]storage.Volume, len(vids))
	for i, vid := range vids {
		out[i] = p.volumes[vid]
	}
	return out
}

// Close waits for operations in flight, then releases the pool's lock.
// Running volumes keep their devices. Later operations fail with
// storage.ErrClosed.
func (p *filePool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.inflight.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lock != nil {
		err := p.lock.Unlock()
		p.lock = nil
		return err
	}
	return nil
}
