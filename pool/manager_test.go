package pool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/testenv"
	"github.com/vmpool/vmpool/storage"
)

func intp(n int) *int { return &n }

// openManager opens a Manager on dir and closes it when the test ends.
func openManager(t *testing.T, dir string) *Manager {
	t.Helper()
	m, err := OpenManager(context.Background(), dir, ManagerOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		if err := m.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
			t.Errorf("close manager: %v", err)
		}
	})
	return m
}

// newManager opens a Manager on a fresh directory with one fake pool "p"
// and returns it with the state directory.
func newManager(t *testing.T) (*Manager, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	m := openManager(t, dir)
	_, err := m.AddPool(context.Background(), "p", fakeDriverName, map[string]string{"dir_path": filepath.Join(t.TempDir(), "pool")})
	require.NoError(t, err)
	return m, dir
}

// The volumes of a template and an AppVM based on it.
var (
	tmplRoot = storage.VolumeConfig{Name: "root", Pool: "p", VID: "vm-templates/tmpl/root", RW: true, SaveOnStop: true, Size: 1 << 20}
	private  = storage.VolumeConfig{Name: "private", Pool: "p", VID: "appvms/work/private", RW: true, SaveOnStop: true, Size: 2 << 20, RevisionsToKeep: intp(3)}
	root     = storage.VolumeConfig{Name: "root", Pool: "p", VID: "appvms/work/root", RW: true, SnapOnStart: true, Source: "vm-templates/tmpl/root", Size: 1 << 20}
	volatile = storage.VolumeConfig{Name: "volatile", Pool: "p", VID: "appvms/work/volatile", RW: true, Size: 1 << 20}
)

// createVMs creates tmpl's and work's volumes.
func createVMs(t *testing.T, m *Manager) {
	t.Helper()
	ctx := context.Background()
	_, err := m.CreateVolume(ctx, "tmpl", tmplRoot)
	require.NoError(t, err)
	for _, cfg := range []storage.VolumeConfig{private, root, volatile} {
		_, err := m.CreateVolume(ctx, "work", cfg)
		require.NoError(t, err)
	}
}

func readStateFile(t *testing.T, dir string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, StateFile))
	require.NoError(t, err)
	return data
}

// configs returns the volume configs of every VM of m.
func configs(t *testing.T, m *Manager) map[string][]storage.VolumeConfig {
	t.Helper()
	all := make(map[string][]storage.VolumeConfig)
	for _, vm := range m.VMs() {
		set, err := m.VMVolumes(vm)
		require.NoError(t, err)
		for _, v := range set.Volumes() {
			all[vm] = append(all[vm], v.Config())
		}
	}
	return all
}

func TestManagerRoundTrip(t *testing.T) {
	m, dir := newManager(t)
	createVMs(t, m)
	before := configs(t, m)
	require.NoError(t, m.Close())

	m = openManager(t, dir)
	assert.Equal(t, before, configs(t, m), "the reopened Manager has the same volumes")
	assert.Equal(t, []string{"tmpl", "work"}, m.VMs())
	require.Len(t, m.Pools(), 1)
	p, err := m.Pool("p")
	require.NoError(t, err)
	assert.Equal(t, fakeDriverName, p.Driver())
	assert.Equal(t, 3, *before["work"][0].RevisionsToKeep, "explicit revisions_to_keep kept")
	assert.Equal(t, 1, *before["work"][1].RevisionsToKeep, "the pool's default is resolved and stored")
	v, err := p.Volume("appvms/work/root")
	require.NoError(t, err, "volumes are registered with their pool again")
	assert.Equal(t, "vm-templates/tmpl/root", v.Config().Source)
}

func TestManagerStateFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	m := openManager(t, dir)
	st, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	assert.NoFileExists(t, filepath.Join(dir, StateFile), "an empty state is not written")

	poolDir := filepath.Join(t.TempDir(), "pool")
	_, err = m.AddPool(context.Background(), "p", fakeDriverName, map[string]string{"dir_path": poolDir, "fail": "no"})
	require.NoError(t, err)
	_, err = m.CreateVolume(context.Background(), "work", private)
	require.NoError(t, err)

	fi, err := os.Stat(filepath.Join(dir, StateFile))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	var got map[string]any
	require.NoError(t, json.Unmarshal(readStateFile(t, dir), &got), "the state file is valid JSON")
	id, ok := got["id"].(string)
	assert.True(t, ok && len(id) == 32, "a random state ID: %v", got["id"])
	want := map[string]any{
		"version": 1.0,
		"id":      id,
		"pools": map[string]any{"p": map[string]any{
			"driver": fakeDriverName,
			// No name, no driver, no "fail": what Config reports, only.
			"params": map[string]any{"dir_path": poolDir, "revisions_to_keep": "1"},
		}},
		"vms": map[string]any{"work": map[string]any{"volumes": map[string]any{"private": map[string]any{
			"name": "private", "pool": "p", "vid": "appvms/work/private", "size": float64(2 << 20),
			"rw": true, "snap_on_start": false, "save_on_stop": true, "revisions_to_keep": 3.0,
		}}}},
	}
	assert.Equal(t, want, got)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file is left beside the state file")
}

// TestManagerLock: a second Manager of the same directory in this process
// is refused at once; one held by another process is waited for up to
// LockWait, with an error naming the holder, and had once it is free.
func TestManagerLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	first, err := OpenManager(context.Background(), dir, ManagerOptions{})
	require.NoError(t, err)
	start := time.Now()
	_, err = OpenManager(context.Background(), dir, ManagerOptions{})
	require.ErrorIs(t, err, storage.ErrInUse)
	assert.Contains(t, err.Error(), "by this process")
	assert.Less(t, time.Since(start), time.Second, "refused at once")
	require.NoError(t, first.Close())

	release := testenv.HoldLock(t, dir)
	_, err = OpenManager(context.Background(), dir, ManagerOptions{LockWait: 50 * time.Millisecond})
	require.ErrorIs(t, err, storage.ErrInUse)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Regexp(t, `locked by pid [0-9]+ \(flock\)`, err.Error())
	type result struct {
		m   *Manager
		err error
	}
	got := make(chan result, 1)
	go func() {
		m, err := OpenManager(context.Background(), dir, ManagerOptions{})
		got <- result{m, err}
	}()
	release()
	r := <-got
	require.NoError(t, r.err, "the waiting OpenManager gets the lock once the holder lets go")
	assert.NoError(t, r.m.Close())
}

func TestManagerBadStateFile(t *testing.T) {
	for what, tc := range map[string]struct {
		content string
		want    error
		msg     string
	}{
		"malformed JSON":   {`{"version": 1, "pools": `, storage.ErrInvalidConfig, "not valid JSON"},
		"not an object":    {`[1]`, storage.ErrInvalidConfig, "does not hold a JSON object"},
		"an empty list":    {"[]\n", storage.ErrInvalidConfig, "does not hold a JSON object"},
		"pools a list":     {`{"version": 1, "pools": []}`, storage.ErrInvalidConfig, "pools holds a JSON array where an object belongs"},
		"size a string":    {`{"version": 1, "vms": {"w": {"volumes": {"private": {"size": "big"}}}}}`, storage.ErrInvalidConfig, "vms.volumes.size holds a JSON string where a number belongs"},
		"empty":            {"", storage.ErrInvalidConfig, "does not hold a JSON object"},
		"no version":       {`{"pools": {}}`, storage.ErrInvalidConfig, "no version"},
		"version a string": {`{"version": "1"}`, storage.ErrInvalidConfig, "version holds a JSON string where the number 1 belongs"},
		"newer version":    {`{"version": 2}`, storage.ErrInvalidConfig, "version 2"},
		"unknown field":    {`{"version": 1, "default_pool": "p"}`, storage.ErrInvalidConfig, "unknown field"},
		"bad pool name":    {`{"version": 1, "pools": {"a/b": {"driver": "` + fakeDriverName + `", "params": {"dir_path": "/x"}}}}`, storage.ErrInvalidConfig, "pool name"},
		"bad VM name":      {`{"version": 1, "vms": {"1vm": {"volumes": {}}}}`, storage.ErrInvalidConfig, "VM name"},
		"missing pool":     {`{"version": 1, "vms": {"work": {"volumes": {"private": {"name": "private", "pool": "q", "vid": "appvms/work/private"}}}}}`, storage.ErrNotFound, `pool "q"`},
		"misnamed volume":  {`{"version": 1, "vms": {"work": {"volumes": {"root": {"name": "private", "pool": "q", "vid": "appvms/work/private"}}}}}`, storage.ErrInvalidConfig, "stored under the name"},
	} {
		t.Run(what, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, StateFile)
			require.NoError(t, os.WriteFile(path, []byte(tc.content), 0o600))
			_, err := OpenManager(context.Background(), dir, ManagerOptions{})
			require.ErrorIs(t, err, tc.want)
			assert.Contains(t, err.Error(), tc.msg)
			assert.Equal(t, tc.content, string(readStateFile(t, dir)), "the state file is left alone")

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err = OpenManager(ctx, dir, ManagerOptions{})
			assert.ErrorIs(t, err, tc.want, "a failed open released the lock")
		})
	}
}

