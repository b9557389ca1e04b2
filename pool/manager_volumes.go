package pool

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmpool/vmpool/storage"
)

// CreateVolume adds the volume cfg to VM vm: it registers it with the pool
// named cfg.Pool (InitVolume), creates its images and saves. The VM exists
// as long as it has volumes. A malformed VM name or configuration is
// ErrInvalidConfig; an unknown pool, or a snap_on_start source that is not
// a volume of the same pool, ErrNotFound; a volume of that name in the VM,
// or of that vid in the pool, ErrExists, and so is a save_on_stop vid
// whose data or revisions are on disk already (left by another state or a
// lost configuration): they are kept, never replaced (ReplaceVolume does).
// On failure the volume's new images are removed again and nothing is
// saved.
func (m *Manager) CreateVolume(ctx context.Context, vm string, cfg storage.VolumeConfig) (storage.Volume, error) {
	return m.createVolume(ctx, vm, cfg, false)
}

// ReplaceVolume is CreateVolume that first deletes whatever images and
// revisions of cfg.VID are on disk, as Qubes' create does: the explicit
// way to give a vid with old data a new, empty volume.
func (m *Manager) ReplaceVolume(ctx context.Context, vm string, cfg storage.VolumeConfig) (storage.Volume, error) {
	return m.createVolume(ctx, vm, cfg, true)
}

func (m *Manager) createVolume(ctx context.Context, vm string, cfg storage.VolumeConfig, replace bool) (storage.Volume, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return nil, err
	}
	fail := func(err error) (storage.Volume, error) {
		return nil, volumeError(fmt.Sprintf("create volume %s of VM %s", cfg.Name, vm), err)
	}
	if err := storage.ValidateVMName(vm); err != nil {
		return fail(err)
	}
	if err := cfg.Validate(); err != nil {
		return fail(err)
	}
	if cfg.Pool == "" {
		return fail(fmt.Errorf("%w: the volume configuration names no pool", storage.ErrInvalidConfig))
	}
	p, err := m.lookupPool(cfg.Pool)
	if err != nil {
		return fail(err)
	}
	if _, ok := m.vms[vm][cfg.Name]; ok {
		return fail(fmt.Errorf("VM %s has a volume %s: %w", vm, cfg.Name, storage.ErrExists))
	}
	if cfg.SnapOnStart {
		if _, err := p.Volume(cfg.Source); err != nil {
			return fail(fmt.Errorf("source %s is not a volume of pool %s: %w", cfg.Source, cfg.Pool, storage.ErrNotFound))
		}
	}
	v, err := p.InitVolume(cfg)
	if err != nil {
		return fail(err)
	}
	// forget unregisters the volume after a failure, leaving the disk as
	// it is; its error is joined to err.
	forget := func(err error) (storage.Volume, error) {
		if ferr := p.ForgetVolume(context.WithoutCancel(ctx), cfg.VID); ferr != nil {
			err = errors.Join(err, ferr)
		}
		return fail(err)
	}
	if replace {
		running, err := v.IsRunning(ctx)
		if err == nil && running {
			err = fmt.Errorf("the vid's image on disk runs: %w", storage.ErrRunning)
		}
		if err != nil {
			return forget(err)
		}
		if err := v.Remove(ctx); err != nil { // Remove unregisters it
			return forget(err)
		}
		if v, err = p.InitVolume(cfg); err != nil {
			return fail(err)
		}
	}
	// A Create that fails leaves nothing of its own (its images are made
	// under temporary names and renamed into place), and one refused
	// before it looked (a cancelled context, a closed pool) or because the
	// vid has data must not have what is there removed: unregister only.
	if err := v.Create(ctx); err != nil {
		return forget(err)
	}
	m.addVolume(vm, v)
	if err := m.save(); err != nil {
		m.dropVolume(vm, cfg.Name)
		// Create succeeded, so nothing of the vid's was there before it:
		// what is there now is this call's own.
		if rerr := v.Remove(context.WithoutCancel(ctx)); rerr != nil {
			m.log.Error().Err(rerr).Str("pool", cfg.Pool).Str("vid", cfg.VID).Msg("remove volume after failed create")
			return forget(err)
		}
		return fail(err)
	}
	return v, nil
}

// RemoveVolume removes volume name of VM vm: its images, revisions and
// configuration; a VM left without volumes is forgotten. A running volume
// is ErrRunning; a volume that is the snap_on_start source of another
// volume ErrInUse.
func (m *Manager) RemoveVolume(ctx context.Context, vm, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return err
	}
	fail := func(err error) error { return volumeError(fmt.Sprintf("remove volume %s of VM %s", name, vm), err) }
	v, err := m.volume(vm, name)
	if err != nil {
		return fail(err)
	}
	running, err := v.IsRunning(ctx)
	if err != nil {
		return fail(err)
	}
	if running {
		return fail(storage.ErrRunning)
	}
	cfg := v.Config()
	for ovm, o := range m.allVolumes() {
		if ocfg := o.Config(); ocfg.Pool == cfg.Pool && ocfg.Source == cfg.VID {
			return fail(fmt.Errorf("it is the source of volume %s of VM %s: %w", ocfg.Name, ovm, storage.ErrInUse))
		}
	}
	// The removal is recorded before the images go, so that the state
	// never lists a volume whose images are gone: a state that cannot be
	// saved refuses the removal, and nothing is deleted.
	m.dropVolume(vm, name)
	if err := m.save(); err != nil {
		m.addVolume(vm, v)
		return fail(err)
	}
	if err := v.Remove(ctx); err != nil {
		// Refused (the pool's directory missing, say): list it again.
		m.addVolume(vm, v)
		if serr := m.save(); serr != nil {
			err = errors.Join(err, fmt.Errorf("the state no longer lists the volume: %w", serr))
		}
		return fail(err)
	}
	return nil
}

