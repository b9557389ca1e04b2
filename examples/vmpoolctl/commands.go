package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
	"github.com/vmpool/vmpool/storage/ephemeral"
)

// command is one vmpoolctl command.
type command struct {
	name string // "pool add": the group and the subcommand
	args string // the synopsis of its arguments and flags
	help string // one line
	// min and max bound the number of positional arguments; max -1 means
	// any number.
	min, max int
	// setup defines the command's own flags on fs and returns the
	// function that runs the command with the positional arguments.
	setup func(fs *flag.FlagSet) runFunc
}

type runFunc func(e *env, args []string) error

// checkArgs checks the number of positional arguments.
func (c *command) checkArgs(args []string) error {
	if len(args) < c.min || (c.max >= 0 && len(args) > c.max) {
		return fmt.Errorf("%s: wrong number of arguments (%d)", c.name, len(args))
	}
	return nil
}

// noFlags is the setup of a command without flags of its own.
func noFlags(fn runFunc) func(*flag.FlagSet) runFunc {
	return func(*flag.FlagSet) runFunc { return fn }
}

// commands are all commands, in the order of the help text.
var commands = []*command{
	{name: "pool add", args: "NAME DRIVER [key=value...] [--adopt]", min: 2, max: -1, setup: poolAdd,
		help: "add a pool and set it up (file-reflink: dir_path=DIR, optional revisions_to_keep, setup_check, ephemeral_volatile); " +
			"a directory that is a pool of another state is refused unless --adopt"},
	{name: "pool list", help: "list the pools", setup: noFlags(poolList)},
	{name: "pool info", args: "NAME", min: 1, max: 1, setup: noFlags(poolInfo),
		help: "show a pool's configuration, size and usage, and the pool whose directory holds its dir_path (included_in)"},
	{name: "pool default", setup: noFlags(poolDefault),
		help: "print the name of the pool Qubes' default_pool defaults to " +
			"(the pool named default, an lvm_thin pool of $DEFAULT_LVM_POOL, a file or file-reflink pool at /var/lib/qubes; LVM is not probed)"},
	{name: "pool remove", args: "NAME [--force]", min: 1, max: 1, setup: poolRemove,
		help: "remove a pool no volume uses (its files stay); " +
			"--force removes one that volumes use: it forgets those volumes and leaves their images and revisions on disk"},
	{name: "pool set", args: "NAME KEY VALUE", min: 3, max: 3, setup: noFlags(poolSet),
		help: "change a pool's parameter (file-reflink: revisions_to_keep, the default of new volumes, or ephemeral_volatile)"},
	{name: "pool migrate", args: "NAME DRIVER [key=value...]", min: 2, max: -1, setup: noFlags(poolMigrate),
		help: "move a pool to another driver in place (file → file-reflink): every VM of it must be stopped; " +
			"the file driver's revision is kept, its *-cow.img files are removed (key=value: the new driver's extra parameters, e.g. setup_check=no)"},
	{name: "pool drivers", help: "list the drivers and their parameters, in order", setup: noFlags(poolDrivers)},
	{name: "pool import-qubes-xml", args: "[--root DIR] FILE", min: 1, max: 1, setup: poolImportQubesXML,
		help: "record the pools and VM volumes of a Qubes R4 qubes.xml (its images must exist; nothing is created), all or nothing, and print them; " +
			"pools of a driver vmpoolctl lacks (lvm_thin) are recorded unavailable, the linux-kernel pool is skipped"},

	{name: "volume create", args: "POOL VID [--size SIZE] [--rw] [--save-on-stop] [--snap-on-start --source VID] [--volatile] [--revisions-to-keep N] [--replace]",
		min: 2, max: 2, setup: volumeCreate,
		help: "create a volume; the VM is VID's second part, the volume's name its third; " +
			"a --save-on-stop VID with data or revisions on disk is refused unless --replace, which deletes them"},
	{name: "volume start", args: "POOL VID", min: 2, max: 2, setup: noFlags(onVolume(volumeStart)),
		help: "start one volume"},
	{name: "volume stop", args: "POOL VID", min: 2, max: 2, setup: noFlags(onVolume(volumeStop)),
		help: "stop one volume (an origin commits its data)"},
	{name: "volume remove", args: "POOL VID", min: 2, max: 2, setup: noFlags(onVolume(volumeRemove)),
		help: "remove a stopped volume with its revisions"},
	{name: "volume info", args: "POOL VID", min: 2, max: 2, setup: noFlags(onVolume(volumeInfoCmd)),
		help: "show a volume's properties as the Admin API does"},
	{name: "volume revisions", args: "POOL VID", min: 2, max: 2, setup: noFlags(onVolume(volumeRevisions)),
		help: "list a volume's revisions, oldest first"},
	{name: "volume revert", args: "POOL VID [REV]", min: 2, max: 3, setup: noFlags(volumeRevert),
		help: "make revision REV (default: the newest) the volume's data"},
	{name: "volume resize", args: "POOL VID SIZE [--force]", min: 3, max: 3, setup: volumeResize,
		help: "grow a volume (shrink with --force, losing the data beyond SIZE)"},
	{name: "volume import", args: "POOL VID FILE", min: 3, max: 3, setup: noFlags(volumeImport),
		help: "replace a stopped volume's data with FILE's; its size becomes FILE's"},
	{name: "volume import-from", args: "POOL VID SRC_POOL SRC_VID", min: 4, max: 4, setup: noFlags(volumeImportFrom),
		help: "replace a stopped volume's data with another volume's committed data, from any pool (a reflink on one file-reflink filesystem, else a sparse copy)"},
	{name: "volume config", args: "POOL VID KEY VALUE", min: 4, max: 4, setup: noFlags(volumeConfig),
		help: "change a volume's revisions_to_keep (-1 disables snapshots), rw or ephemeral (yes/no), or source (a snapshot's template volume)"},

	{name: "vm start", args: "VM", min: 1, max: 1, setup: noFlags(vmStart), help: "start all volumes of a VM"},
	{name: "vm stop", args: "VM", min: 1, max: 1, setup: noFlags(vmStop), help: "stop all volumes of a VM"},
	{name: "vm list", help: "list the VMs and their volumes", setup: noFlags(vmList)},
}