// assertUnchanged checks that the state file still holds before.
func assertUnchanged(t *testing.T, dir string, before []byte) {
	t.Helper()
	assert.Equal(t, string(before), string(readStateFile(t, dir)), "the state file is unchanged")
}

func TestManagerAddPoolErrors(t *testing.T) {
	m, dir := newManager(t)
	before := readStateFile(t, dir)
	ctx := context.Background()
	good := map[string]string{"dir_path": filepath.Join(t.TempDir(), "q")}
	for what, tc := range map[string]struct {
		name, driver string
		params       map[string]string
		want         error
	}{
		"empty name":       {"", fakeDriverName, good, storage.ErrInvalidConfig},
		"name with slash":  {"a/b", fakeDriverName, good, storage.ErrInvalidConfig},
		"name with space":  {"a b", fakeDriverName, good, storage.ErrInvalidConfig},
		"taken":            {"p", fakeDriverName, good, storage.ErrExists},
		"unknown driver":   {"q", "nope", good, storage.ErrNotFound},
		"name parameter":   {"q", fakeDriverName, map[string]string{"dir_path": "/x", "name": "q"}, storage.ErrInvalidConfig},
		"unknown param":    {"q", fakeDriverName, map[string]string{"dir_path": "/x", "colour": "red"}, storage.ErrInvalidConfig},
		"missing required": {"q", fakeDriverName, map[string]string{}, storage.ErrInvalidConfig},
		"setup fails":      {"q", fakeDriverName, map[string]string{"dir_path": "/x", "fail": "setup"}, storage.ErrReflinkUnsupported},
	} {
		_, err := m.AddPool(ctx, tc.name, tc.driver, tc.params)
		assert.ErrorIs(t, err, tc.want, what)
	}
	assertUnchanged(t, dir, before)
	assert.Len(t, m.Pools(), 1)
	_, err := m.Pool("q")
	assert.ErrorIs(t, err, storage.ErrNotFound)
}

func TestManagerAddPoolSetupFailureClosesPool(t *testing.T) {
	m, _ := newManager(t)
	var opened []*fakePool
	// The pool AddPool opened is not returned on failure; find it through
	// a second registration of the fake driver that records its pools.
	withDrivers(t)
	Register("recording", recordingDriver{&opened})
	_, err := m.AddPool(context.Background(), "q", "recording", map[string]string{"dir_path": "/x", "fail": "setup"})
	require.ErrorIs(t, err, storage.ErrReflinkUnsupported)
	require.Len(t, opened, 1)
	assert.True(t, opened[0].closed, "a pool whose setup failed is closed")
}

type recordingDriver struct{ opened *[]*fakePool }

func (d recordingDriver) Parameters() []storage.Parameter { return fakeDriver{}.Parameters() }
func (d recordingDriver) Open(ctx context.Context, cfg storage.PoolConfig) (storage.Pool, error) {
	p, err := fakeDriver{}.Open(ctx, cfg)
	if err == nil {
		*d.opened = append(*d.opened, p.(*fakePool))
	}
	return p, err
}