// Volume returns volume name of VM vm, or an error wrapping ErrNotFound.
func (m *Manager) Volume(vm, name string) (storage.Volume, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(); err != nil {
		return nil, err
	}
	return m.volume(vm, name)
}

// volume looks a volume up; the caller holds mu.
func (m *Manager) volume(vm, name string) (storage.Volume, error) {
	vols, ok := m.vms[vm]
	if !ok {
		return nil, fmt.Errorf("no VM %q: %w", vm, storage.ErrNotFound)
	}
	v, ok := vols[name]
	if !ok {
		return nil, fmt.Errorf("VM %s has no volume %q: %w", vm, name, storage.ErrNotFound)
	}
	return v, nil
}

// withVolume runs fn on volume name of vm, then saves, even when fn
// failed half-way (a size may have changed).
func (m *Manager) withVolume(vm, name, op string, fn func(storage.Volume) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if err := m.check(); err != nil {
		return err
	}
	v, err := m.volume(vm, name)
	if err == nil {
		err = saved(fn(v), m.save())
	}
	if err != nil {
		return volumeError(fmt.Sprintf("%s volume %s of VM %s", op, name, vm), err)
	}
	return nil
}

// saved combines the error of an operation with that of the save after
// it: an operation that was done but not saved is ErrNotSaved; a failed
// one keeps its own error, with the save's joined.
func saved(opErr, saveErr error) error {
	switch {
	case saveErr == nil:
		return opErr
	case opErr == nil:
		return fmt.Errorf("%w: %w", ErrNotSaved, saveErr)
	}
	return errors.Join(opErr, saveErr)
}

// ResizeVolume resizes volume name of VM vm, running or not, and saves its
// new size. Shrinking needs opts.Force (else ErrShrink).
func (m *Manager) ResizeVolume(ctx context.Context, vm, name string, size int64, opts storage.ResizeOptions) error {
	return m.withVolume(vm, name, "resize", func(v storage.Volume) error { return v.Resize(ctx, size, opts) })
}

// RevertVolume makes revision rev (the newest when empty) the committed
// state of volume name of VM vm and saves, as the Admin API's
// admin.vm.volume.Revert does. A volume that is not cleanly stopped is
// ErrDirty; an unknown revision ErrNotFound.
func (m *Manager) RevertVolume(ctx context.Context, vm, name, rev string) error {
	return m.withVolume(vm, name, "revert", func(v storage.Volume) error {
		if rev != "" {
			if err := storage.ValidateRevisionID(rev); err != nil {
				return err
			}
		}
		return v.Revert(ctx, rev)
	})
}

// ReconfigureVolume changes the configuration of volume name of VM vm and
// saves it, as admin.vm.volume.Set.revisions_to_keep, .rw and .ephemeral
// do (and a template change, for a snapshot's source). Enabling or
// disabling snapshots (revisions_to_keep to or from -1), rw and source
// need the VM halted (ErrRunning), and enabling or disabling snapshots
// also needs every volume that snapshots this one stopped (Qubes checks
// an AppVM's running disposables); a new source must be a volume of the
// same pool (ErrNotFound). If the state cannot be saved, the change is
// undone.
func (m *Manager) ReconfigureVolume(ctx context.Context, vm, name string, ch storage.VolumeChange) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return err
	}
	fail := func(err error) error { return volumeError(fmt.Sprintf("configure volume %s of VM %s", name, vm), err) }
	v, err := m.volume(vm, name)
	if err != nil {
		return fail(err)
	}
	old := v.Config()
	next, err := old.Apply(ch)
	if err != nil {
		return fail(err)
	}
	if old.TogglesSnapshots(next) || next.RW != old.RW || next.Source != old.Source {
		if err := m.checkHalted(ctx, vm); err != nil {
			return fail(err)
		}
	}
	if old.TogglesSnapshots(next) {
		for ovm, o := range m.allVolumes() {
			if ocfg := o.Config(); ocfg.Pool == old.Pool && ocfg.Source == old.VID {
				if running, err := o.IsRunning(ctx); err != nil || running {
					return fail(errors.Join(err, fmt.Errorf("volume %s of VM %s snapshots it and runs: %w", ocfg.Name, ovm, storage.ErrRunning)))
				}
			}
		}
	}
	if next.Source != old.Source {
		if _, err := m.pools[old.Pool].Volume(next.Source); err != nil {
			return fail(fmt.Errorf("source %s is not a volume of pool %s: %w", next.Source, old.Pool, storage.ErrNotFound))
		}
	}
	if err := v.Reconfigure(ctx, ch); err != nil {
		return fail(err)
	}
	if err := m.save(); err != nil {
		// The exact old configuration, an unset ephemeral included.
		back := storage.VolumeChange{RevisionsToKeep: old.RevisionsToKeep, RW: &old.RW, Ephemeral: old.Ephemeral, ClearEphemeral: old.Ephemeral == nil}
		if next.Source != old.Source {
			back.Source = &old.Source
		}
		if uerr := v.Reconfigure(context.WithoutCancel(ctx), back); uerr != nil {
			err = errors.Join(err, fmt.Errorf("undo: %w", uerr))
		}
		return fail(err)
	}
	return nil
}

// volumeError adds the Manager's context, what (such as "revert volume
// private of VM work"), to err, unless err comes from the volume's driver
// and names the operation and the volume already (a *storage.Error with a
// vid, such as "pool p: revert appvms/work/private: volume is not cleanly
// stopped"): each fact is said once.
func volumeError(what string, err error) error {
	if se := (*storage.Error)(nil); errors.As(err, &se) && se.VID != "" {
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}
