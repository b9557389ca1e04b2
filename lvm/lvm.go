package lvm

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/vmpool/vmpool/internal/fsutil"

	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

// DriverName is the name the driver registers under, as Qubes'.
const DriverName = "lvm_thin"

func init() { pool.Register(DriverName, Driver{}) }

// Driver makes lvm_thin pools that run the lvm binary found in PATH. A
// program that needs another Runner (tests) uses OpenWith.
type Driver struct{}

// Parameters lists revisions_to_keep, volume_group (required), thin_pool
// (required) and ephemeral_volatile, in the order of Qubes' ThinPool.
func (Driver) Parameters() []storage.Parameter {
	return []storage.Parameter{
		{Name: "revisions_to_keep", Doc: "revisions each origin volume keeps by default (-1 disables snapshots); default 1"},
		{Name: "volume_group", Required: true, Doc: "the LVM volume group"},
		{Name: "thin_pool", Required: true, Doc: "the thin pool LV in volume_group that holds the volumes"},
		{Name: "ephemeral_volatile", Doc: "make volatile volumes ephemeral by default (True/False); default False"},
	}
}

// Open validates the parameters, locks the pool against other processes
// (an flock on /run/lock/vmpool-lvm_thin-VG-POOL.lock until Close; one
// held by another process is waited for until ctx ends, one held by this
// process is refused at once, both storage.ErrInUse) and returns the
// pool. It runs no lvm: Setup checks that the thin pool exists, and the
// first operation that needs the LV report reads it.
func (Driver) Open(ctx context.Context, cfg storage.PoolConfig) (storage.Pool, error) {
	return OpenWith(ctx, cfg, Options{})
}

// Options are the parts of a pool a test or an embedding program may
// replace.
type Options struct {
	// Runner runs lvm and blkdiscard; nil means ExecRunner{}.
	Runner Runner
	// Now returns the time revisions are named after; nil means time.Now.
	Now func() time.Time
	// LockDir is where the pool's lock file is; empty means /run/lock.
	LockDir string
}

// OpenWith is Driver.Open with opts.
func OpenWith(ctx context.Context, cfg storage.PoolConfig, opts Options) (storage.Pool, error) {
	p, err := newPool(cfg, opts)
	if err != nil {
		return nil, &storage.Error{Op: "open", Pool: cfg.Name, Err: err}
	}
	dir := opts.LockDir
	if dir == "" {
		dir = "/run/lock"
	}
	path := filepath.Join(dir, "vmpool-"+DriverName+"-"+p.vg+"-"+p.thin+".lock")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, &storage.Error{Op: "open", Pool: cfg.Name, Err: fmt.Errorf("lock directory: %w", err)}
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, &storage.Error{Op: "open", Pool: cfg.Name, Err: fmt.Errorf("lock file: %w", err)}
	}
	f.Close()
	l, err := fsutil.LockPath(ctx, path)
	if errors.Is(err, fsutil.ErrLocked) {
		err = fmt.Errorf("%w: %w", storage.ErrInUse, err)
	}
	if err != nil {
		return nil, &storage.Error{Op: "open", Pool: cfg.Name, Err: err}
	}
	p.lock = l
	return p, nil
}

// thinPool is an lvm_thin pool: a storage.Pool.
type thinPool struct {
	name, vg, thin    string
	revisionsToKeep   atomic.Int64
	ephemeralVolatile atomic.Bool
	log               zerolog.Logger
	run               Runner
	now               func() time.Time

	// lvmMu serialises the pool's lvm processes and the updates of rep:
	// each report is the whole volume group, so one taken while another
	// process changes it would be stale when stored.
	lvmMu sync.Mutex
	repMu sync.Mutex
	rep   report // the last report; nil until read
	// lvmProcs counts the lvm processes the pool ran (benchmarks).
	lvmProcs atomic.Int64

	lock *fsutil.Lock // against other processes, until Close

	mu       sync.Mutex
	volumes  map[string]*volume
	closed   bool
	inflight sync.WaitGroup
}