func TestManagerRemovePool(t *testing.T) {
	m, dir := newManager(t)
	ctx := context.Background()
	createVMs(t, m)
	before := readStateFile(t, dir)

	assert.ErrorIs(t, m.RemovePool(ctx, "nope"), storage.ErrNotFound)
	err := m.RemovePool(ctx, "p")
	require.ErrorIs(t, err, storage.ErrInUse)
	assert.Contains(t, err.Error(), "storage pool is in use by tmpl:root, work:private, work:root, work:volatile")
	assertUnchanged(t, dir, before)

	for _, name := range []string{"private", "root", "volatile"} {
		require.NoError(t, m.RemoveVolume(ctx, "work", name))
	}
	require.NoError(t, m.RemoveVolume(ctx, "tmpl", "root"))
	p, err := m.Pool("p")
	require.NoError(t, err)
	require.NoError(t, m.RemovePool(ctx, "p"))
	assert.True(t, p.(*fakePool).destroyed)
	assert.True(t, p.(*fakePool).closed)
	assert.Empty(t, m.Pools())
	var st map[string]any
	require.NoError(t, json.Unmarshal(readStateFile(t, dir), &st))
	delete(st, "id")
	assert.Equal(t, map[string]any{"version": 1.0, "pools": map[string]any{}, "vms": map[string]any{}}, st)
}

// TestManagerRemovePoolForce: a forced removal of a pool that holds
// volumes forgets the pool and those volumes' configurations, refuses
// while one of them runs, calls no Destroy and leaves every file on disk;
// a VM keeps its volumes in other pools.
func TestManagerRemovePoolForce(t *testing.T) {
	m, dir := newManager(t)
	ctx := context.Background()
	createVMs(t, m)
	_, err := m.AddPool(ctx, "q", fakeDriverName, map[string]string{"dir_path": filepath.Join(t.TempDir(), "q")})
	require.NoError(t, err)
	_, err = m.CreateVolume(ctx, "work", storage.VolumeConfig{Name: "data", Pool: "q", VID: "appvms/work/data", RW: true, SaveOnStop: true, Size: 1 << 20})
	require.NoError(t, err)
	p, err := m.Pool("p")
	require.NoError(t, err)
	poolDir := p.Config()["dir_path"]
	before := readStateFile(t, dir)

	err = m.RemovePoolWith(ctx, "p", RemovePoolOptions{})
	require.ErrorIs(t, err, storage.ErrInUse, "without Force, as RemovePool")
	assert.Contains(t, err.Error(), "storage pool is in use by tmpl:root, work:private, work:root, work:volatile; remove those volumes first, or force")
	assertUnchanged(t, dir, before)

	require.NoError(t, m.StartVM(ctx, "work"))
	err = m.RemovePoolWith(ctx, "p", RemovePoolOptions{Force: true})
	require.ErrorIs(t, err, storage.ErrRunning)
	assert.Contains(t, err.Error(), "remove pool p: volumes work:private, work:root, work:volatile run; stop their VMs first")
	assertUnchanged(t, dir, before)
	require.NoError(t, m.StopVM(ctx, "work"))

	tree := fileTree(t, poolDir)
	require.Contains(t, tree, "vm-templates/tmpl/root.img")
	require.Contains(t, tree, "appvms/work/private.img")
	require.NoError(t, m.RemovePoolWith(ctx, "p", RemovePoolOptions{Force: true}))
	assert.Equal(t, tree, fileTree(t, poolDir), "no file is deleted or changed")
	assert.False(t, p.(*fakePool).destroyed, "a forced removal does not call Destroy")
	assert.True(t, p.(*fakePool).closed)
	_, err = m.Pool("p")
	assert.ErrorIs(t, err, storage.ErrNotFound)
	assertForgotten := func(m *Manager) {
		t.Helper()
		require.Len(t, m.Pools(), 1)
		assert.Equal(t, "q", m.Pools()[0].Name())
		assert.Equal(t, []string{"work"}, m.VMs(), "tmpl had volumes in p only and is forgotten")
		all := configs(t, m)
		require.Len(t, all["work"], 1)
		assert.Equal(t, "data", all["work"][0].Name, "work keeps its volume in q")
	}
	assertForgotten(m)
	var st state
	require.NoError(t, json.Unmarshal(readStateFile(t, dir), &st))
	assert.Equal(t, []string{"q"}, slices.Sorted(maps.Keys(st.Pools)))
	assert.Equal(t, []string{"data"}, slices.Sorted(maps.Keys(st.VMs["work"].Volumes)))
	assert.NotContains(t, st.VMs, "tmpl")

	require.NoError(t, m.Close())
	assertForgotten(openManager(t, dir))
	assert.Equal(t, tree, fileTree(t, poolDir))
}

