package pool

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/vmpool/vmpool/storage"
)

// ErrUnavailable is wrapped by the errors of operations on a pool that the
// Manager keeps but could not open, and on its volumes: its driver is not
// registered in this program (an lvm_thin pool before its driver exists),
// or the driver's Open refused it for a reason of that pool alone (its
// directory records another state as its owner, another process holds
// it, a parameter this driver does not know). The error says why.
var ErrUnavailable = errors.New("pool unavailable")

// Unavailable returns why p, a pool of a Manager, is unavailable (an error
// wrapping ErrUnavailable), or nil when p is a pool the Manager opened.
// An unavailable pool is listed by Manager.Pools and Manager.Pool like the
// others: its Driver and Config are what the state file records, its
// Usage reports storage.PoolUsage{Unavailable: true}, Volume and Volumes
// give its volumes as recorded, and everything else fails with an error
// wrapping ErrUnavailable.
func Unavailable(p storage.Pool) error {
	if u, ok := p.(*unavailablePool); ok {
		return u.why
	}
	return nil
}

// unavailablePool stands for a recorded pool that could not be opened. It
// keeps the recorded driver, parameters and volume configurations, so
// that the state file is saved back exactly as it was read.
type unavailablePool struct {
	name, driver string
	params       map[string]string
	why          error // wraps ErrUnavailable and says why

	mu      sync.Mutex
	volumes map[string]*unavailableVolume
}

// newUnavailablePool returns the placeholder of pool name, recorded with
// driver and params, that could not be opened because of cause.
func newUnavailablePool(name, driver string, params map[string]string, cause error) *unavailablePool {
	// The driver's error names the pool already: say it once.
	why := strings.TrimPrefix(cause.Error(), "pool "+name+": ")
	return &unavailablePool{
		name:    name,
		driver:  driver,
		params:  maps.Clone(params),
		why:     fmt.Errorf("%w: %s", ErrUnavailable, why),
		volumes: make(map[string]*unavailableVolume),
	}
}

// fail returns the error of operation op (on volume vid, if any).
func (p *unavailablePool) fail(op, vid string) error {
	return &storage.Error{Op: op, Pool: p.name, VID: vid, Err: p.why}
}

// record registers a recorded volume configuration as it is.
func (p *unavailablePool) record(cfg storage.VolumeConfig) (*unavailableVolume, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, dup := p.volumes[cfg.VID]; dup {
		return nil, &storage.Error{Op: "init volume", Pool: p.name, VID: cfg.VID, Err: storage.ErrExists}
	}
	v := &unavailableVolume{pool: p, cfg: cfg}
	p.volumes[cfg.VID] = v
	return v, nil
}

// forget unregisters a recorded volume (the undo of record).
func (p *unavailablePool) forget(vid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.volumes, vid)
}

func (p *unavailablePool) Name() string   { return p.name }
func (p *unavailablePool) Driver() string { return p.driver }

// Config returns the recorded parameters with name and driver.
func (p *unavailablePool) Config() map[string]string {
	cfg := maps.Clone(p.params)
	if cfg == nil {
		cfg = make(map[string]string)
	}
	cfg["name"], cfg["driver"] = p.name, p.driver
	return cfg
}

// Capabilities returns the zero value: the pool can do nothing.
func (p *unavailablePool) Capabilities() storage.Capabilities { return storage.Capabilities{} }

func (p *unavailablePool) Setup(context.Context) error   { return p.fail("setup", "") }
func (p *unavailablePool) Destroy(context.Context) error { return p.fail("destroy", "") }

// Usage reports that the pool cannot measure itself.
func (p *unavailablePool) Usage(context.Context) (storage.PoolUsage, error) {
	return storage.PoolUsage{Unavailable: true}, nil
}

func (p *unavailablePool) SetParameter(_ context.Context, name, _ string) error {
	return p.fail("set "+name, "")
}

func (p *unavailablePool) InitVolume(cfg storage.VolumeConfig) (storage.Volume, error) {
	return nil, p.fail("init volume", cfg.VID)
}