func newPool(cfg storage.PoolConfig, opts Options) (*thinPool, error) {
	if cfg.Name == "" {
		return nil, fmt.Errorf("%w: pool name is empty", storage.ErrInvalidConfig)
	}
	p := &thinPool{
		name:    cfg.Name,
		log:     cfg.Logger.With().Str("pool", cfg.Name).Logger(),
		run:     opts.Runner,
		now:     opts.Now,
		volumes: make(map[string]*volume),
	}
	if p.run == nil {
		p.run = ExecRunner{}
	}
	if p.now == nil {
		p.now = time.Now
	}
	known := make(map[string]bool)
	for _, prm := range (Driver{}).Parameters() {
		known[prm.Name] = true
	}
	var unknown []string
	for k := range cfg.Params {
		if !known[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return nil, fmt.Errorf("%w: unknown parameters %s (lvm_thin accepts revisions_to_keep, volume_group, thin_pool, ephemeral_volatile)",
			storage.ErrInvalidConfig, strings.Join(unknown, ", "))
	}
	p.vg, p.thin = cfg.Params["volume_group"], cfg.Params["thin_pool"]
	if p.vg == "" {
		return nil, fmt.Errorf("%w: missing required parameter volume_group", storage.ErrInvalidConfig)
	}
	if err := storage.ValidateVGName(p.vg); err != nil {
		return nil, err
	}
	if p.thin == "" {
		return nil, fmt.Errorf("%w: missing required parameter thin_pool", storage.ErrInvalidConfig)
	}
	if err := validateLVName(p.thin); err != nil {
		return nil, fmt.Errorf("thin_pool: %w", err)
	}
	p.revisionsToKeep.Store(1)
	if s, ok := cfg.Params["revisions_to_keep"]; ok {
		n, err := parseRevisionsToKeep(s)
		if err != nil {
			return nil, err
		}
		p.revisionsToKeep.Store(int64(n))
	}
	if s, ok := cfg.Params["ephemeral_volatile"]; ok {
		b, err := parseBool(s)
		if err != nil {
			return nil, fmt.Errorf("%w: ephemeral_volatile: %w", storage.ErrInvalidConfig, err)
		}
		p.ephemeralVolatile.Store(b)
	}
	return p, nil
}

// validateLVName checks an LV name as LVM does (the characters of a VG
// name, not starting with '-').
func validateLVName(name string) error {
	if err := storage.ValidateVGName(name); err != nil {
		return fmt.Errorf("%w: logical volume name %q: want up to 127 of A-Z a-z 0-9 + _ . -, not starting with -", storage.ErrInvalidConfig, name)
	}
	return nil
}

// parseRevisionsToKeep parses a revisions_to_keep: an integer of at least
// -1.
func parseRevisionsToKeep(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < -1 {
		return 0, fmt.Errorf("%w: revisions_to_keep %q: want an integer of at least -1", storage.ErrInvalidConfig, s)
	}
	return n, nil
}

// parseBool parses as Qubes' storage parse_bool: True/1/on and
// False/0/off/empty, case-sensitive.
func parseBool(s string) (bool, error) {
	switch s {
	case "True", "1", "on":
		return true, nil
	case "False", "0", "off", "":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (True/1/on or False/0/off)", s)
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

func (p *thinPool) begin() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return storage.ErrClosed
	}
	p.inflight.Add(1)
	return nil
}

func (p *thinPool) end() { p.inflight.Done() }

// Name implements storage.Pool.
func (p *thinPool) Name() string { return p.name }

// Driver implements storage.Pool.
func (p *thinPool) Driver() string { return DriverName }

// Config returns Qubes' ThinPool.config.
func (p *thinPool) Config() map[string]string {
	return map[string]string{
		"name":               p.name,
		"driver":             DriverName,
		"volume_group":       p.vg,
		"thin_pool":          p.thin,
		"revisions_to_keep":  strconv.FormatInt(p.revisionsToKeep.Load(), 10),
		"ephemeral_volatile": pyBool(p.ephemeralVolatile.Load()),
	}
}

// Capabilities: any number of revisions, revert (keeping the revisions as
// they are, as Qubes' lvm.py), outdated snapshots. Snapshot-then-commit
// volumes are refused (Qubes' ThinPool documents them as unsupported) and
// so are imports into a running volume (Qubes' lvm.py refuses a dirty
// volume).
func (p *thinPool) Capabilities() storage.Capabilities {
	return storage.Capabilities{MaxRevisions: -1, Revert: true, Outdated: true}
}

// Setup checks that the thin pool exists, as Qubes' ThinPool.setup: it
// creates nothing.
func (p *thinPool) Setup(ctx context.Context) error {
	if err := p.begin(); err != nil {
		return &storage.Error{Op: "setup", Pool: p.name, Err: err}
	}
	defer p.end()
	r, err := p.refresh(ctx)
	if err == nil {
		err = p.checkThinPool(r)
	}
	if err != nil {
		return &storage.Error{Op: "setup", Pool: p.name, Err: err}
	}
	return nil
}

func (p *thinPool) checkThinPool(r report) error {
	l, ok := r[p.thin]
	if !ok {
		return fmt.Errorf("thin pool %s/%s does not exist: %w", p.vg, p.thin, storage.ErrNotFound)
	}
	if !l.thinPool() {
		return fmt.Errorf("%w: volume %s/%s is not a thin pool", storage.ErrInvalidConfig, p.vg, p.thin)
	}
	return nil
}

// Destroy does nothing, as Qubes' ThinPool.destroy: the volume group and
// its thin pool are the administrator's.
func (p *thinPool) Destroy(ctx context.Context) error { return nil }

// Usage reads the thin pool's data and metadata size and use from a fresh
// report; a volume group or thin pool that is missing is Unavailable.
func (p *thinPool) Usage(ctx context.Context) (storage.PoolUsage, error) {
	if err := p.begin(); err != nil {
		return storage.PoolUsage{}, &storage.Error{Op: "usage", Pool: p.name, Err: err}
	}
	defer p.end()
	r, err := p.refresh(ctx)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return storage.PoolUsage{Unavailable: true}, nil
		}
		return storage.PoolUsage{}, &storage.Error{Op: "usage", Pool: p.name, Err: err}
	}
	l, ok := r[p.thin]
	if !ok {
		return storage.PoolUsage{Unavailable: true}, nil
	}
	return storage.PoolUsage{DataSize: l.Size, DataUsage: l.Usage,
		Extra: map[string]int64{"metadata_size": l.MetadataSize, "metadata_usage": l.MetadataUsage}}, nil
}

