package pool

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/ownerfile"
	"github.com/vmpool/vmpool/pool/qubesxml"
	"github.com/vmpool/vmpool/storage"
)

// KernelDriver is the driver of Qubes' linux-kernel pool, whose "volumes"
// are the directories of dom0's kernels (vmlinuz, initramfs, modules.img),
// installed by dom0's packages, not disk images: ImportQubesXML skips the
// pools of this driver and their volumes.
const KernelDriver = "linux-kernel"

// QubesXMLOptions modify ImportQubesXML.
type QubesXMLOptions struct {
	// Root is the directory where the installation's root filesystem is
	// mounted: every dir_path of qubes.xml (an absolute path) is taken
	// relative to it, and recorded so. "" means "/": the running host's
	// own installation.
	Root string
}

// QubesXMLReport says what ImportQubesXML recorded.
type QubesXMLReport struct {
	// Pools are the pools of qubes.xml but the skipped ones, in its order.
	Pools []QubesXMLPool
	// VMs are the domains with volumes imported, in qubes.xml's order.
	VMs []QubesXMLVM
	// Skipped are the pools and volumes not imported, and why.
	Skipped []QubesXMLSkipped
}

// QubesXMLPool is a pool ImportQubesXML recorded.
type QubesXMLPool struct {
	Name, Driver string
	// Params are the parameters as recorded (dir_path below Root).
	Params map[string]string
	// Reused tells that the Manager had the pool, with that driver and
	// those parameters, already.
	Reused bool
	// Unavailable says why the pool is unavailable (see ErrUnavailable);
	// nil for a pool the Manager opened.
	Unavailable error
}

// QubesXMLVM is a domain whose volumes ImportQubesXML recorded.
type QubesXMLVM struct {
	Name string
	// Class is the domain's class (AppVM, TemplateVM, ...).
	Class   string
	Volumes []QubesXMLVolume
}

// QubesXMLVolume is a volume ImportQubesXML recorded.
type QubesXMLVolume struct {
	Name, Pool, VID string
	// Source is a snapshot's source vid.
	Source string
	// Reused tells that the Manager had the volume, with that
	// configuration, already.
	Reused bool
	// Problem is what the volume's Verify found (an image that is
	// missing); the volume is recorded anyway, and its start will fail
	// until the image is there. Nil for none, and for a volume of an
	// unavailable pool, which cannot be verified.
	Problem error
}

// QubesXMLSkipped is a pool or a volume ImportQubesXML did not import.
type QubesXMLSkipped struct {
	// Pool is the pool's name; VM and Volume are empty for a pool.
	Pool, VM, Volume string
	Reason           string
}

// ImportQubesXML records the pools and the domains' volumes of a Qubes R4
// installation, as qubesxml.Parse read them from its qubes.xml, so that
// the Manager opens that installation's layout. It is all or nothing:
// inst is validated first, and on any failure nothing is recorded (the
// state file is put back byte for byte), no pool it opened stays open and
// the owner records its opens wrote are removed again.
//
// A pool is matched by name. One the Manager has already, with the same
// driver and, for every parameter qubes.xml gives, the same value (for
// dir_path the same directory), is reused; one with another driver or
// value is ErrExists. A new pool is opened with its driver's Open and
// recorded without its Setup, as qubesd loads it: a directory that
// records no owner (as a Qubes directory) is claimed by this state; one
// that records another vmpool state is ErrInUse, as AddPool refuses it
// (AdoptPool it first, with the same name, driver and parameters, and
// the import reuses it). A new pool whose dir_path is not a directory
// under opts.Root is ErrNotFound (is Root right, the filesystem
// mounted?), whether its driver is registered or not. A
// pool whose driver is not registered in this program (lvm_thin before
// its driver exists, or any other) is recorded as unavailable (see
// ErrUnavailable), with the volumes that live in it, as recorded. The
// pools of Qubes' linux-kernel driver ([KernelDriver]) and their volumes
// are skipped: they hold dom0's kernels, not disk images.
//
// Every volume is registered with its pool's InitVolume, never created:
// its images exist already (sizes are read from them, as at
// OpenManager). A volume whose images are missing is recorded all the
// same and named in the report (QubesXMLVolume.Problem). A VM the Manager
// knows keeps its other volumes; one of its volumes with the same name is
// reused when it has the same pool, vid, kind and source, and is
// ErrExists otherwise; a vid another volume of the pool has is ErrExists.
// Volumes qubes.xml does not list (which Qubes would put in its default
// pools) are not made up.
func (m *Manager) ImportQubesXML(ctx context.Context, inst *qubesxml.Installation, opts QubesXMLOptions) (*QubesXMLReport, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return nil, err
	}
	fail := func(err error) (*QubesXMLReport, error) { return nil, fmt.Errorf("import qubes.xml: %w", err) }
	if inst == nil {
		return fail(fmt.Errorf("%w: no installation", storage.ErrInvalidConfig))
	}
	if err := inst.Validate(); err != nil {
		return fail(err)
	}
	imp := &qubesImport{m: m, report: &QubesXMLReport{}, pools: make(map[string]*importPool)}
	if err := imp.plan(inst, opts); err != nil {
		return fail(err)
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	// The state's ID is saved before a directory records it, as AddPool
	// does; a failure puts the state file back as it was.
	before := m.written
	if err := m.save(); err != nil {
		return fail(err)
	}
	if err := imp.apply(ctx); err != nil {
		imp.undo(context.WithoutCancel(ctx))
		if rerr := m.restoreState(before); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return fail(err)
	}
	return imp.report, nil
}