func poolAdd(fs *flag.FlagSet) runFunc {
	var adopt bool
	fs.BoolVar(&adopt, "adopt", false, "take over a directory recorded as a pool of another state directory "+
		"(that state can no longer open it; its volumes are not taken over)")
	return func(e *env, args []string) error {
		params, err := parseParams(args[2:])
		if err != nil {
			return err
		}
		return e.withManager(func(m *pool.Manager) error {
			add := m.AddPool
			if adopt {
				add = m.AdoptPool
			}
			p, err := add(e.ctx, args[0], args[1], params)
			if !adopt && errors.Is(err, storage.ErrInUse) && !errors.Is(err, fsutil.ErrLocked) {
				// Not locked by a running process: recorded as another
				// state's pool.
				return hintError{err, "pool add --adopt takes the directory over " +
					"(the other state can no longer open it; its volumes stay, and volume create still refuses to replace their data)"}
			}
			if err != nil {
				return err
			}
			doc, err := poolInfoOf(e, m, p)
			if err != nil {
				return err
			}
			return e.emit(doc, nil)
		})
	}
}

func poolList(e *env, _ []string) error {
	return e.withManager(func(m *pool.Manager) error {
		rows := []poolRow{}
		for _, p := range m.Pools() {
			rows = append(rows, poolRow{Name: p.Name(), Driver: p.Driver(), Unavailable: unavailableReason(pool.Unavailable(p))})
		}
		return e.emit(rows, func() error { return printPoolList(e.stdout, rows) })
	})
}

func poolInfo(e *env, args []string) error {
	return e.withManager(func(m *pool.Manager) error { return emitPool(e, m, args[0], true) })
}

