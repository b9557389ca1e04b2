// Package storagetest is the conformance suite every vmpool storage driver
// runs: the behaviour of the storage contract (package storage) and of
// Qubes' storage layer, checked through the contract alone. It is modelled
// on containerd's snapshotter testsuite: one entry point, [Run], that runs
// dozens of named subtests, each on a fresh pool in a fresh directory (or
// volume group), in parallel.
//
// A driver's test file is a few lines that hand the suite a constructor on
// the right filesystem:
//
//	func TestSuiteBtrfs(t *testing.T) {
//		mnt := loopfs.Mount(t, loopfs.Btrfs, 512<<20)
//		storagetest.Run(t, storagetest.Config{
//			NewPool: func(t *testing.T) storage.Pool { ... a pool on a new directory under mnt, Setup done ... },
//			Reopen:  func(t *testing.T, old storage.Pool) storage.Pool { ... close old, open its directory again ... },
//			VID: func(vm string, template bool, volume string) string { ... },
//			Caps: storage.Capabilities{MaxRevisions: -1, Revert: true, ...},
//		})
//	}
//
// The suite never branches on a driver's name: what legitimately differs
// between drivers is in [Config] (the capabilities the pool must report,
// whether revert keeps the replaced state as a revision). It never looks at
// a driver's files either: data is checked through a running volume's
// device and through Export, state through the Volume methods. Tests of a
// driver's on-disk layout belong to the driver. A crash is simulated with
// Config.Reopen: the pool is closed with its volumes running and opened
// again, and the suite registers the volumes again as a caller would. If
// the pool implements storage.Flusher, the suite calls Flush before it
// measures usage; no other check depends on it.
//
// The subtests are grouped so that they can be matched with -run:
//
//	volatile/ snapshot/ origin/ origin_snapshot/   each kind of volume × each operation
//	qubes/        Qubes' integration tests 000–006 (qubes/tests/integ/storage.py)
//	revisions/    revisions_to_keep and pruning
//	revert/       revert to the newest, an older, an unknown or a bad revision
//	set/          storage.Set: start, stop, rollback of a failed start
//	bad_input/    malformed input is ErrInvalidConfig and changes nothing
//	concurrency/  parallel volumes, serialised operations on one volume
//	cancel/       a cancelled context changes nothing
//	usage/        sparse volumes, usage growth, pool usage
//	pool/         capabilities, reopening without discovery
//
// Volumes are small (8 MiB) and sparse, so the whole suite takes seconds
// on a loop-mounted filesystem.
package storagetest
