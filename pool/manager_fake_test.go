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
	"strconv"
	"sync"

	"github.com/vmpool/vmpool/storage"
)

// fakeDriverName is the name the Manager tests register their driver under.
const fakeDriverName = "manager-test-fake"

func init() { Register(fakeDriverName, fakeDriver{}) }

// fakeDriver makes tmpdir-backed pools, so the Manager tests need no root
// and no reflink filesystem. A volume is one file, dir_path/<vid>.img;
// running means dir_path/<vid>-dirty.img exists. The parameter "fail"
// (like file-reflink's setup_check, not reported by Config, so not
// persisted) makes "setup" or "create" fail.
type fakeDriver struct{}

func (fakeDriver) Parameters() []storage.Parameter {
	return []storage.Parameter{
		{Name: "dir_path", Required: true},
		{Name: "revisions_to_keep"},
		{Name: "fail"},
	}
}

func (fakeDriver) Open(_ context.Context, cfg storage.PoolConfig) (storage.Pool, error) {
	p := &fakePool{name: cfg.Name, keep: 1, volumes: make(map[string]*fakeVolume)}
	for k, v := range cfg.Params {
		switch k {
		case "dir_path":
			p.dir = v
		case "revisions_to_keep":
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("%w: revisions_to_keep %q", storage.ErrInvalidConfig, v)
			}
			p.keep = n
		case "fail":
			p.fail = v
		default:
			return nil, fmt.Errorf("%w: unknown parameter %q", storage.ErrInvalidConfig, k)
		}
	}
	if p.dir == "" {
		return nil, fmt.Errorf("%w: missing dir_path", storage.ErrInvalidConfig)
	}
	return p, nil
}

type fakePool struct {
	name, dir, fail string
	keep            int

	mu        sync.Mutex
	volumes   map[string]*fakeVolume
	closed    bool
	destroyed bool
}

func (p *fakePool) Name() string   { return p.name }
func (p *fakePool) Driver() string { return fakeDriverName }
func (p *fakePool) Config() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return map[string]string{"name": p.name, "driver": fakeDriverName, "dir_path": p.dir, "revisions_to_keep": strconv.Itoa(p.keep)}
}

func (p *fakePool) SetParameter(_ context.Context, name, value string) error {
	if name != "revisions_to_keep" {
		return fmt.Errorf("%w: %s cannot change", storage.ErrUnsupported, name)
	}
	n, err := strconv.Atoi(value)
	if err != nil || n < -1 {
		return fmt.Errorf("%w: revisions_to_keep %q", storage.ErrInvalidConfig, value)
	}
	p.mu.Lock()
	p.keep = n
	p.mu.Unlock()
	return nil
}
func (p *fakePool) Capabilities() storage.Capabilities { return storage.Capabilities{MaxRevisions: -1} }

func (p *fakePool) Setup(context.Context) error {
	if p.fail == "setup" {
		return fmt.Errorf("fake setup: %w", storage.ErrReflinkUnsupported)
	}
	return os.MkdirAll(p.dir, 0o755)
}

func (p *fakePool) Destroy(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.destroyed = true
	return nil
}

func (p *fakePool) Usage(context.Context) (storage.PoolUsage, error) { return storage.PoolUsage{}, nil }

func (p *fakePool) InitVolume(cfg storage.VolumeConfig) (storage.Volume, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.VID == "" {
		return nil, fmt.Errorf("%w: empty vid", storage.ErrInvalidConfig)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.volumes[cfg.VID]; ok {
		return nil, fmt.Errorf("init volume %s: %w", cfg.VID, storage.ErrExists)
	}
	if cfg.Pool == "" {
		cfg.Pool = p.name
	}
	if cfg.RevisionsToKeep == nil {
		keep := p.keep
		cfg.RevisionsToKeep = &keep
	}
	v := &fakeVolume{pool: p, cfg: cfg}
	p.volumes[cfg.VID] = v
	return v, nil
}

func (p *fakePool) ForgetVolume(_ context.Context, vid string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.volumes[vid]; !ok {
		return storage.ErrNotFound
	}
	delete(p.volumes, vid)
	return nil
}

func (p *fakePool) Volume(vid string) (storage.Volume, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	v, ok := p.volumes[vid]
	if !ok {
		return nil, fmt.Errorf("volume %s: %w", vid, storage.ErrNotFound)
	}
	return v, nil
}

func (p *fakePool) Volumes() []storage.Volume {
	p.mu.Lock()
	defer p.mu.Unlock()
	var vols []storage.Volume
	for _, vid := range slices.Sorted(maps.Keys(p.volumes)) {
		vols = append(vols, p.volumes[vid])
	}
	return vols
}

func (p *fakePool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return storage.ErrClosed
	}
	p.closed = true
	return nil
}