// poolDefault prints the pool Manager.DefaultPool chooses. Of the host's
// facts it passes $DEFAULT_LVM_POOL only: vmpoolctl does not ask LVM
// which thin pool holds "/", so that rule never applies.
func poolDefault(e *env, _ []string) error {
	return e.withManager(func(m *pool.Manager) error {
		p, err := m.DefaultPool(pool.DefaultPoolInputs{LVMPool: os.Getenv("DEFAULT_LVM_POOL")})
		if err != nil {
			return err
		}
		row := poolRow{Name: p.Name(), Driver: p.Driver()}
		return e.emit(row, func() error {
			_, err := fmt.Fprintln(e.stdout, row.Name)
			return err
		})
	})
}

func poolRemove(fs *flag.FlagSet) runFunc {
	var force bool
	fs.BoolVar(&force, "force", false, "remove the pool even though volumes use it: forget those volumes "+
		"(a VM left without volumes too) and leave their images and revisions on disk; running volumes are still refused")
	return func(e *env, args []string) error {
		return e.withManager(func(m *pool.Manager) error {
			err := m.RemovePoolWith(e.ctx, args[0], pool.RemovePoolOptions{Force: force})
			if !force && errors.Is(err, storage.ErrInUse) {
				return hintError{err, "pool remove --force forgets those volumes and leaves their images and revisions on disk"}
			}
			if err != nil {
				return err
			}
			return e.emit(map[string]any{"pool": args[0], "removed": true}, nil)
		})
	}
}

func poolSet(e *env, args []string) error {
	return e.withManager(func(m *pool.Manager) error {
		if err := m.SetPoolParameter(e.ctx, args[0], args[1], args[2]); err != nil {
			return err
		}
		if !e.json {
			return nil
		}
		return emitPool(e, m, args[0], false)
	})
}

// emitPool prints pool name's information, as pool info does with human
// set, else only with --json.
func emitPool(e *env, m *pool.Manager, name string, human bool) error {
	p, err := m.Pool(name)
	if err != nil {
		return err
	}
	doc, err := poolInfoOf(e, m, p)
	if err != nil {
		return err
	}
	if !human {
		return e.emit(doc, nil)
	}
	return e.emit(doc, func() error { return printPoolInfo(e.stdout, doc) })
}

func poolMigrate(e *env, args []string) error {
	params, err := parseParams(args[2:])
	if err != nil {
		return err
	}
	return e.withManager(func(m *pool.Manager) error {
		if err := m.MigratePool(e.ctx, args[0], args[1], params); err != nil {
			return err
		}
		return emitPool(e, m, args[0], true)
	})
}

func poolDrivers(e *env, _ []string) error {
	drivers := []driverDoc{}
	for _, name := range pool.Drivers() {
		params, err := pool.Parameters(name)
		if err != nil {
			return err
		}
		d := driverDoc{Driver: name, Parameters: []paramDoc{}}
		for _, p := range params {
			d.Parameters = append(d.Parameters, paramDoc{Name: p.Name, Required: p.Required, Doc: p.Doc})
		}
		drivers = append(drivers, d)
	}
	return e.emit(drivers, func() error { return printDrivers(e.stdout, drivers) })
}

