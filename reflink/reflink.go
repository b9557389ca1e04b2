package reflink

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
const DriverName = "file-reflink"

func init() { pool.Register(DriverName, Driver{}) }

// Driver makes file-reflink pools.
type Driver struct{}

// Parameters lists revisions_to_keep, dir_path (required), setup_check and
// ephemeral_volatile, in the order of Qubes' ReflinkPool.
func (Driver) Parameters() []storage.Parameter {
	return []storage.Parameter{
		{Name: "revisions_to_keep", Doc: "revisions each origin volume keeps by default (-1 disables snapshots); default 1"},
		{Name: "dir_path", Required: true, Doc: "the pool's directory; its parent must exist"},
		{Name: "setup_check", Doc: "refuse a filesystem without reflink support at setup (yes/no); default yes"},
		{Name: "ephemeral_volatile", Doc: "make volatile volumes ephemeral by default (True/False); default False"},
	}
}

// Open validates the parameters and returns the pool. If dir_path exists,
// the pool locks it (a lock held by another process is waited for until
// ctx ends, one held by this process is refused at once; both
// storage.ErrInUse, naming the holder), refuses it when it records another
// owner than cfg.Owner (ErrInUse, naming the owner; see
// storage.PoolConfig.Owner) and records cfg.Owner where it records none.
// Open deletes nothing: the "~" files a crash left are a volume's to
// clean up, once InitVolume registers it.
func (d Driver) Open(ctx context.Context, cfg storage.PoolConfig) (storage.Pool, error) {
	p, err := newPool(cfg)
	if err != nil {
		return nil, &storage.Error{Op: "open", Pool: cfg.Name, Err: err}
	}
	if st, err := os.Stat(p.dir); err == nil && st.IsDir() {
		if err := p.lockAndRecover(ctx); err != nil {
			return nil, &storage.Error{Op: "open", Pool: cfg.Name, Err: err}
		}
		if err := p.checkOwner(); err != nil {
			p.Close()
			return nil, &storage.Error{Op: "open", Pool: cfg.Name, Err: err}
		}
	}
	return p, nil
}

// reflinkPool is a file-reflink pool: a storage.Pool.
type reflinkPool struct {
	name              string
	dir               string
	revisionsToKeep   atomic.Int64 // the default of new volumes; SetParameter changes it
	setupCheck        bool
	ephemeralVolatile atomic.Bool
	log               zerolog.Logger
	worker            *worker
	owner             storage.PoolOwner // recorded in dir at Setup, checked at Open and Setup
	adopt             bool              // Setup takes over a directory of another owner

	noReflink atomic.Bool // FICLONE said EOPNOTSUPP: stop trying
	reflinkOK atomic.Bool // the reflink check passed

	// crashHook, set by tests only, is called at the named points of the
	// multi-step operations; it panics to end the operation there, as a
	// crash would (no cleanup runs).
	crashHook func(point string)

	mu       sync.Mutex
	volumes  map[string]*volume
	lock     *fsutil.Lock
	closed   bool
	inflight sync.WaitGroup
}

func newPool(cfg storage.PoolConfig) (*reflinkPool, error) {
	if cfg.Name == "" {
		return nil, fmt.Errorf("%w: pool name is empty", storage.ErrInvalidConfig)
	}
	p := &reflinkPool{
		owner:      cfg.Owner,
		adopt:      cfg.Adopt,
		name:       cfg.Name,
		setupCheck: true,
		log:        cfg.Logger.With().Str("pool", cfg.Name).Logger(),
		volumes:    make(map[string]*volume),
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
	if s, ok := cfg.Params["setup_check"]; ok {
		b, err := storage.ParsePropertyBool(s)
		if err != nil {
			return nil, fmt.Errorf("setup_check: %w", err)
		}
		p.setupCheck = b
	}
	if s, ok := cfg.Params["ephemeral_volatile"]; ok {
		b, err := filepool.ParseBool(s)
		if err != nil {
			return nil, fmt.Errorf("%w: ephemeral_volatile: %w", storage.ErrInvalidConfig, err)
		}
		p.ephemeralVolatile.Store(b)
	}
	p.worker = newWorker(p)
	return p, nil
}

// parseRevisionsToKeep parses a pool's revisions_to_keep: an integer of at
// least -1.
func parseRevisionsToKeep(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < -1 {
		return 0, fmt.Errorf("%w: revisions_to_keep %q: want an integer of at least -1", storage.ErrInvalidConfig, s)
	}
	return n, nil
}

// lockAndRecover locks the pool directory and checks reflink support.
// The "~" files a crash left are not looked for here: InitVolume hands
// each registered volume's own to the worker, and nothing else in the tree
// is the pool's to delete.
func (p *reflinkPool) lockAndRecover(ctx context.Context) error {
	p.mu.Lock()
	held := p.lock != nil
	p.mu.Unlock()
	if held {
		return nil
	}
	// The wait for another process is made without p.mu, which every
	// operation's begin takes.
	l, err := filepool.Lock(ctx, p.dir)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lock != nil { // taken meanwhile by another goroutine of this pool
		return l.Unlock()
	}
	p.lock = l
	ok, err := fsutil.ReflinkSupported(p.dir)
	p.reflinkOK.Store(err == nil && ok)
	return nil
}

// checkOwner refuses a directory recorded for another owner, unless the
// pool was opened to adopt it. A directory that records no owner (a pool
// set up before owners were recorded, or by Qubes) is claimed for
// p.owner now, so that a second keeper cannot take it over unasked; a
// failure to write the record (a read-only filesystem) is logged.
func (p *reflinkPool) checkOwner() error {
	return filepool.CheckOwner(p.dir, p.owner, p.adopt, p.log)
}

// checkDir returns an error wrapping storage.ErrNotFound when the pool's
// directory is missing or holds neither appvms/ nor vm-templates/ (an
// unmounted mount point: the directory is there, empty), and
// storage.ErrUnsafePath when it is not a directory.
func (p *reflinkPool) checkDir() error { return filepool.CheckDir(p.dir) }

// crashPoint calls the test hook, if any.
func (p *reflinkPool) crashPoint(point string) {
	if p.crashHook != nil {
		p.crashHook(point)
	}
}

// begin marks an operation in flight; it fails once the pool is closed.
func (p *reflinkPool) begin() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return storage.ErrClosed
	}
	p.inflight.Add(1)
	return nil
}