// TestManagerRemovePoolNotSaved: a removal whose state cannot be saved
// changes nothing: the pool stays listed and open, its volumes registered.
func TestManagerRemovePoolNotSaved(t *testing.T) {
	m, dir := newManager(t)
	ctx := context.Background()
	createVMs(t, m)
	q, err := m.AddPool(ctx, "q", fakeDriverName, map[string]string{"dir_path": filepath.Join(t.TempDir(), "q")})
	require.NoError(t, err)
	before := readStateFile(t, dir)
	wantConfigs := configs(t, m)

	m.dir = filepath.Join(t.TempDir(), "missing") // the state file cannot be written there
	for name, opts := range map[string]RemovePoolOptions{"p": {Force: true}, "q": {}} {
		err := m.RemovePoolWith(ctx, name, opts)
		require.Error(t, err, name)
		assert.NotErrorIs(t, err, ErrNotSaved, "%s: nothing was done", name)
		assert.Contains(t, err.Error(), "remove pool "+name+": save state: ")
	}
	m.dir = dir
	assertUnchanged(t, dir, before)
	require.Len(t, m.Pools(), 2)
	assert.Equal(t, wantConfigs, configs(t, m))
	p, err := m.Pool("p")
	require.NoError(t, err)
	assert.False(t, p.(*fakePool).closed)
	assert.False(t, q.(*fakePool).closed)
	_, err = p.Volume(private.VID)
	assert.NoError(t, err, "the volumes stay registered with their pool")

	require.NoError(t, m.RemovePoolWith(ctx, "p", RemovePoolOptions{Force: true}))
	require.NoError(t, m.RemovePool(ctx, "q"))
	assert.Empty(t, m.Pools())
	assert.Empty(t, m.VMs())
}

// fileTree returns the size of every file under dir by its path relative
// to dir.
func fileTree(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	tree := make(map[string]int64)
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		tree[rel] = info.Size()
		return err
	}))
	return tree
}

func TestManagerCreateVolumeErrors(t *testing.T) {
	m, dir := newManager(t)
	ctx := context.Background()
	createVMs(t, m)
	before := readStateFile(t, dir)
	with := func(f func(*storage.VolumeConfig)) storage.VolumeConfig {
		cfg := storage.VolumeConfig{Name: "data", Pool: "p", VID: "appvms/work/data", RW: true, SaveOnStop: true, Size: 1 << 20}
		f(&cfg)
		return cfg
	}
	for what, tc := range map[string]struct {
		vm   string
		cfg  storage.VolumeConfig
		want error
	}{
		"bad VM name":      {"1work", with(func(*storage.VolumeConfig) {}), storage.ErrInvalidConfig},
		"reserved VM name": {"dom0-dm", with(func(*storage.VolumeConfig) {}), storage.ErrInvalidConfig},
		"bad volume name":  {"work", with(func(c *storage.VolumeConfig) { c.Name = "../x" }), storage.ErrInvalidConfig},
		"negative size":    {"work", with(func(c *storage.VolumeConfig) { c.Size = -1 }), storage.ErrInvalidConfig},
		"no source":        {"work", with(func(c *storage.VolumeConfig) { c.SnapOnStart = true }), storage.ErrInvalidConfig},
		"unknown pool":     {"work", with(func(c *storage.VolumeConfig) { c.Pool = "q" }), storage.ErrNotFound},
		"no pool":          {"work", with(func(c *storage.VolumeConfig) { c.Pool = "" }), storage.ErrInvalidConfig},
		"name taken":       {"work", with(func(c *storage.VolumeConfig) { c.Name = "private" }), storage.ErrExists},
		"vid taken":        {"other", with(func(c *storage.VolumeConfig) { c.VID = private.VID }), storage.ErrExists},
		"missing source": {"work", with(func(c *storage.VolumeConfig) {
			c.SnapOnStart, c.Source = true, "vm-templates/nope/root"
		}), storage.ErrNotFound},
		"driver refuses": {"work", with(func(c *storage.VolumeConfig) { c.VID = "" }), storage.ErrInvalidConfig},
	} {
		_, err := m.CreateVolume(ctx, tc.vm, tc.cfg)
		assert.ErrorIs(t, err, tc.want, what)
	}
	assertUnchanged(t, dir, before)
	assert.Equal(t, []string{"tmpl", "work"}, m.VMs())
	_, err := m.Volume("work", "private")
	assert.NoError(t, err, "the volume whose name or vid was reused is still there")
}