func (p *unavailablePool) ForgetVolume(_ context.Context, vid string) error {
	return p.fail("forget volume", vid)
}

// Volume returns the recorded volume vid, whose operations fail.
func (p *unavailablePool) Volume(vid string) (storage.Volume, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.volumes[vid]
	if !ok {
		return nil, &storage.Error{Op: "get volume", Pool: p.name, VID: vid, Err: storage.ErrNotFound}
	}
	return v, nil
}

// Volumes returns the recorded volumes, sorted by vid.
func (p *unavailablePool) Volumes() []storage.Volume {
	p.mu.Lock()
	defer p.mu.Unlock()
	vols := make([]storage.Volume, 0, len(p.volumes))
	for _, vid := range slices.Sorted(maps.Keys(p.volumes)) {
		vols = append(vols, p.volumes[vid])
	}
	return vols
}

// Close does nothing: the placeholder holds no lock and no work.
func (p *unavailablePool) Close() error { return nil }

// unavailableVolume is a recorded volume of an unavailable pool: its
// Config is the recorded one, and every operation fails.
type unavailableVolume struct {
	pool *unavailablePool
	cfg  storage.VolumeConfig
}

func (v *unavailableVolume) fail(op string) error { return v.pool.fail(op, v.cfg.VID) }

func (v *unavailableVolume) Config() storage.VolumeConfig { return v.cfg }

// Ephemeral returns the recorded explicit value, else false: the pool's
// ephemeral_volatile default cannot be consulted.
func (v *unavailableVolume) Ephemeral() bool { return v.cfg.Ephemeral != nil && *v.cfg.Ephemeral }

// BlockDevice returns a description without a path: there is no device.
func (v *unavailableVolume) BlockDevice() storage.BlockDevice {
	return storage.BlockDevice{Name: v.cfg.Name, RW: v.cfg.RW, DevType: "disk"}
}

func (v *unavailableVolume) Create(context.Context) error { return v.fail("create") }
func (v *unavailableVolume) Remove(context.Context) error { return v.fail("remove") }
func (v *unavailableVolume) Verify(context.Context) error { return v.fail("verify") }
func (v *unavailableVolume) Start(context.Context) error  { return v.fail("start") }
func (v *unavailableVolume) Stop(context.Context) error   { return v.fail("stop") }
func (v *unavailableVolume) Abort(context.Context) error  { return v.fail("abort") }

func (v *unavailableVolume) IsRunning(context.Context) (bool, error) {
	return false, v.fail("is running")
}
func (v *unavailableVolume) IsDirty(context.Context) (bool, error) { return false, v.fail("is dirty") }
func (v *unavailableVolume) IsOutdated(context.Context) (bool, error) {
	return false, v.fail("is outdated")
}
func (v *unavailableVolume) Size(context.Context) (int64, error)  { return 0, v.fail("size") }
func (v *unavailableVolume) Usage(context.Context) (int64, error) { return 0, v.fail("usage") }

func (v *unavailableVolume) Revisions(context.Context) ([]storage.Revision, error) {
	return nil, v.fail("revisions")
}

func (v *unavailableVolume) Revert(context.Context, string) error { return v.fail("revert") }

func (v *unavailableVolume) Resize(context.Context, int64, storage.ResizeOptions) error {
	return v.fail("resize")
}

func (v *unavailableVolume) Reconfigure(context.Context, storage.VolumeChange) error {
	return v.fail("configure")
}

func (v *unavailableVolume) Export(context.Context) (string, error) { return "", v.fail("export") }
func (v *unavailableVolume) ExportEnd(context.Context, string) error {
	return v.fail("export end")
}

func (v *unavailableVolume) ImportData(context.Context, int64) (string, error) {
	return "", v.fail("import data")
}

func (v *unavailableVolume) ImportDataEnd(context.Context, bool) error {
	return v.fail("import data end")
}

func (v *unavailableVolume) ImportVolume(context.Context, storage.Volume) error {
	return v.fail("import volume")
}
