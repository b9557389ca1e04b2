package pool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/vmpool/vmpool/storage"
)

// MigratePool moves the pool named name to driver in place, keeping its
// directory and every volume (design: "Migration from file to
// file-reflink is a supported operation"). Today the one supported move is
// file → file-reflink, which Qubes documents as stopping every VM,
// editing qubes.xml and deleting the *-cow.img* files by hand; the target
// driver's pool must implement storage.Migrator. params are the new
// driver's parameters beyond the pool's current ones (file-reflink:
// setup_check=no to accept a filesystem without reflinks).
//
// Nothing changes, and the error says why, when: the pool or the driver
// is unknown (ErrNotFound); the target cannot take over this driver's
// pools (ErrUnsupported); a parameter is malformed (ErrInvalidConfig); a
// volume of the pool runs (ErrRunning) or holds uncommitted data
// (ErrDirty): stop the VMs first; the filesystem takes no reflinks and
// setup_check=no was not given (ErrReflinkUnsupported).
//
// The steps: the old pool is closed and the new one opened on the same
// directory and Setup; every volume is registered with it; MigrateFrom
// converts what can be kept (the file driver's revision becomes a
// file-reflink revision); the state file records the new driver in one
// atomic rename, noting that the migration still has to finish; then
// FinishMigration removes the old driver's files (the *-cow.img* stores)
// and the note is dropped. A failure before the rename reopens the pool
// with its old driver; a process killed before it leaves a state naming
// the old driver, whose files are all still there, and one killed after
// it a state naming the new driver, whose OpenManager completes the
// migration. Either way the pool opens with one driver or the other.
// Called for a pool that has driver already, MigratePool completes such
// an interrupted migration, or does nothing.
func (m *Manager) MigratePool(ctx context.Context, name, driver string, params map[string]string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(); err != nil {
		return err
	}
	fail := func(err error) error { return fmt.Errorf("migrate pool %s to %s: %w", name, driver, err) }
	old, err := m.lookupPool(name)
	if err != nil {
		return fail(err)
	}
	from := old.Driver()
	if from == driver {
		if err := m.finishMigration(ctx, name); err != nil {
			return fail(err)
		}
		return nil
	}
	if _, err := Driver(driver); err != nil {
		return fail(err)
	}
	for _, k := range []string{"name", "driver"} {
		if _, ok := params[k]; ok {
			return fail(fmt.Errorf("%w: %q is not a driver parameter", storage.ErrInvalidConfig, k))
		}
	}
	oldParams := persistentParams(old)
	newParams := maps.Clone(oldParams)
	maps.Copy(newParams, params)
	vols, err := m.poolVolumes(ctx, name)
	if err != nil {
		return fail(err)
	}

	// From here on, the pool is closed; every failure reopens it with its
	// old driver.
	if err := old.Close(); err != nil {
		return fail(fmt.Errorf("close the %s pool: %w", from, err))
	}
	rollback := func(err error) error {
		if _, rerr := m.replacePool(ctx, name, from, oldParams, vols); rerr != nil {
			err = errors.Join(err, fmt.Errorf("reopen the pool with the %s driver (open the Manager again): %w", from, rerr))
		}
		return fail(err)
	}
	np, err := m.replacePool(ctx, name, driver, newParams, vols)
	if err != nil {
		return rollback(err)
	}
	undo := func(err error) error {
		m.forgetAll(ctx, np, vols)
		if cerr := np.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return rollback(err)
	}
	mg, ok := np.(storage.Migrator)
	if !ok {
		return undo(fmt.Errorf("%w: the %s driver cannot take over pools of another driver", storage.ErrUnsupported, driver))
	}
	sctx, cancel := context.WithTimeout(ctx, m.lockWait)
	err = np.Setup(sctx)
	cancel()
	if err != nil {
		return undo(err)
	}
	if err := mg.MigrateFrom(ctx, from); err != nil {
		return undo(err)
	}
	crashPoint("migrate-converted")
	m.migrating[name] = from
	if err := m.save(); err != nil {
		delete(m.migrating, name)
		return undo(err)
	}
	crashPoint("migrate-switched")
	m.track(np)
	if err := m.finishMigration(ctx, name); err != nil {
		return fail(fmt.Errorf("the pool now uses %s, but removing the %s driver's files failed (MigratePool again, or the next OpenManager, completes it): %w",
			driver, from, err))
	}
	return nil
}

