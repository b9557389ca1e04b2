// Package pool is vmpool's driver registry and the Manager of a host's
// named pools and its VMs' volume configurations.
//
// Drivers register themselves from an init function, as database/sql
// drivers do; a program picks its drivers with blank imports:
//
//	import (
//		"github.com/vmpool/vmpool/pool"
//		_ "github.com/vmpool/vmpool/reflink"
//	)
//
// Registration is a map insert: nothing is scanned at start-up.
package pool

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/vmpool/vmpool/storage"
)

var (
	driversMu sync.RWMutex
	drivers   = make(map[string]storage.Driver)
)

// Register makes a driver available under name. It panics if d is nil or
// name is already registered: both are programming errors.
func Register(name string, d storage.Driver) {
	driversMu.Lock()
	defer driversMu.Unlock()
	if d == nil {
		panic("pool: Register driver is nil")
	}
	if _, dup := drivers[name]; dup {
		panic("pool: Register called twice for driver " + name)
	}
	drivers[name] = d
}

// Drivers returns the names of the registered drivers, sorted.
func Drivers() []string {
	driversMu.RLock()
	defer driversMu.RUnlock()
	return slices.Sorted(maps.Keys(drivers))
}

// Driver returns the driver registered under name, or an error wrapping
// storage.ErrNotFound.
func Driver(name string) (storage.Driver, error) {
	driversMu.RLock()
	d, ok := drivers[name]
	driversMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("no driver %q (registered: %v; is its package imported?): %w", name, Drivers(), storage.ErrNotFound)
	}
	return d, nil
}

// Parameters returns the parameters of the named driver, in order.
func Parameters(driver string) ([]storage.Parameter, error) {
	d, err := Driver(driver)
	if err != nil {
		return nil, err
	}
	return d.Parameters(), nil
}

// Open opens a pool with the named driver. It validates the parameters
// but creates nothing; call Setup on a new pool.
func Open(ctx context.Context, driver string, cfg storage.PoolConfig) (storage.Pool, error) {
	d, err := Driver(driver)
	if err != nil {
		return nil, err
	}
	return d.Open(ctx, cfg)
}
