package pool

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

// targetDriverName is a driver that takes over the fake driver's pools
// (as file-reflink takes over the file driver's): its pools are fake
// pools that also implement storage.Migrator.
const targetDriverName = "manager-test-target"

func init() { Register(targetDriverName, targetDriver{}) }

type targetDriver struct{}

func (targetDriver) Parameters() []storage.Parameter {
	return append(fakeDriver{}.Parameters(), storage.Parameter{Name: "fail_migrate"})
}

// Open opens a fake pool; fail_migrate=yes makes MigrateFrom fail.
func (targetDriver) Open(ctx context.Context, cfg storage.PoolConfig) (storage.Pool, error) {
	params := maps.Clone(cfg.Params)
	failMigrate := params["fail_migrate"] == "yes"
	delete(params, "fail_migrate")
	cfg.Params = params
	p, err := fakeDriver{}.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &targetPool{fakePool: p.(*fakePool), failMigrate: failMigrate}, nil
}

// targetPool's migration: MigrateFrom writes "converted" (once: a second
// run finds it), FinishMigration removes every "*.cow" file, which
// stands for the old driver's own files.
type targetPool struct {
	*fakePool
	failMigrate bool
}

func (p *targetPool) Driver() string { return targetDriverName }

func (p *targetPool) Config() map[string]string {
	c := p.fakePool.Config()
	c["driver"] = targetDriverName
	return c
}

func (p *targetPool) MigrateFrom(_ context.Context, driver string) error {
	if driver != fakeDriverName {
		return fmt.Errorf("%w: from %s", storage.ErrUnsupported, driver)
	}
	if p.failMigrate {
		return errors.New("injected migration failure")
	}
	path := filepath.Join(p.dir, "converted")
	b, _ := os.ReadFile(path)
	if len(b) > 0 {
		return nil
	}
	return os.WriteFile(path, []byte("once"), 0o600)
}

func (p *targetPool) FinishMigration(_ context.Context, driver string) error {
	cows, err := filepath.Glob(filepath.Join(p.dir, "*", "*", "*.cow"))
	if err != nil {
		return err
	}
	for _, c := range cows {
		if err := os.Remove(c); err != nil {
			return err
		}
	}
	return nil
}

// migrationFixture is a fake pool "p" with a VM's volumes and an old
// driver's file beside each.
func migrationFixture(t *testing.T, base string) (state, dir string) {
	t.Helper()
	ctx := context.Background()
	state, dir = filepath.Join(base, "state"), filepath.Join(base, "pool")
	m, err := OpenManager(ctx, state, ManagerOptions{})
	require.NoError(t, err)
	defer m.Close()
	_, err = m.AddPool(ctx, "p", fakeDriverName, map[string]string{"dir_path": dir})
	require.NoError(t, err)
	for _, name := range []string{"private", "volatile"} {
		cfg := storage.VolumeConfig{Name: name, Pool: "p", VID: "appvms/work/" + name, Size: 4096, RW: true, SaveOnStop: name == "private"}
		_, err := m.CreateVolume(ctx, "work", cfg)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "appvms/work", name+".cow"), []byte("old"), 0o600))
	}
	return state, dir
}

func cows(t *testing.T, dir string) []string {
	t.Helper()
	c, err := filepath.Glob(filepath.Join(dir, "*", "*", "*.cow"))
	require.NoError(t, err)
	return c
}

// poolDriver opens the Manager in state and returns the driver of pool p,
// checking that its volumes are there and usable.
func poolDriver(t *testing.T, state string) string {
	t.Helper()
	ctx := context.Background()
	m, err := OpenManager(ctx, state, ManagerOptions{})
	require.NoError(t, err)
	defer func() { require.NoError(t, m.Close()) }()
	p, err := m.Pool("p")
	require.NoError(t, err)
	for _, name := range []string{"private", "volatile"} {
		v, err := m.Volume("work", name)
		require.NoError(t, err, "volume %s is registered", name)
		pv, err := p.Volume(v.Config().VID)
		require.NoError(t, err)
		assert.Same(t, v, pv, "volume %s belongs to the open pool", name)
	}
	require.NoError(t, m.StartVM(ctx, "work"))
	require.NoError(t, m.StopVM(ctx, "work"))
	return p.Driver()
}

