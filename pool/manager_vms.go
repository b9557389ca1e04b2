package pool

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/vmpool/vmpool/storage"
)

// VMs returns the names of the VMs that have volumes, sorted.
func (m *Manager) VMs() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Sorted(maps.Keys(m.vms))
}

// VMVolumes returns the volumes of VM vm, sorted by name, as a
// storage.Set that encrypts its ephemeral volumes (storage.NewVMSet, with
// ManagerOptions.Encryptor); its BlockDevices are what the VM gets. An
// unknown VM is ErrNotFound.
func (m *Manager) VMVolumes(vm string) (*storage.Set, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(); err != nil {
		return nil, err
	}
	return m.vmVolumes(vm)
}

// vmVolumes builds the Set of vm; the caller holds mu.
func (m *Manager) vmVolumes(vm string) (*storage.Set, error) {
	vols, ok := m.vms[vm]
	if !ok {
		return nil, fmt.Errorf("no VM %q: %w", vm, storage.ErrNotFound)
	}
	set := make([]storage.Volume, 0, len(vols))
	for _, name := range slices.Sorted(maps.Keys(vols)) {
		set = append(set, vols[name])
	}
	return storage.NewVMSet(vm, m.enc, set...), nil
}

// StartVM starts all volumes of VM vm through storage.Set: verified, then
// started concurrently, the ones started rolled back without a commit if
// any fails. It saves afterwards.
func (m *Manager) StartVM(ctx context.Context, vm string) error {
	return m.withVM(vm, "start", func(set *storage.Set) error { return set.Start(ctx) })
}

// StopVM stops all volumes of VM vm concurrently (origins commit) and
// saves. Stopping a stopped VM does nothing.
func (m *Manager) StopVM(ctx context.Context, vm string) error {
	return m.withVM(vm, "stop", func(set *storage.Set) error { return set.Stop(ctx) })
}

// withVM runs fn on the volumes of vm, then saves, even when fn failed
// half-way (a volume that stopped may have changed).
func (m *Manager) withVM(vm, op string, fn func(*storage.Set) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(); err != nil {
		return err
	}
	set, err := m.vmVolumes(vm)
	if err == nil {
		err = saved(fn(set), m.save())
	}
	if err != nil {
		return fmt.Errorf("%s VM %s: %w", op, vm, err)
	}
	return nil
}

// StopStorage stops the storage of every VM for which running returns
// false, as qubesd does for all halted qubes when it starts (Qubes'
// stop_storage): after a crash of the host or of the caller, an origin
// commits what it holds and the images of snapshot and volatile volumes
// are discarded, so the next start of such a VM is a clean one. Only the
// caller knows which VMs still run after its own restart: a nil running
// means none does. The VMs are stopped concurrently; the state is saved
// once at the end, and the failures of all VMs are returned joined.
func (m *Manager) StopStorage(ctx context.Context, running func(vm string) bool) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(); err != nil {
		return err
	}
	var halted []string
	for _, vm := range slices.Sorted(maps.Keys(m.vms)) {
		if running == nil || !running(vm) {
			halted = append(halted, vm)
		}
	}
	errs := make([]error, len(halted))
	var wg sync.WaitGroup
	for i, vm := range halted {
		set, err := m.vmVolumes(vm)
		if err != nil {
			errs[i] = err
			continue
		}
		wg.Go(func() {
			if err := set.Stop(ctx); err != nil {
				errs[i] = fmt.Errorf("stop VM %s: %w", vm, err)
			}
		})
	}
	wg.Wait()
	if err := saved(errors.Join(errs...), m.save()); err != nil {
		return fmt.Errorf("stop storage: %w", err)
	}
	return nil
}