// migrationVolume is a volume of a pool being migrated: its VM and
// configuration.
type migrationVolume struct {
	vm  string
	cfg storage.VolumeConfig
}

// poolVolumes returns the volumes of the pool named name, sources before
// the snapshots of them, after checking that none runs or is dirty; the
// caller holds mu.
func (m *Manager) poolVolumes(ctx context.Context, name string) ([]migrationVolume, error) {
	var vols []migrationVolume
	for vm, v := range m.allVolumes() {
		cfg := v.Config()
		if cfg.Pool != name {
			continue
		}
		running, err := v.IsRunning(ctx)
		if err != nil {
			return nil, err
		}
		if running {
			return nil, fmt.Errorf("volume %s of VM %s runs; stop the VM first: %w", cfg.Name, vm, storage.ErrRunning)
		}
		dirty, err := v.IsDirty(ctx)
		if err != nil {
			return nil, err
		}
		if dirty {
			return nil, fmt.Errorf("volume %s of VM %s holds data its last stop did not commit; start and stop the VM first: %w", cfg.Name, vm, storage.ErrDirty)
		}
		vols = append(vols, migrationVolume{vm, cfg})
	}
	slices.SortStableFunc(vols, func(a, b migrationVolume) int {
		return cmp.Compare(boolInt(a.cfg.SnapOnStart), boolInt(b.cfg.SnapOnStart))
	})
	return vols, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// replacePool opens the pool name with driver and params, registers vols
// with it and puts it and its volumes in place of the old ones; on an
// error nothing stays open and nothing is replaced. The caller holds mu.
func (m *Manager) replacePool(ctx context.Context, name, driver string, params map[string]string, vols []migrationVolume) (storage.Pool, error) {
	p, err := m.openPool(ctx, name, driver, params, false)
	if err != nil {
		return nil, err
	}
	made := make([]storage.Volume, 0, len(vols))
	for _, mv := range vols {
		v, err := p.InitVolume(mv.cfg)
		if err != nil {
			m.forgetAll(ctx, p, vols[:len(made)])
			m.closePool(p)
			return nil, fmt.Errorf("init volume %s of VM %s: %w", mv.cfg.Name, mv.vm, err)
		}
		made = append(made, v)
	}
	m.pools[name] = p
	for i, mv := range vols {
		m.addVolume(mv.vm, made[i])
	}
	return p, nil
}

// forgetAll unregisters vols from p (a failed migration), logging errors.
func (m *Manager) forgetAll(ctx context.Context, p storage.Pool, vols []migrationVolume) {
	for _, mv := range vols {
		if err := p.ForgetVolume(ctx, mv.cfg.VID); err != nil {
			m.log.Error().Err(err).Str("pool", p.Name()).Str("vid", mv.cfg.VID).Msg("forget volume after a failed migration")
		}
	}
}

// finishMigration runs FinishMigration on pool name if the state notes a
// migration to finish, and drops the note; the caller holds mu.
func (m *Manager) finishMigration(ctx context.Context, name string) error {
	from, ok := m.migrating[name]
	if !ok {
		return nil
	}
	p, err := m.lookupPool(name)
	if err != nil {
		return err
	}
	mg, ok := p.(storage.Migrator)
	if !ok {
		return fmt.Errorf("%w: the state notes a migration from %s, but the %s driver cannot finish it", storage.ErrUnsupported, from, p.Driver())
	}
	if err := mg.FinishMigration(ctx, from); err != nil {
		return err
	}
	delete(m.migrating, name)
	if err := m.save(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotSaved, err)
	}
	return nil
}

// finishMigrations completes the migrations an earlier process left
// unfinished (it died after recording the switch); failures are logged,
// and the note stays for the next try. Called by load.
func (m *Manager) finishMigrations(ctx context.Context) {
	for _, name := range slices.Sorted(maps.Keys(m.migrating)) {
		if err := m.finishMigration(ctx, name); err != nil {
			m.log.Warn().Err(err).Str("pool", name).Str("from", m.migrating[name]).
				Msg("finish an interrupted migration (MigratePool completes it)")
		}
	}
}