// qubesImport is one ImportQubesXML: its plan, then what it did, to undo.
type qubesImport struct {
	m      *Manager
	report *QubesXMLReport
	pools  map[string]*importPool // by name, the skipped ones excluded
	order  []string               // the pools' names in qubes.xml's order
	vols   []importVolume

	// What apply did, for undo.
	opened     []storage.Pool
	registered []importVolume
	claimed    []string // directories whose owner record an Open wrote
	added      bool     // the pools and volumes are in m's maps
}

// importPool is a pool of the plan.
type importPool struct {
	name, driver string
	params       map[string]string
	dir          string       // dir_path below Root, "" if none
	existing     storage.Pool // the Manager's pool to reuse, or nil
	noDriver     error        // the reason a new pool is unavailable
	pool         storage.Pool // the pool volumes go to, once opened
}

// importVolume is a volume of the plan.
type importVolume struct {
	vm, class string
	cfg       storage.VolumeConfig
	reused    bool
	v         storage.Volume
}

// plan checks inst against the Manager and decides, for every pool and
// volume, what to do; it changes nothing. The caller holds m.mu.
func (imp *qubesImport) plan(inst *qubesxml.Installation, opts QubesXMLOptions) error {
	m := imp.m
	root := opts.Root
	if root == "" {
		root = "/"
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return fmt.Errorf("%w: root %q: %w", storage.ErrInvalidConfig, opts.Root, err)
	}
	if st, err := os.Stat(root); err != nil || !st.IsDir() {
		return fmt.Errorf("root %s is not a directory: %w", root, storage.ErrNotFound)
	}
	skipped := make(map[string]bool)
	for _, xp := range inst.Pools {
		if xp.Driver == KernelDriver {
			skipped[xp.Name] = true
			imp.report.Skipped = append(imp.report.Skipped, QubesXMLSkipped{Pool: xp.Name,
				Reason: "a " + KernelDriver + " pool holds dom0's kernels, not disk images"})
			continue
		}
		ip := &importPool{name: xp.Name, driver: xp.Driver, params: maps.Clone(xp.Params)}
		if ip.params == nil {
			ip.params = make(map[string]string)
		}
		if dir, ok := ip.params["dir_path"]; ok {
			if !filepath.IsAbs(dir) {
				return fmt.Errorf("%w: pool %s: dir_path %q is not an absolute path", storage.ErrInvalidConfig, xp.Name, dir)
			}
			ip.dir = filepath.Join(root, dir)
			ip.params["dir_path"] = ip.dir
		}
		if err := imp.planPool(ip, xp.Params["dir_path"], root); err != nil {
			return fmt.Errorf("pool %s: %w", xp.Name, err)
		}
		imp.pools[ip.name] = ip
		imp.order = append(imp.order, ip.name)
	}
	for _, d := range inst.Domains {
		for _, xv := range d.Volumes {
			if skipped[xv.Pool] {
				imp.report.Skipped = append(imp.report.Skipped, QubesXMLSkipped{Pool: xv.Pool, VM: d.Name, Volume: xv.Name,
					Reason: "a volume of the " + KernelDriver + " pool " + xv.Pool})
				continue
			}
			iv := importVolume{vm: d.Name, class: d.Class, cfg: xv.Config()}
			if old, ok := m.vms[d.Name][xv.Name]; ok {
				if !sameVolume(old.Config(), iv.cfg) {
					o := old.Config()
					return fmt.Errorf("VM %s has a volume %s already (pool %s, vid %s, %s), not the one of qubes.xml (pool %s, vid %s, %s): %w",
						d.Name, xv.Name, o.Pool, o.VID, o.Kind(), iv.cfg.Pool, iv.cfg.VID, iv.cfg.Kind(), storage.ErrExists)
				}
				iv.reused, iv.v = true, old
			}
			imp.vols = append(imp.vols, iv)
		}
	}
	return nil
}

