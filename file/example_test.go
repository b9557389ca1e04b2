package file_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	_ "github.com/vmpool/vmpool/file" // registers the "file" driver
	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

// Example makes a file pool, imports data into a private volume and runs
// a volatile one. Starting an origin or a snapshot needs device-mapper
// (the VM gets /dev/mapper/origin-<dev:ino>); a volatile volume's VM gets
// its image.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "vmpool-file-example-")
	defer os.RemoveAll(dir)
	p, err := pool.Open(ctx, "file", storage.PoolConfig{Name: "varlibqubes", Params: map[string]string{"dir_path": filepath.Join(dir, "qubes")}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer p.Close()
	if err := p.Setup(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.Capabilities().MaxRevisions, "revision at most")

	private, _ := p.InitVolume(storage.VolumeConfig{VID: "appvms/work/private", Size: 2 << 30, RW: true, SaveOnStop: true})
	if err := private.Create(ctx); err != nil {
		fmt.Println(err)
		return
	}
	path, _ := private.ImportData(ctx, 1<<30)
	fmt.Println("write the data to", filepath.Base(path))
	if err := private.ImportDataEnd(ctx, true); err != nil {
		fmt.Println(err)
		return
	}
	size, _ := private.Size(ctx)
	fmt.Println("size", size>>20, "MiB")

	volatile, _ := p.InitVolume(storage.VolumeConfig{VID: "appvms/work/volatile", Size: 1 << 30, RW: true})
	_ = volatile.Create(ctx)
	if err := volatile.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("the VM gets", filepath.Base(volatile.BlockDevice().Path))
	_ = volatile.Stop(ctx)
	fmt.Println(private.Revert(ctx, ""))
	// Output:
	// 1 revision at most
	// write the data to private-import.img
	// size 1024 MiB
	// the VM gets volatile.img
	// pool varlibqubes: revert appvms/work/private: the file driver cannot revert (migrate the pool to file-reflink for revert): not supported by this driver
}