func (p *reflinkPool) end() { p.inflight.Done() }

// Name returns the pool's name.
func (p *reflinkPool) Name() string { return p.name }

// Driver returns "file-reflink".
func (p *reflinkPool) Driver() string { return DriverName }

// Config returns name, driver, dir_path, revisions_to_keep and
// ephemeral_volatile, as Qubes' ReflinkPool.config (setup_check is not
// persisted).
func (p *reflinkPool) Config() map[string]string {
	return map[string]string{
		"name":               p.name,
		"driver":             DriverName,
		"dir_path":           p.dir,
		"revisions_to_keep":  strconv.FormatInt(p.revisionsToKeep.Load(), 10),
		"ephemeral_volatile": filepool.PyBool(p.ephemeralVolatile.Load()),
	}
}

// Capabilities: any number of revisions, revert, snapshot-then-commit,
// outdated snapshots, imports into running volumes; Reflink as found on
// the pool's filesystem.
func (p *reflinkPool) Capabilities() storage.Capabilities {
	return storage.Capabilities{
		MaxRevisions:   -1,
		Revert:         true,
		SnapshotCommit: true,
		Outdated:       true,
		Reflink:        p.reflinkOK.Load() && !p.noReflink.Load(),
		ImportRunning:  true,
	}
}

// Setup creates dir_path (not its parents), refuses a filesystem without
// reflink support unless setup_check is off (storage.ErrReflinkUnsupported,
// and a directory it created is removed again), locks the pool, refuses a
// directory recorded for another owner (unless PoolConfig.Adopt), creates
// appvms/ and vm-templates/ and records PoolConfig.Owner in the directory.
func (p *reflinkPool) Setup(ctx context.Context) error {
	if err := p.begin(); err != nil {
		return &storage.Error{Op: "setup", Pool: p.name, Err: err}
	}
	defer p.end()
	if err := p.setup(ctx); err != nil {
		return &storage.Error{Op: "setup", Pool: p.name, Err: err}
	}
	return nil
}

func (p *reflinkPool) setup(ctx context.Context) error {
	if st, err := os.Stat(p.dir); err == nil && !st.IsDir() {
		return fmt.Errorf("%w: dir_path %s is a %s, not a directory", storage.ErrInvalidConfig, p.dir, filepool.FileKind(st.Mode()))
	}
	created, err := p.mkdir(p.dir)
	if err != nil {
		return err
	}
	if p.setupCheck {
		ok, err := fsutil.ReflinkSupported(p.dir)
		if err == nil && !ok {
			err = fmt.Errorf("the filesystem for %q: %w", p.dir, storage.ErrReflinkUnsupported)
		}
		if err != nil {
			if created {
				p.removeEmptyDir(p.dir)
			}
			return err
		}
	}
	if err := p.lockAndRecover(ctx); err != nil {
		return err
	}
	if err := p.checkOwner(); err != nil {
		return err
	}
	return filepool.MakeTree(p.dir, p.owner, p.mkdir)
}

// Destroy does nothing, as in Qubes: the images stay.
func (p *reflinkPool) Destroy(ctx context.Context) error { return nil }

// Usage reports the filesystem's size and use (statvfs), as Qubes does;
// with the pool's directory missing, Unavailable and no figures, as
// Qubes' usage_details gives {} then.
func (p *reflinkPool) Usage(ctx context.Context) (storage.PoolUsage, error) {
	u, err := filepool.Usage(p.dir)
	if err != nil {
		return storage.PoolUsage{}, &storage.Error{Op: "usage", Pool: p.name, Err: err}
	}
	return u, nil
}