func TestManagerCreateVolumeUndo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	m := openManager(t, dir)
	ctx := context.Background()
	poolDir := filepath.Join(t.TempDir(), "pool")
	p, err := m.AddPool(ctx, "p", fakeDriverName, map[string]string{"dir_path": poolDir, "fail": "create"})
	require.NoError(t, err)
	before := readStateFile(t, dir)

	_, err = m.CreateVolume(ctx, "work", private)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "create volume private of VM work: fake create failed")
	assertUnchanged(t, dir, before)
	assert.NoFileExists(t, filepath.Join(poolDir, "appvms/work/private.img"), "a failed create leaves no image")
	assert.Empty(t, p.Volumes(), "and forgotten by its pool")
	assert.Empty(t, m.VMs())
}

func TestManagerRemoveVolume(t *testing.T) {
	m, dir := newManager(t)
	ctx := context.Background()
	createVMs(t, m)
	before := readStateFile(t, dir)

	assert.ErrorIs(t, m.RemoveVolume(ctx, "nope", "root"), storage.ErrNotFound)
	assert.ErrorIs(t, m.RemoveVolume(ctx, "work", "nope"), storage.ErrNotFound)
	err := m.RemoveVolume(ctx, "tmpl", "root")
	require.ErrorIs(t, err, storage.ErrInUse)
	assert.Contains(t, err.Error(), "source of volume root of VM work")
	require.NoError(t, m.StartVM(ctx, "work"))
	assert.ErrorIs(t, m.RemoveVolume(ctx, "work", "private"), storage.ErrRunning)
	assertUnchanged(t, dir, before)

	require.NoError(t, m.StopVM(ctx, "work"))
	for _, name := range []string{"private", "root", "volatile"} {
		require.NoError(t, m.RemoveVolume(ctx, "work", name))
	}
	assert.Equal(t, []string{"tmpl"}, m.VMs(), "a VM without volumes is forgotten")
	_, err = m.VMVolumes("work")
	assert.ErrorIs(t, err, storage.ErrNotFound)
	var st state
	require.NoError(t, json.Unmarshal(readStateFile(t, dir), &st))
	assert.NotContains(t, st.VMs, "work")
	require.NoError(t, m.RemoveVolume(ctx, "tmpl", "root"), "a source no longer used can go")
}

func TestManagerStartStopVM(t *testing.T) {
	m, _ := newManager(t)
	ctx := context.Background()
	createVMs(t, m)
	running := func() []bool {
		set, err := m.VMVolumes("work")
		require.NoError(t, err)
		var r []bool
		for _, v := range set.Volumes() {
			ok, err := v.IsRunning(ctx)
			require.NoError(t, err)
			r = append(r, ok)
		}
		return r
	}
	require.NoError(t, m.StartVM(ctx, "work"))
	assert.Equal(t, []bool{true, true, true}, running())
	require.NoError(t, m.StopVM(ctx, "work"))
	assert.Equal(t, []bool{false, false, false}, running())
	require.NoError(t, m.StopVM(ctx, "work"), "stop is idempotent")
	assert.ErrorIs(t, m.StartVM(ctx, "nope"), storage.ErrNotFound)
	assert.ErrorIs(t, m.StopVM(ctx, "nope"), storage.ErrNotFound)

	set, err := m.VMVolumes("work")
	require.NoError(t, err)
	var names []string
	for _, v := range set.Volumes() {
		names = append(names, v.Config().Name)
	}
	assert.Equal(t, []string{"private", "root", "volatile"}, names, "sorted by name")
}