// SetParameter changes revisions_to_keep or ephemeral_volatile;
// volume_group and thin_pool are fixed.
func (p *thinPool) SetParameter(ctx context.Context, name, value string) error {
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
	case "volume_group", "thin_pool":
		return fail(fmt.Errorf("%s is fixed when the pool is added: %w", name, storage.ErrUnsupported))
	default:
		return fail(fmt.Errorf("%w: unknown parameter %q (lvm_thin can change revisions_to_keep, ephemeral_volatile)", storage.ErrInvalidConfig, name))
	}
	return nil
}

// InitVolume registers a volume. It reads the LV report once, if the pool
// has none yet, so that a save_on_stop volume's size is its LV's.
func (p *thinPool) InitVolume(cfg storage.VolumeConfig) (storage.Volume, error) {
	fail := func(err error) (storage.Volume, error) {
		return nil, &storage.Error{Op: "init volume", Pool: p.name, VID: cfg.VID, Err: err}
	}
	if err := p.begin(); err != nil {
		return fail(err)
	}
	defer p.end()
	vid, err := storage.ParseLVMVID(cfg.VID)
	if err != nil {
		return fail(err)
	}
	if vid.VG != p.vg {
		return fail(fmt.Errorf("%w: vid is in volume group %q, the pool's is %q", storage.ErrInvalidConfig, vid.VG, p.vg))
	}
	if cfg.Name == "" {
		cfg.Name = vid.Volume
	}
	if cfg.Name != vid.Volume {
		return fail(fmt.Errorf("%w: volume name %q does not match vid %q", storage.ErrInvalidConfig, cfg.Name, cfg.VID))
	}
	if cfg.Pool == "" {
		cfg.Pool = p.name
	}
	if cfg.Pool != p.name {
		return fail(fmt.Errorf("%w: volume belongs to pool %q, not %q", storage.ErrInvalidConfig, cfg.Pool, p.name))
	}
	if err := cfg.Validate(); err != nil {
		return fail(err)
	}
	if cfg.SnapOnStart && cfg.SaveOnStop {
		return fail(fmt.Errorf("snap_on_start together with save_on_stop: %w", storage.ErrUnsupported))
	}
	if cfg.Source != "" {
		if err := p.checkSource(cfg.VID, cfg.Source); err != nil {
			return fail(err)
		}
	}
	if cfg.RevisionsToKeep == nil {
		n := int(p.revisionsToKeep.Load())
		cfg.RevisionsToKeep = &n
	}
	v := newVolume(p, cfg, vid)
	if cfg.SaveOnStop {
		r, err := p.cached(context.Background())
		if err != nil {
			return fail(err)
		}
		v.sz = v.diskSize(r)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.volumes[cfg.VID]; dup {
		return fail(storage.ErrExists)
	}
	p.volumes[cfg.VID] = v
	return v, nil
}

// checkSource checks a snapshot's source vid: an lvm_thin vid of the
// pool's volume group, not the volume itself.
func (p *thinPool) checkSource(vid, source string) error {
	s, err := storage.ParseLVMVID(source)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if s.VG != p.vg {
		return fmt.Errorf("%w: source %s is not in the pool's volume group %s", storage.ErrInvalidConfig, source, p.vg)
	}
	if source == vid {
		return fmt.Errorf("%w: volume is its own source", storage.ErrInvalidConfig)
	}
	return nil
}

// ForgetVolume unregisters a volume; its LVs stay.
func (p *thinPool) ForgetVolume(ctx context.Context, vid string) error {
	p.mu.Lock()
	v, ok := p.volumes[vid]
	if ok {
		delete(p.volumes, vid)
	}
	p.mu.Unlock()
	if !ok {
		return &storage.Error{Op: "forget volume", Pool: p.name, VID: vid, Err: storage.ErrNotFound}
	}
	if err := v.lock(ctx); err != nil {
		return &storage.Error{Op: "forget volume", Pool: p.name, VID: vid, Err: err}
	}
	v.removed = true
	v.unlock()
	return nil
}

// Volume implements storage.Pool.
func (p *thinPool) Volume(vid string) (storage.Volume, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.volumes[vid]
	if !ok {
		return nil, &storage.Error{Op: "get volume", Pool: p.name, VID: vid, Err: storage.ErrNotFound}
	}
	return v, nil
}

// Volumes implements storage.Pool.
func (p *thinPool) Volumes() []storage.Volume {
	p.mu.Lock()
	defer p.mu.Unlock()
	vids := slices.Sorted(maps.Keys(p.volumes))
	out := make([]storage.Volume, len(vids))
	for i, vid := range vids {
		out[i] = p.volumes[vid]
	}
	return out
}

// Close waits for the operations under way and makes later ones fail
// with ErrClosed.
func (p *thinPool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.inflight.Wait()
	if p.lock != nil {
		return p.lock.Unlock()
	}
	return nil
}

// LVMProcesses returns how many lvm processes pool p (an lvm_thin pool)
// has run; benchmarks and tests report it. It is -1 for another pool.
func LVMProcesses(p storage.Pool) int64 {
	if tp, ok := p.(*thinPool); ok {
		return tp.lvmProcs.Load()
	}
	return -1
}