// planPool decides whether ip is reused, opened or recorded unavailable.
// xmlDir is its dir_path as qubes.xml gives it.
func (imp *qubesImport) planPool(ip *importPool, xmlDir, root string) error {
	m := imp.m
	if old, ok := m.pools[ip.name]; ok {
		if old.Driver() != ip.driver {
			return fmt.Errorf("the pool exists with driver %s; qubes.xml has %s: %w", old.Driver(), ip.driver, storage.ErrExists)
		}
		cfg := old.Config()
		for _, k := range slices.Sorted(maps.Keys(ip.params)) {
			v, have := cfg[k], ip.params[k]
			if k == "dir_path" && v != "" && samePlace(v, have) {
				continue
			}
			if v != have {
				return fmt.Errorf("the pool exists with %s=%q; qubes.xml has %q: %w", k, v, have, storage.ErrExists)
			}
		}
		ip.existing, ip.pool = old, old
		return nil
	}
	if err := m.checkPlace(ip.params); err != nil {
		return err
	}
	for _, other := range imp.order {
		if o := imp.pools[other]; ip.dir != "" && o.dir != "" && samePlace(ip.dir, o.dir) {
			return fmt.Errorf("directory %s is pool %s of qubes.xml too: %w", ip.dir, other, storage.ErrExists)
		}
	}
	// Checked for an unavailable pool too: a wrong root is found whatever
	// drivers the program has.
	if ip.dir != "" {
		if st, err := os.Stat(ip.dir); err != nil || !st.IsDir() {
			return fmt.Errorf("dir_path %s (%s below the root %s) is not a directory; is the root right and the pool's filesystem mounted?: %w",
				ip.dir, xmlDir, root, storage.ErrNotFound)
		}
	}
	if _, err := Driver(ip.driver); err != nil {
		ip.noDriver = err
	}
	return nil
}

// sameVolume reports whether a known volume is the one qubes.xml gives:
// the same pool, vid, kind and source (sizes are the disk's, and
// revisions_to_keep may have been changed since).
func sameVolume(a, b storage.VolumeConfig) bool {
	return a.Pool == b.Pool && a.VID == b.VID && a.Kind() == b.Kind() && a.Source == b.Source
}

// apply opens the new pools, registers the volumes, records them and
// saves; the caller undoes what it did if it fails. The caller holds
// m.mu.
func (imp *qubesImport) apply(ctx context.Context) error {
	m := imp.m
	for _, name := range imp.order {
		ip := imp.pools[name]
		switch {
		case ip.existing != nil:
		case ip.noDriver != nil:
			ip.pool = m.keepUnavailable(name, poolState{Driver: ip.driver, Params: ip.params}, ip.noDriver)
		default:
			var had bool
			if ip.dir != "" {
				rec, err := ownerfile.Read(ip.dir)
				if err != nil {
					return fmt.Errorf("pool %s: %w", name, err)
				}
				had = rec != nil
			}
			p, err := m.openPool(ctx, name, ip.driver, ip.params, false)
			if err != nil {
				return fmt.Errorf("pool %s: %w", name, err)
			}
			if perr := m.probe(ctx, p); perr != nil {
				// Another installation's volume group need not be active
				// here: recorded, as at load, to use once it is.
				m.closePool(p)
				ip.pool = m.keepUnavailable(name, poolState{Driver: ip.driver, Params: ip.params}, perr)
				continue
			}
			imp.opened = append(imp.opened, p)
			if ip.dir != "" && !had {
				imp.claimed = append(imp.claimed, ip.dir)
			}
			ip.pool = p
		}
	}
	// A snap_on_start volume is registered after its source, as at load.
	var todo []importVolume
	for _, iv := range imp.vols {
		if !iv.reused {
			todo = append(todo, iv)
		}
	}
	for len(todo) > 0 {
		var later []importVolume
		for _, iv := range todo {
			p := imp.pools[iv.cfg.Pool].pool
			if _, err := p.Volume(iv.cfg.Source); iv.cfg.Source != "" && err != nil {
				later = append(later, iv)
				continue
			}
			if err := imp.register(ctx, p, iv); err != nil {
				return err
			}
		}
		if len(later) == len(todo) {
			// Sources in a loop, which Validate refuses: let the driver
			// judge them.
			for _, iv := range later {
				if err := imp.register(ctx, imp.pools[iv.cfg.Pool].pool, iv); err != nil {
					return err
				}
			}
			break
		}
		todo = later
	}
	for _, name := range imp.order {
		if ip := imp.pools[name]; ip.existing == nil {
			m.pools[name] = ip.pool
		}
	}
	for _, iv := range imp.registered {
		m.addVolume(iv.vm, iv.v)
	}
	imp.added = true
	if err := m.save(); err != nil {
		return err
	}
	for _, p := range imp.opened {
		m.track(p)
	}
	imp.fillReport(ctx)
	return nil
}