type fakeVolume struct {
	pool *fakePool

	mu  sync.Mutex
	cfg storage.VolumeConfig
}

func (v *fakeVolume) Config() storage.VolumeConfig {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cfg
}

func (v *fakeVolume) path(suffix string) string {
	return filepath.Join(v.pool.dir, v.Config().VID+suffix)
}

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

func (v *fakeVolume) Ephemeral() bool { return false }

func (v *fakeVolume) Reconfigure(_ context.Context, ch storage.VolumeChange) error {
	next, err := v.Config().Apply(ch)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.cfg = next
	v.mu.Unlock()
	return nil
}
func (v *fakeVolume) BlockDevice() storage.BlockDevice {
	return storage.BlockDevice{Path: v.path("-dirty.img")}
}

func (v *fakeVolume) Create(context.Context) error {
	if err := os.MkdirAll(filepath.Dir(v.path("")), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(v.path(".img"), nil, 0o600); err != nil {
		return err
	}
	if v.pool.fail == "create" {
		// As the contract asks, a failed Create leaves nothing of its own.
		os.Remove(v.path(".img"))
		return errors.New("fake create failed")
	}
	return os.Truncate(v.path(".img"), v.Config().Size)
}

func (v *fakeVolume) Remove(context.Context) error {
	for _, s := range []string{".img", "-dirty.img", "-import.img"} {
		if err := os.Remove(v.path(s)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	v.pool.mu.Lock()
	delete(v.pool.volumes, v.Config().VID)
	v.pool.mu.Unlock()
	return nil
}

func (v *fakeVolume) Verify(context.Context) error {
	if v.Config().Kind() == storage.Origin && !exists(v.path(".img")) {
		return fmt.Errorf("missing image: %w", storage.ErrNotFound)
	}
	return nil
}

func (v *fakeVolume) Start(context.Context) error {
	if exists(v.path("-dirty.img")) {
		return nil
	}
	return os.WriteFile(v.path("-dirty.img"), nil, 0o600)
}

func (v *fakeVolume) Stop(context.Context) error {
	if !exists(v.path("-dirty.img")) {
		return nil
	}
	if v.Config().SaveOnStop {
		return os.Rename(v.path("-dirty.img"), v.path(".img"))
	}
	return os.Remove(v.path("-dirty.img"))
}

func (v *fakeVolume) Abort(context.Context) error { return os.Remove(v.path("-dirty.img")) }

func (v *fakeVolume) IsRunning(context.Context) (bool, error) {
	return exists(v.path("-dirty.img")), nil
}

func (v *fakeVolume) IsDirty(ctx context.Context) (bool, error) {
	running, err := v.IsRunning(ctx)
	return running && v.Config().SaveOnStop, err
}

func (v *fakeVolume) IsOutdated(context.Context) (bool, error)              { return false, nil }
func (v *fakeVolume) Size(context.Context) (int64, error)                   { return v.Config().Size, nil }
func (v *fakeVolume) Usage(context.Context) (int64, error)                  { return 0, nil }
func (v *fakeVolume) Revisions(context.Context) ([]storage.Revision, error) { return nil, nil }

func (v *fakeVolume) Revert(ctx context.Context, id string) error {
	if dirty, _ := v.IsDirty(ctx); dirty {
		return storage.ErrDirty
	}
	return fmt.Errorf("revision %q: %w", id, storage.ErrNotFound)
}

func (v *fakeVolume) Resize(_ context.Context, size int64, opts storage.ResizeOptions) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if size < v.cfg.Size && !opts.Force {
		return storage.ErrShrink
	}
	v.cfg.Size = size
	return nil
}

func (v *fakeVolume) Export(context.Context) (string, error)  { return v.path(".img"), nil }
func (v *fakeVolume) ExportEnd(context.Context, string) error { return nil }

func (v *fakeVolume) ImportData(_ context.Context, size int64) (string, error) {
	path := v.path("-import.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return "", err
	}
	return path, os.Truncate(path, size)
}

func (v *fakeVolume) ImportDataEnd(_ context.Context, success bool) error {
	if !success {
		return os.Remove(v.path("-import.img"))
	}
	st, err := os.Stat(v.path("-import.img"))
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.cfg.Size = st.Size()
	v.mu.Unlock()
	return os.Rename(v.path("-import.img"), v.path(".img"))
}

func (v *fakeVolume) ImportVolume(context.Context, storage.Volume) error {
	return storage.ErrUnsupported
}
