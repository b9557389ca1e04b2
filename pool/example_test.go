package pool_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vmpool/vmpool/pool"
	_ "github.com/vmpool/vmpool/reflink" // registers the "file-reflink" driver
	"github.com/vmpool/vmpool/storage"
)

// startWork is the README's embedding snippet: a file-reflink pool in
// dir, one origin volume created and started as a VM's private disk.
func startWork(ctx context.Context, dir string) error {
	p, err := pool.Open(ctx, "file-reflink", storage.PoolConfig{
		Name: "varlibqubes",
		// setup_check=no accepts a filesystem without reflinks (slow copies).
		Params: map[string]string{"dir_path": dir, "revisions_to_keep": "2", "setup_check": "no"},
	})
	if err != nil {
		return err
	}
	defer p.Close() // waits for background work (pruning, the next precache)
	if err := p.Setup(ctx); err != nil {
		return err
	}
	private, err := p.InitVolume(storage.VolumeConfig{VID: "appvms/work/private", Size: 2 << 30, RW: true, SaveOnStop: true})
	if err != nil {
		return err
	}
	if err := private.Create(ctx); err != nil {
		return err
	}
	if err := storage.NewSet(private).Start(ctx); err != nil {
		return err
	}
	fmt.Println("the VM gets", filepath.Base(private.BlockDevice().Path)) // private-dirty.img
	return nil
}

// Example opens a pool directly, as the README shows: the caller keeps the
// volume configurations and hands them to InitVolume.
func Example() {
	dir, err := os.MkdirTemp("", "vmpool-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	if err := startWork(context.Background(), filepath.Join(dir, "pool")); err != nil {
		fmt.Println(err)
	}
	// Output: the VM gets private-dirty.img
}

// ExampleManager keeps a host's pools and its VMs' volumes in a state
// directory: a template, an AppVM with a snapshot of the template's root,
// a private volume and a volatile one, started and stopped; then the
// Manager is opened again and recovers after a crash as qubesd does.
func ExampleManager() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "vmpool-example-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	state := filepath.Join(dir, "state")

	m, err := pool.OpenManager(ctx, state, pool.ManagerOptions{})
	if err != nil {
		panic(err)
	}
	if _, err := m.AddPool(ctx, "varlibqubes", "file-reflink", map[string]string{"dir_path": filepath.Join(dir, "pool"), "setup_check": "no"}); err != nil {
		panic(err)
	}
	for vm, cfgs := range map[string][]storage.VolumeConfig{
		"fedora": {{Name: "root", Pool: "varlibqubes", VID: "vm-templates/fedora/root", Size: 10 << 30, RW: true, SaveOnStop: true}},
		"work": {
			{Name: "private", Pool: "varlibqubes", VID: "appvms/work/private", Size: 2 << 30, RW: true, SaveOnStop: true},
			{Name: "volatile", Pool: "varlibqubes", VID: "appvms/work/volatile", Size: 1 << 30, RW: true},
		},
	} {
		for _, cfg := range cfgs {
			if _, err := m.CreateVolume(ctx, vm, cfg); err != nil {
				panic(err)
			}
		}
	}
	root := storage.VolumeConfig{Name: "root", Pool: "varlibqubes", VID: "appvms/work/root", RW: true, SnapOnStart: true, Source: "vm-templates/fedora/root"}
	if _, err := m.CreateVolume(ctx, "work", root); err != nil {
		panic(err)
	}
	if err := m.StartVM(ctx, "work"); err != nil {
		panic(err)
	}
	if err := m.StopVM(ctx, "work"); err != nil {
		panic(err)
	}
	private, _ := m.Volume("work", "private")
	revs, _ := private.Revisions(ctx)
	fmt.Println("VMs:", m.VMs(), "revisions of work's private:", len(revs))

	// The process dies while work runs; after its restart, it stops the
	// storage of every VM that is not running.
	if err := m.StartVM(ctx, "work"); err != nil {
		panic(err)
	}
	m.Close()
	m, err = pool.OpenManager(ctx, state, pool.ManagerOptions{})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	if err := m.StopStorage(ctx, func(vm string) bool { return false }); err != nil {
		panic(err)
	}
	private, _ = m.Volume("work", "private")
	running, _ := private.IsRunning(ctx)
	revs, _ = private.Revisions(ctx)
	fmt.Println("running:", running, "revisions of work's private:", len(revs))
	// Output:
	// VMs: [fedora work] revisions of work's private: 1
	// running: false revisions of work's private: 1
}
