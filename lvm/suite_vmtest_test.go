//go:build vmtest

package lvm_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
	"github.com/vmpool/vmpool/storage/storagetest"
)

// lvmCaps is what lvm_thin can do.
var lvmCaps = storage.Capabilities{MaxRevisions: -1, Revert: true, Outdated: true}

// TestSuiteLVM runs the conformance suite in the VM, each case on a volume
// group and thin pool of its own.
func TestSuiteLVM(t *testing.T) {
	requireVM(t)
	t.Log("running in the VM (VMTEST_IN_VM=1) on real LVM thin pools")
	storagetest.Run(t, storagetest.Config{
		NewPool: func(t *testing.T) storage.Pool {
			vg, thin := newVG(t, suiteVGSize)
			p := openPool(t, vg, thin, nil)
			require.NoError(t, p.Setup(t.Context()))
			return p
		},
		Reopen: func(t *testing.T, old storage.Pool) storage.Pool {
			c := old.Config()
			require.NoError(t, old.Close())
			return openPool(t, c["volume_group"], c["thin_pool"], nil)
		},
		PoolVID: func(p storage.Pool, vm string, template bool, volume string) string {
			return storage.LVMVID{VG: p.Config()["volume_group"], VM: vm, Volume: volume}.String()
		},
		Caps: lvmCaps,
	})
}