func volumeCreate(fs *flag.FlagSet) runFunc {
	var (
		size, source                     string
		rw, saveOnStop, snap, isVolatile bool
		replace                          bool
		keep                             optionalInt
	)
	fs.StringVar(&size, "size", "", "the volume's size (1000, 10G, 10GiB, ...); required unless --snap-on-start, whose default is the source's size")
	fs.BoolVar(&rw, "rw", false, "make the volume writable by its VM")
	fs.BoolVar(&saveOnStop, "save-on-stop", false, "commit the volume's data at each stop, keeping revisions (private, template root)")
	fs.BoolVar(&snap, "snap-on-start", false, "start each time from --source's committed data (an AppVM's root)")
	fs.StringVar(&source, "source", "", "the vid, in the same pool, a --snap-on-start volume starts from")
	fs.BoolVar(&isVolatile, "volatile", false, "neither save on stop nor snap on start: empty at each start (the default)")
	fs.Var(&keep, "revisions-to-keep", "revisions to keep (-1 disables snapshots; default: the pool's)")
	fs.BoolVar(&replace, "replace", false, "delete the images and revisions VID has on disk first "+
		"(data no volume of this state owns, left by another state or a lost configuration), as Qubes' create does")
	return func(e *env, args []string) error {
		r, err := parseRef(args[0], args[1])
		if err != nil {
			return err
		}
		switch {
		case isVolatile && (saveOnStop || snap):
			return usagef("--volatile excludes --save-on-stop and --snap-on-start")
		case snap && source == "":
			return usagef("--snap-on-start needs --source VID")
		case !snap && source != "":
			return usagef("--source needs --snap-on-start")
		case size == "" && !snap:
			return usagef("--size is required (except with --snap-on-start, where it defaults to the source's size)")
		}
		if source != "" {
			if _, _, err := storage.ParseVID(source); err != nil {
				return fmt.Errorf("--source: %w", err)
			}
		}
		cfg := storage.VolumeConfig{Name: r.name, Pool: r.pool, VID: r.vid, RW: rw, SnapOnStart: snap,
			SaveOnStop: saveOnStop, Source: source, RevisionsToKeep: keep.v}
		if size != "" {
			if cfg.Size, err = parseSize(size); err != nil {
				return err
			}
		}
		return e.withManager(func(m *pool.Manager) error {
			if size == "" {
				if cfg.Size, err = sourceSize(e, m, r.pool, source); err != nil {
					return err
				}
			}
			create := m.CreateVolume
			if replace {
				create = m.ReplaceVolume
			}
			v, err := create(e.ctx, r.vm, cfg)
			if se := (*storage.Error)(nil); !replace && errors.As(err, &se) && se.Op == "create" && errors.Is(err, storage.ErrExists) {
				// The pool's create refused the vid's data on disk,
				// which no volume of this state owns.
				return hintError{err, "the data belongs to no volume of this state; " +
					"volume create --replace deletes it and its revisions and creates an empty volume"}
			}
			if err != nil {
				return err
			}
			return e.emitVolume(r.vm, v, false)
		})
	}
}

// sourceSize returns the size of the volume vid of the named pool.
func sourceSize(e *env, m *pool.Manager, poolName, vid string) (int64, error) {
	p, err := m.Pool(poolName)
	if err != nil {
		return 0, err
	}
	src, err := p.Volume(vid)
	if errors.Is(err, storage.ErrNotFound) {
		// As the Manager says it when --size is given.
		return 0, fmt.Errorf("source %s is not a volume of pool %s: %w", vid, poolName, storage.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("source: %w", err)
	}
	return src.Size(e.ctx)
}

// volumeRef names a volume on the command line: POOL VID, and the VM and
// volume name the vid gives.
type volumeRef struct{ pool, vid, vm, name string }

func parseRef(poolName, vid string) (volumeRef, error) {
	vm, name, err := storage.ParseVID(vid)
	return volumeRef{pool: poolName, vid: vid, vm: vm, name: name}, err
}

// volume looks the volume up in m; a volume of the VM with that name in
// another pool or under another vid is not it (ErrNotFound).
func (r volumeRef) volume(m *pool.Manager) (storage.Volume, error) {
	if _, err := m.Pool(r.pool); err != nil {
		return nil, err
	}
	v, err := m.Volume(r.vm, r.name)
	if err == nil && (v.Config().Pool != r.pool || v.Config().VID != r.vid) {
		err = storage.ErrNotFound
	}
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("no volume %s in pool %s: %w", r.vid, r.pool, storage.ErrNotFound)
	}
	return v, err
}

// volumeFunc is what a "volume ... POOL VID [ARGS]" command does once it
// has found its volume.
type volumeFunc func(e *env, m *pool.Manager, r volumeRef, v storage.Volume) error

// onVolume makes the run function of a command on POOL VID: it checks the
// vid, opens the Manager, finds the volume and calls fn.
func onVolume(fn volumeFunc) runFunc {
	return func(e *env, args []string) error {
		r, err := parseRef(args[0], args[1])
		if err != nil {
			return err
		}
		return e.withManager(func(m *pool.Manager) error {
			v, err := r.volume(m)
			if err != nil {
				return err
			}
			return fn(e, m, r, v)
		})
	}
}