func TestManagerResizeSaves(t *testing.T) {
	m, dir := newManager(t)
	ctx := context.Background()
	createVMs(t, m)
	before := readStateFile(t, dir)
	assert.ErrorIs(t, m.ResizeVolume(ctx, "work", "private", 1<<20, storage.ResizeOptions{}), storage.ErrShrink)
	assert.ErrorIs(t, m.ResizeVolume(ctx, "work", "nope", 4<<20, storage.ResizeOptions{}), storage.ErrNotFound)
	assertUnchanged(t, dir, before)

	require.NoError(t, m.ResizeVolume(ctx, "work", "private", 4<<20, storage.ResizeOptions{}))
	var st state
	require.NoError(t, json.Unmarshal(readStateFile(t, dir), &st))
	assert.EqualValues(t, 4<<20, st.VMs["work"].Volumes["private"].Size)
	require.NoError(t, m.ResizeVolume(ctx, "work", "private", 1<<20, storage.ResizeOptions{Force: true}))

	// A caller that resizes through the Volume saves explicitly.
	v, err := m.Volume("work", "volatile")
	require.NoError(t, err)
	require.NoError(t, v.Resize(ctx, 8<<20, storage.ResizeOptions{}))
	require.NoError(t, m.Save(ctx))
	require.NoError(t, m.Close())
	m = openManager(t, dir)
	v, err = m.Volume("work", "volatile")
	require.NoError(t, err)
	assert.EqualValues(t, 8<<20, v.Config().Size)
	v, err = m.Volume("work", "private")
	require.NoError(t, err)
	assert.EqualValues(t, 1<<20, v.Config().Size)
}

func TestManagerRevert(t *testing.T) {
	m, dir := newManager(t)
	ctx := context.Background()
	createVMs(t, m)
	before := readStateFile(t, dir)
	assert.ErrorIs(t, m.RevertVolume(ctx, "work", "private", "../1"), storage.ErrInvalidConfig)
	assert.ErrorIs(t, m.RevertVolume(ctx, "work", "private", "7"), storage.ErrNotFound)
	require.NoError(t, m.StartVM(ctx, "work"))
	assert.ErrorIs(t, m.RevertVolume(ctx, "work", "private", ""), storage.ErrDirty)
	assertUnchanged(t, dir, before)
}

func TestManagerImportData(t *testing.T) {
	m, dir := newManager(t)
	ctx := context.Background()
	createVMs(t, m)
	img := filepath.Join(m.Pools()[0].Config()["dir_path"], "appvms/work/private.img")

	// Data, a run of zeros, data, and a short tail.
	data := bytes.Repeat([]byte("vmpool!\n"), importBlock/8)
	data = append(data, make([]byte, 3*importBlock)...)
	data = append(data, bytes.Repeat([]byte{0xaa}, importBlock+100)...)
	size := int64(len(data))

	var mu sync.Mutex
	var reports []int64
	pctx := storage.WithProgress(ctx, func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		assert.Equal(t, size, total)
		reports = append(reports, done)
	})
	require.NoError(t, m.ImportData(pctx, "work", "private", bytes.NewReader(data), size))
	got, err := os.ReadFile(img)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got), "the image holds the imported data")
	fi, err := os.Stat(img)
	require.NoError(t, err)
	allocated := fi.Sys().(*syscall.Stat_t).Blocks * 512
	assert.Less(t, allocated, size-2*importBlock, "the zero blocks stay holes")
	require.NotEmpty(t, reports)
	assert.Equal(t, size, reports[len(reports)-1], "progress reaches the size")
	var st state
	require.NoError(t, json.Unmarshal(readStateFile(t, dir), &st))
	assert.Equal(t, size, st.VMs["work"].Volumes["private"].Size, "the new size is saved")

	before := readStateFile(t, dir)
	for what, tc := range map[string]struct {
		r    io.Reader
		size int64
		want string
	}{
		"short":    {bytes.NewReader(data[:100]), size, "not enough data (copied 100 bytes, expected " + itoa(size) + " bytes)"},
		"long":     {bytes.NewReader(append(data, 1)), size, "too much data (expected " + itoa(size) + " bytes)"},
		"negative": {bytes.NewReader(nil), -1, "negative size"},
		"failing":  {io.MultiReader(bytes.NewReader(data[:10]), errReader{}), size, "read import data: boom"},
	} {
		err := m.ImportData(ctx, "work", "private", tc.r, tc.size)
		require.Error(t, err, what)
		assert.Contains(t, err.Error(), tc.want, what)
	}
	got, err = os.ReadFile(img)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got), "a failed import commits nothing")
	assert.NoFileExists(t, filepath.Join(filepath.Dir(img), "private-import.img"))
	assertUnchanged(t, dir, before)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	assert.ErrorIs(t, m.ImportData(cctx, "work", "private", bytes.NewReader(data), size), context.Canceled)

	require.NoError(t, m.StartVM(ctx, "work"))
	assert.ErrorIs(t, m.ImportData(ctx, "work", "private", bytes.NewReader(data), size), storage.ErrRunning)
	assertUnchanged(t, dir, before)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("boom") }

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestManagerClose(t *testing.T) {
	m, _ := newManager(t)
	ctx := context.Background()
	createVMs(t, m)
	p, err := m.Pool("p")
	require.NoError(t, err)
	require.NoError(t, m.Close())
	assert.True(t, p.(*fakePool).closed, "Close closes the pools")

	assert.ErrorIs(t, m.Close(), storage.ErrClosed)
	assert.ErrorIs(t, m.Save(ctx), storage.ErrClosed)
	_, err = m.AddPool(ctx, "q", fakeDriverName, map[string]string{"dir_path": "/x"})
	assert.ErrorIs(t, err, storage.ErrClosed)
	assert.ErrorIs(t, m.RemovePool(ctx, "p"), storage.ErrClosed)
	_, err = m.Pool("p")
	assert.ErrorIs(t, err, storage.ErrClosed)
	assert.Empty(t, m.Pools())
	assert.Empty(t, m.VMs())
	_, err = m.CreateVolume(ctx, "work", volatile)
	assert.ErrorIs(t, err, storage.ErrClosed)
	assert.ErrorIs(t, m.RemoveVolume(ctx, "work", "private"), storage.ErrClosed)
	_, err = m.Volume("work", "private")
	assert.ErrorIs(t, err, storage.ErrClosed)
	_, err = m.VMVolumes("work")
	assert.ErrorIs(t, err, storage.ErrClosed)
	assert.ErrorIs(t, m.StartVM(ctx, "work"), storage.ErrClosed)
	assert.ErrorIs(t, m.StopVM(ctx, "work"), storage.ErrClosed)
	assert.ErrorIs(t, m.ResizeVolume(ctx, "work", "private", 1, storage.ResizeOptions{}), storage.ErrClosed)
	assert.ErrorIs(t, m.RevertVolume(ctx, "work", "private", ""), storage.ErrClosed)
	assert.ErrorIs(t, m.ImportData(ctx, "work", "private", bytes.NewReader(nil), 0), storage.ErrClosed)
}