// register registers iv with p, its pool.
func (imp *qubesImport) register(ctx context.Context, p storage.Pool, iv importVolume) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var err error
	if up, ok := p.(*unavailablePool); ok {
		iv.v, err = up.record(iv.cfg)
	} else {
		iv.v, err = p.InitVolume(iv.cfg)
	}
	if err != nil {
		return volumeError(fmt.Sprintf("volume %s of VM %s", iv.cfg.Name, iv.vm), err)
	}
	imp.registered = append(imp.registered, iv)
	return nil
}

// fillReport describes the pools and volumes recorded.
func (imp *qubesImport) fillReport(ctx context.Context) {
	for _, name := range imp.order {
		ip := imp.pools[name]
		imp.report.Pools = append(imp.report.Pools, QubesXMLPool{Name: name, Driver: ip.driver, Params: persistentParams(ip.pool),
			Reused: ip.existing != nil, Unavailable: Unavailable(ip.pool)})
	}
	byVM := make(map[string]int)
	registered := make(map[string]storage.Volume)
	for _, iv := range imp.registered {
		registered[iv.vm+"\x00"+iv.cfg.Name] = iv.v
	}
	for _, iv := range imp.vols {
		i, ok := byVM[iv.vm]
		if !ok {
			i = len(imp.report.VMs)
			byVM[iv.vm] = i
			imp.report.VMs = append(imp.report.VMs, QubesXMLVM{Name: iv.vm, Class: iv.class})
		}
		v := iv.v
		if !iv.reused {
			v = registered[iv.vm+"\x00"+iv.cfg.Name]
		}
		cfg := v.Config()
		rv := QubesXMLVolume{Name: cfg.Name, Pool: cfg.Pool, VID: cfg.VID, Source: cfg.Source, Reused: iv.reused}
		if _, unavailable := v.(*unavailableVolume); !unavailable {
			rv.Problem = v.Verify(ctx)
		}
		imp.report.VMs[i].Volumes = append(imp.report.VMs[i].Volumes, rv)
	}
}

// undo takes back what apply did; its failures are logged.
func (imp *qubesImport) undo(ctx context.Context) {
	m := imp.m
	if imp.added {
		for _, name := range imp.order {
			if imp.pools[name].existing == nil {
				delete(m.pools, name)
			}
		}
		for _, iv := range imp.registered {
			m.dropVolume(iv.vm, iv.cfg.Name)
		}
	}
	for _, iv := range slices.Backward(imp.registered) {
		p := imp.pools[iv.cfg.Pool].pool
		var err error
		if up, ok := p.(*unavailablePool); ok {
			up.forget(iv.cfg.VID)
		} else {
			err = p.ForgetVolume(ctx, iv.cfg.VID)
		}
		if err != nil {
			m.log.Error().Err(err).Str("pool", iv.cfg.Pool).Str("vid", iv.cfg.VID).Msg("forget volume after failed import")
		}
	}
	for _, p := range imp.opened {
		m.closePool(p)
	}
	// An owner record this import's Open wrote into a directory that had
	// none is removed, so that the directory is as it was.
	for _, dir := range imp.claimed {
		rec, err := ownerfile.Read(dir)
		if err == nil && rec != nil && rec.ID == m.id {
			_, err = fsutil.Remove(filepath.Join(dir, ownerfile.Name))
		}
		if err != nil {
			m.log.Error().Err(err).Str("dir", dir).Msg("remove owner record after failed import")
		}
	}
}