func volumeStart(e *env, m *pool.Manager, r volumeRef, v storage.Volume) error {
	if err := saved(storage.NewVMSet(r.vm, ephemeral.Cryptsetup{}, v).Start(e.ctx), m.Save(context.WithoutCancel(e.ctx))); err != nil {
		return err
	}
	return e.emitVolume(r.vm, v, false)
}

func volumeStop(e *env, m *pool.Manager, r volumeRef, v storage.Volume) error {
	if err := saved(storage.NewVMSet(r.vm, ephemeral.Cryptsetup{}, v).Stop(e.ctx), m.Save(context.WithoutCancel(e.ctx))); err != nil {
		return err
	}
	return e.emitVolume(r.vm, v, false)
}

// saved combines the error of an operation on a volume with that of the
// save after it, as the Manager's own methods do: an operation that was
// done but not saved is pool.ErrNotSaved (exit status 3); a failed one
// keeps its error, with the save's joined.
func saved(opErr, saveErr error) error {
	switch {
	case saveErr == nil:
		return opErr
	case opErr == nil:
		return fmt.Errorf("%w: %w", pool.ErrNotSaved, saveErr)
	}
	return errors.Join(opErr, saveErr)
}

func volumeRemove(e *env, m *pool.Manager, r volumeRef, _ storage.Volume) error {
	if err := m.RemoveVolume(e.ctx, r.vm, r.name); err != nil {
		return err
	}
	return e.emit(map[string]any{"pool": r.pool, "vid": r.vid, "removed": true}, nil)
}

func volumeInfoCmd(e *env, _ *pool.Manager, r volumeRef, v storage.Volume) error {
	return e.emitVolume(r.vm, v, true)
}

func volumeRevisions(e *env, _ *pool.Manager, _ volumeRef, v storage.Volume) error {
	revs, err := v.Revisions(e.ctx)
	if err != nil {
		return err
	}
	docs := []revisionDoc{}
	for _, rev := range revs {
		docs = append(docs, revisionDoc{ID: rev.ID, Timestamp: rev.Timestamp()})
	}
	return e.emit(docs, func() error { return printRevisions(e.stdout, docs) })
}

func volumeRevert(e *env, args []string) error {
	var rev string
	if len(args) == 3 {
		rev = args[2]
		if err := storage.ValidateRevisionID(rev); err != nil {
			return err
		}
	}
	return onVolume(func(e *env, m *pool.Manager, r volumeRef, v storage.Volume) error {
		if err := m.RevertVolume(e.ctx, r.vm, r.name, rev); err != nil {
			return err
		}
		return e.emitVolume(r.vm, v, false)
	})(e, args)
}

func volumeResize(fs *flag.FlagSet) runFunc {
	var force bool
	fs.BoolVar(&force, "force", false, "allow shrinking, which loses the data beyond SIZE")
	return func(e *env, args []string) error {
		size, err := parseSize(args[2])
		if err != nil {
			return err
		}
		return onVolume(func(e *env, m *pool.Manager, r volumeRef, v storage.Volume) error {
			if err := m.ResizeVolume(e.ctx, r.vm, r.name, size, storage.ResizeOptions{Force: force}); err != nil {
				return err
			}
			return e.emitVolume(r.vm, v, false)
		})(e, args)
	}
}

func volumeImport(e *env, args []string) error {
	f, err := os.Open(args[2])
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", storage.ErrInvalidConfig, args[2])
	}
	return onVolume(func(e *env, m *pool.Manager, r volumeRef, v storage.Volume) error {
		ctx, done := e.progress("import "+r.vid, st.Size())
		err := m.ImportData(ctx, r.vm, r.name, f, st.Size())
		done(err == nil)
		if err != nil {
			return err
		}
		return e.emitVolume(r.vm, v, false)
	})(e, args)
}