func TestManagerConcurrentVMs(t *testing.T) {
	m, dir := newManager(t)
	ctx := context.Background()
	vms := []string{"a", "b", "c", "d"}
	for _, vm := range vms {
		_, err := m.CreateVolume(ctx, vm, storage.VolumeConfig{Name: "private", Pool: "p", VID: "appvms/" + vm + "/private", RW: true, SaveOnStop: true, Size: 1 << 20})
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	for i, vm := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, m.StartVM(ctx, vm))
			assert.NoError(t, m.ResizeVolume(ctx, vm, "private", int64(i+2)<<20, storage.ResizeOptions{}))
			assert.NoError(t, m.StopVM(ctx, vm))
		}()
	}
	wg.Wait()
	var st state
	require.NoError(t, json.Unmarshal(readStateFile(t, dir), &st))
	for i, vm := range vms {
		assert.EqualValues(t, int64(i+2)<<20, st.VMs[vm].Volumes["private"].Size, "the last save has every resize")
	}
}

// TestManagerReconfigureUndo: when the state cannot be saved, a volume
// change is undone exactly: an ephemeral flag that was unset is unset
// again, not set to the value the pool's default gave.
func TestManagerReconfigureUndo(t *testing.T) {
	m, dir := newManager(t)
	ctx := context.Background()
	createVMs(t, m)
	v, err := m.Volume("work", "volatile")
	require.NoError(t, err)
	before := v.Config()
	require.Nil(t, before.Ephemeral)
	m.dir = filepath.Join(t.TempDir(), "missing") // the state file cannot be written there
	yes, keep := true, 5
	err = m.ReconfigureVolume(ctx, "work", "volatile", storage.VolumeChange{Ephemeral: &yes, RevisionsToKeep: &keep})
	m.dir = dir
	require.Error(t, err)
	assert.Equal(t, before, v.Config(), "the change is undone exactly")
}