func TestMigratePool(t *testing.T) {
	ctx := context.Background()
	state, dir := migrationFixture(t, t.TempDir())
	m, err := OpenManager(ctx, state, ManagerOptions{})
	require.NoError(t, err)
	defer m.Close()
	before := stateFile(t, state)

	// Refused, and nothing changes: unknown pool or driver, a parameter
	// that is not one, a running volume.
	assert.ErrorIs(t, m.MigratePool(ctx, "nosuch", targetDriverName, nil), storage.ErrNotFound)
	assert.ErrorIs(t, m.MigratePool(ctx, "p", "nosuch-driver", nil), storage.ErrNotFound)
	assert.ErrorIs(t, m.MigratePool(ctx, "p", targetDriverName, map[string]string{"driver": "x"}), storage.ErrInvalidConfig)
	require.NoError(t, m.StartVM(ctx, "work"))
	err = m.MigratePool(ctx, "p", targetDriverName, nil)
	assert.ErrorIs(t, err, storage.ErrRunning)
	assert.Contains(t, err.Error(), "volume private of VM work runs; stop the VM first")
	require.NoError(t, m.StopVM(ctx, "work"))
	// A failure after the old pool was closed reopens it.
	err = m.MigratePool(ctx, "p", targetDriverName, map[string]string{"fail_migrate": "yes"})
	require.ErrorContains(t, err, "injected migration failure")
	assert.Equal(t, before, stateFile(t, state), "refused migrations leave the state file alone")
	p, err := m.Pool("p")
	require.NoError(t, err)
	assert.Equal(t, fakeDriverName, p.Driver(), "the pool is open with its old driver again")
	require.NoError(t, m.StartVM(ctx, "work"), "and its volumes work")
	require.NoError(t, m.StopVM(ctx, "work"))
	assert.Len(t, cows(t, dir), 2)

	require.NoError(t, m.MigratePool(ctx, "p", targetDriverName, nil))
	p, err = m.Pool("p")
	require.NoError(t, err)
	assert.Equal(t, targetDriverName, p.Driver())
	assert.Empty(t, cows(t, dir), "the old driver's files are removed")
	assert.NotContains(t, stateFile(t, state), "migrating_from", "the migration is finished")
	assert.Contains(t, stateFile(t, state), `"driver": "`+targetDriverName+`"`)
	require.NoError(t, m.MigratePool(ctx, "p", targetDriverName, nil), "again: nothing to do")
	require.NoError(t, m.Close())
	assert.Equal(t, targetDriverName, poolDriver(t, state))
}

// TestMigratePoolKilled kills a real process (SIGKILL) at each step of a
// migration: the pool then opens with the old driver, its files all there,
// or with the new one, finished by that open; MigratePool completes it.
func TestMigratePoolKilled(t *testing.T) {
	for _, tc := range []struct {
		point, driver string
	}{
		{"migrate-converted", fakeDriverName},
		{"state-temp-written", fakeDriverName},
		{"state-renamed", targetDriverName},
		{"migrate-switched", targetDriverName},
	} {
		t.Run(tc.point, func(t *testing.T) {
			state, dir := migrationFixture(t, t.TempDir())
			killAt(t, killJob{State: state, Op: "migrate", Pool: "p", Point: tc.point})
			if tc.driver == targetDriverName {
				assert.Contains(t, stateFile(t, state), `"migrating_from": "`+fakeDriverName+`"`, "the switch notes the step left")
			}
			assert.Equal(t, tc.driver, poolDriver(t, state), "the pool opens with one driver or the other")
			if tc.driver == fakeDriverName {
				assert.Len(t, cows(t, dir), 2, "the old driver's files are all there")
			} else {
				assert.Empty(t, cows(t, dir), "the next open finished the migration")
				assert.NotContains(t, stateFile(t, state), "migrating_from")
			}
			m, err := OpenManager(context.Background(), state, ManagerOptions{})
			require.NoError(t, err)
			require.NoError(t, m.MigratePool(context.Background(), "p", targetDriverName, nil))
			require.NoError(t, m.Close())
			assert.Equal(t, targetDriverName, poolDriver(t, state))
			assert.Empty(t, cows(t, dir))
			b, err := os.ReadFile(filepath.Join(dir, "converted"))
			require.NoError(t, err)
			assert.Equal(t, "once", string(b), "converted once")
		})
	}
}

func stateFile(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	require.NoError(t, err)
	return strings.TrimSpace(string(b))
}
