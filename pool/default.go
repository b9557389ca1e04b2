package pool

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"

	"github.com/vmpool/vmpool/storage"
)

// varLibQubes is Qubes' qubes_base_dir (qubes/config.py), the directory of
// its varlibqubes pool.
const varLibQubes = "/var/lib/qubes"

// DefaultPoolInputs are the facts of the host, besides its pools, that
// Qubes' choice of the default pool reads. They are the caller's to
// gather, so that the choice itself needs no LVM.
type DefaultPoolInputs struct {
	// LVMPool is the value of the DEFAULT_LVM_POOL environment variable,
	// "" when it is unset. Qubes compares it with an lvm_thin pool's
	// thin_pool parameter as it is: the usual value qubes_dom0/vm-pool,
	// which names the volume group too, matches no thin_pool vm-pool.
	LVMPool string
	// RootVolumeGroup and RootThinPool name the LVM thin pool whose thin
	// volume holds the root filesystem, both "" when "/" is not on a thin
	// volume: what Qubes' DirectoryThinPool.thin_pool("/") finds from the
	// device-mapper table of the device of "/".
	RootVolumeGroup string
	RootThinPool    string
}

// DefaultPool returns the pool Qubes' default_pool property defaults to
// (qubes/app.py, _default_pool), by the first of these rules that a pool
// fits:
//
//  1. the pool named "default", whatever its driver;
//  2. an lvm_thin pool whose thin_pool is in.LVMPool, if that is set;
//  3. an lvm_thin pool whose volume_group and thin_pool are
//     in.RootVolumeGroup and in.RootThinPool, if RootThinPool is set;
//  4. a file or file-reflink pool whose dir_path is /var/lib/qubes.
//
// Where several pools fit one rule, the first by name is returned: Qubes
// takes the first in qubes.xml's order, which the state does not keep.
// When no pool fits, the error wraps storage.ErrNotFound (Qubes:
// "Cannot determine default storage pool").
//
// The Manager keeps no default_pool property: a caller that lets its
// users set one (or default_pool_private, _root, _volatile, _kernel, all
// defaulting to default_pool in Qubes) uses it instead, and refuses to
// remove the pool it names, as Qubes does.
func (m *Manager) DefaultPool(in DefaultPoolInputs) (storage.Pool, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(); err != nil {
		return nil, err
	}
	if p, ok := m.pools["default"]; ok {
		return p, nil
	}
	names := slices.Sorted(maps.Keys(m.pools))
	first := func(fits func(driver string, cfg map[string]string) bool) storage.Pool {
		for _, name := range names {
			p := m.pools[name]
			if fits(p.Driver(), p.Config()) {
				return p
			}
		}
		return nil
	}
	if in.LVMPool != "" {
		if p := first(func(driver string, cfg map[string]string) bool {
			return driver == "lvm_thin" && cfg["thin_pool"] == in.LVMPool
		}); p != nil {
			return p, nil
		}
	}
	if in.RootThinPool != "" {
		if p := first(func(driver string, cfg map[string]string) bool {
			return driver == "lvm_thin" && cfg["volume_group"] == in.RootVolumeGroup && cfg["thin_pool"] == in.RootThinPool
		}); p != nil {
			return p, nil
		}
	}
	if p := first(func(driver string, cfg map[string]string) bool {
		return (driver == "file" || driver == "file-reflink") && filepath.Clean(cfg["dir_path"]) == varLibQubes
	}); p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("cannot determine default storage pool (no pool named default, no lvm_thin pool of DEFAULT_LVM_POOL "+
		"or of the root filesystem, no file or file-reflink pool at %s); add a pool named default: %w", varLibQubes, storage.ErrNotFound)
}

// VarLibQubes is the name of the pool Qubes creates for its base
// directory, /var/lib/qubes.
const VarLibQubes = "varlibqubes"

// InitialPoolsOptions modify AddInitialPools.
type InitialPoolsOptions struct {
	// BaseDir is the dir_path of varlibqubes, Qubes' qubes_base_dir; ""
	// means /var/lib/qubes.
	BaseDir string
	// Driver is varlibqubes' driver; "" means "file". Only a caller that
	// asks for it gets "file-reflink" (see below).
	Driver string
	// Params are further parameters of the pool (file-reflink:
	// setup_check).
	Params map[string]string
}

// AddInitialPools adds the pools Qubes creates in an empty qubes.xml
// (Qubes.load_initial_values): varlibqubes at /var/lib/qubes. It is
// created with the file driver even where the filesystem takes reflinks
// (btrfs, XFS), as the seed of Qubes' file-reflink driver did: vmpool
// never picks file-reflink by itself, while Qubes since 2018 silently
// does when reflink.is_supported holds; pass Driver "file-reflink" for
// that, or move the pool later with MigratePool. Qubes' linux-kernel pool
// (driver linux-kernel, /var/lib/qubes/vm-kernels) has no vmpool driver
// and is not created. A Manager that holds a pool already is ErrExists,
// as Qubes refuses to create a store over an existing qubes.xml; the
// rest is AddPool's.
func (m *Manager) AddInitialPools(ctx context.Context, opts InitialPoolsOptions) (storage.Pool, error) {
	dir := cmp.Or(opts.BaseDir, varLibQubes)
	driver := cmp.Or(opts.Driver, "file")
	params := maps.Clone(opts.Params)
	if params == nil {
		params = make(map[string]string)
	}
	if _, ok := params["dir_path"]; ok {
		return nil, fmt.Errorf("add the initial pools: %w: dir_path is InitialPoolsOptions.BaseDir", storage.ErrInvalidConfig)
	}
	params["dir_path"] = dir
	return m.addPool(ctx, VarLibQubes, driver, params, addOptions{first: true})
}
