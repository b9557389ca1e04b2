package lvm_test

import (
	"context"
	"fmt"
	"log"

	_ "github.com/vmpool/vmpool/lvm"
	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/storage"
)

// Example opens Qubes' default pool, vm-pool in qubes_dom0, registers an
// AppVM's volumes and starts and stops them as one batch: one lvm process
// for the start, one or two for the stop. It needs root and the volume
// group, so it is compiled, not run, by go test.
func Example() {
	ctx := context.Background()
	p, err := pool.Open(ctx, "lvm_thin", storage.PoolConfig{Name: "vm-pool",
		Params: map[string]string{"volume_group": "qubes_dom0", "thin_pool": "vm-pool"}})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	if err := p.Setup(ctx); err != nil { // checks that the thin pool exists
		log.Fatal(err)
	}
	var vols []storage.Volume
	for _, c := range []storage.VolumeConfig{
		{VID: "qubes_dom0/vm-work-root", Size: 20 << 30, SnapOnStart: true, Source: "qubes_dom0/vm-debian-12-root", RW: true},
		{VID: "qubes_dom0/vm-work-private", Size: 2 << 30, SaveOnStop: true, RW: true},
		{VID: "qubes_dom0/vm-work-volatile", Size: 10 << 30, RW: true},
	} {
		v, err := p.InitVolume(c)
		if err != nil {
			log.Fatal(err)
		}
		vols = append(vols, v)
	}
	vm := storage.NewSet(vols...)
	if err := vm.Start(ctx); err != nil {
		log.Fatal(err)
	}
	for _, v := range vols {
		fmt.Println(v.BlockDevice().Path) // /dev/mapper/qubes_dom0-vm--work--root--snap, ...
	}
	if err := vm.Stop(ctx); err != nil { // commits private, keeping one revision
		log.Fatal(err)
	}
}