// SetParameter changes revisions_to_keep (the default of volumes
// registered from now on; registered ones keep theirs, as in Qubes) or
// ephemeral_volatile (parsed as the Admin API's pool.Set does: yes/no,
// true/false, on/off, 1/0, any case). dir_path and setup_check cannot
// change: storage.ErrUnsupported.
func (p *reflinkPool) SetParameter(ctx context.Context, name, value string) error {
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
	case "dir_path", "setup_check":
		return fail(fmt.Errorf("%s is fixed when the pool is added: %w", name, storage.ErrUnsupported))
	default:
		return fail(fmt.Errorf("%w: unknown parameter %q (file-reflink can change revisions_to_keep, ephemeral_volatile)", storage.ErrInvalidConfig, name))
	}
	return nil
}

// Volume returns the registered volume vid.
func (p *reflinkPool) Volume(vid string) (storage.Volume, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.volumes[vid]
	if !ok {
		return nil, &storage.Error{Op: "get volume", Pool: p.name, VID: vid, Err: storage.ErrNotFound}
	}
	return v, nil
}

// Volumes returns the registered volumes, sorted by vid.
func (p *reflinkPool) Volumes() []storage.Volume {
	p.mu.Lock()
	defer p.mu.Unlock()
	vids := slices.Sorted(maps.Keys(p.volumes))
	out := make([]storage.Volume, len(vids))
	for i, vid := range vids {
		out[i] = p.volumes[vid]
	}
	return out
}

// Flush waits until the background work queued so far (pruning, precache
// clones, leftovers) is done, or ctx ends.
func (p *reflinkPool) Flush(ctx context.Context) error { return p.worker.flush(ctx) }

// CancelBackground drops the queued background work and stops the
// precache copy running now, so that a Close that follows returns without
// waiting for it (a program that was told to stop). Every commit is
// durable already; the precache copies are made again when needed and a
// start without one copies the image itself.
func (p *reflinkPool) CancelBackground() { p.worker.cancel() }

// Close waits for operations in flight and the background work, then
// releases the pool's lock. Later operations fail with storage.ErrClosed.
func (p *reflinkPool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.inflight.Wait()
	p.worker.close()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lock != nil {
		err := p.lock.Unlock()
		p.lock = nil
		return err
	}
	return nil
}

// InitVolume registers a volume from its configuration, changing nothing
// on disk at once. The vid must be appvms/VM/NAME or vm-templates/VM/NAME,
// NAME equal to cfg.Name (filled in from the vid when empty); a
// snap_on_start source is a vid of this pool. A save_on_stop volume whose
// image exists takes its size from it (the disk is right where a saved
// configuration is stale: a resize whose state could not be saved). In
// the background, the worker deletes the volume's own "~" files a crash
// left (nothing else: a user's notes~old beside the images stays) and
// prepares an origin's precache if it is missing.
func (p *reflinkPool) InitVolume(cfg storage.VolumeConfig) (storage.Volume, error) {
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
	if cfg.RevisionsToKeep == nil {
		n := int(p.revisionsToKeep.Load())
		cfg.RevisionsToKeep = &n
	}
	v := newVolume(p, cfg)
	v.sz = v.diskSize()
	if v.keepsPrecache() {
		v.pre = v.newPrecacheJob()
		v.initPre = v.pre
	}
	pre := v.pre // v is shared once registered: read what it needs first
	// The leftovers are listed before the volume is visible, so that no
	// operation on it can have made a temporary file that they include.
	temps, err := v.ownTemps()
	if err != nil {
		// The next operation on the volume reports what is wrong.
		p.log.Warn().Err(err).Str("vid", cfg.VID).Msg("list leftovers")
	}
	p.mu.Lock()
	if _, dup := p.volumes[cfg.VID]; dup {
		p.mu.Unlock()
		return fail(storage.ErrExists)
	}
	p.volumes[cfg.VID] = v
	p.mu.Unlock()
	for _, t := range temps {
		p.worker.remove(t)
	}
	if pre != nil {
		p.worker.precache(pre)
	}
	return v, nil
}

// ForgetVolume unregisters volume vid, leaving its files alone but for a
// precache that the registration's own background job made (it is
// discarded); a queued precache is cancelled, and later operations on it
// fail with storage.ErrNotFound.
func (p *reflinkPool) ForgetVolume(ctx context.Context, vid string) error {
	v := p.lookup(vid)
	if v == nil {
		return &storage.Error{Op: "forget volume", Pool: p.name, VID: vid, Err: storage.ErrNotFound}
	}
	if err := v.lock(ctx); err != nil {
		return v.wrap("forget volume", err)
	}
	defer v.unlock()
	// A precache the registration's own job made is not left behind: the
	// caller undoes the registration (a Create that refused the vid's
	// data), so it undoes what came of it too.
	if j := v.pre; j != nil && j == v.initPre && j.made.Load() {
		if err := p.discard(v.precache); err != nil {
			return v.wrap("forget volume", err)
		}
	}
	v.cancelPrecache()
	v.removed = true
	p.forget(vid)
	return nil
}

func (p *reflinkPool) forget(vid string) {
	p.mu.Lock()
	delete(p.volumes, vid)
	p.mu.Unlock()
}

// lookup returns the registered volume vid, or nil.
func (p *reflinkPool) lookup(vid string) *volume {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.volumes[vid]
}