func volumeImportFrom(e *env, args []string) error {
	src, err := parseRef(args[2], args[3])
	if err != nil {
		return err
	}
	return onVolume(func(e *env, m *pool.Manager, r volumeRef, v storage.Volume) error {
		sv, err := src.volume(m)
		if err != nil {
			return err
		}
		size, err := sv.Size(e.ctx)
		if err != nil {
			return err
		}
		ctx, done := e.progress("import "+src.vid+" into "+r.vid, size)
		err = m.ImportVolume(ctx, r.vm, r.name, src.vm, src.name)
		done(err == nil)
		if err != nil {
			return err
		}
		return e.emitVolume(r.vm, v, false)
	})(e, args[:2])
}

func volumeConfig(e *env, args []string) error {
	ch, err := parseVolumeChange(args[2], args[3])
	if err != nil {
		return err
	}
	return onVolume(func(e *env, m *pool.Manager, r volumeRef, v storage.Volume) error {
		if err := m.ReconfigureVolume(e.ctx, r.vm, r.name, ch); err != nil {
			return err
		}
		return e.emitVolume(r.vm, v, false)
	})(e, args)
}

func vmStart(e *env, args []string) error {
	return onVM(e, args[0], func(m *pool.Manager) error { return m.StartVM(e.ctx, args[0]) })
}

func vmStop(e *env, args []string) error {
	return onVM(e, args[0], func(m *pool.Manager) error { return m.StopVM(e.ctx, args[0]) })
}

// onVM checks the VM's name, runs fn and prints the VM's volumes in JSON
// mode.
func onVM(e *env, vm string, fn func(*pool.Manager) error) error {
	if err := storage.ValidateVMName(vm); err != nil {
		return err
	}
	return e.withManager(func(m *pool.Manager) error {
		if err := fn(m); err != nil {
			return err
		}
		if !e.json {
			return nil
		}
		doc, err := vmDocOf(e, m, vm)
		if err != nil {
			return err
		}
		return e.emit(doc, nil)
	})
}

func vmList(e *env, _ []string) error {
	return e.withManager(func(m *pool.Manager) error {
		docs := []vmDoc{}
		for _, vm := range m.VMs() {
			doc, err := vmDocOf(e, m, vm)
			if err != nil {
				return err
			}
			docs = append(docs, doc)
		}
		return e.emit(docs, func() error { return printVMs(e.stdout, docs) })
	})
}

// poolInfoOf describes p as admin.pool.Info does: its configuration, its
// size and usage when known, and the pool that includes it, if any.
func poolInfoOf(e *env, m *pool.Manager, p storage.Pool) (poolDoc, error) {
	doc := poolDoc{Name: p.Name(), Driver: p.Driver(), Config: p.Config(), Unavailable: unavailableReason(pool.Unavailable(p))}
	if u, err := p.Usage(e.ctx); err == nil && !u.Unavailable {
		doc.Size, doc.Usage = &u.DataSize, &u.DataUsage
	}
	var err error
	doc.IncludedIn, err = m.IncludedIn(p.Name())
	return doc, err
}

// vmDocOf describes VM vm: Running when any of its volumes runs.
func vmDocOf(e *env, m *pool.Manager, vm string) (vmDoc, error) {
	set, err := m.VMVolumes(vm)
	if err != nil {
		return vmDoc{}, err
	}
	doc := vmDoc{Name: vm, State: "Halted", Volumes: []vmVolumeDoc{}}
	for _, v := range set.Volumes() {
		running, err := v.IsRunning(e.ctx)
		if isUnavailable(err) {
			// A volume of an unavailable pool cannot say.
			doc.State, err = "Unknown", nil
		}
		if err != nil {
			return vmDoc{}, err
		}
		if running && doc.State != "Unknown" {
			doc.State = "Running"
		}
		cfg := v.Config()
		doc.Volumes = append(doc.Volumes, vmVolumeDoc{Name: cfg.Name, Pool: cfg.Pool, VID: cfg.VID})
	}
	return doc, nil
}

// sortedKeys returns the keys of m, sorted.
func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
