// Package storage is the contract between the users of vmpool and its
// drivers: what a pool and a volume are, what each operation promises, and
// the errors it reports. It imports nothing of vmpool, as
// database/sql/driver imports nothing of database/sql.
//
// # Terms
//
// A pool is a named place where volumes live: a directory tree for the
// file and file-reflink drivers, an LVM thin pool for lvm_thin. A driver
// (see [Driver]) makes pools from a small set of string parameters.
//
// A volume is one disk of one VM: root, private, volatile or kernel. It is
// identified within its pool by its vid (for example
// "appvms/work/private"). A volume's behaviour is fixed by two flags, as in
// Qubes:
//
//	snap_on_start save_on_stop  kind
//	false         false         volatile: empty at each start, discarded at stop
//	true          false         snapshot: a throw-away copy of its source's
//	                            last committed state (AppVM root)
//	false         true          origin: keeps its data; each stop commits it
//	                            (private volumes, template roots)
//	true          true          snapshot-then-commit: starts from its source,
//	                            commits at stop (kept as a revision until the
//	                            next start replaces it); drivers may refuse it
//
// The source of a snapshot volume is another volume of the same pool;
// copying between pools is what [Volume.ImportVolume] is for.
//
// A volume is running between Start and Stop. While it runs, its writable
// image (the dirty image) receives the VM's writes; the committed image
// (the clean image) is what the volume held at its last commit and is never
// changed in place. "Running" is a fact on disk — the dirty image exists —
// so a crash between Start and Stop leaves a volume that is still running.
//
// A volume is dirty when it is save_on_stop and running: it holds data
// that Stop has not committed yet (Qubes' is_dirty). Start resumes a dirty
// volume: its uncommitted data is kept for the VM. Start never resumes a
// snapshot or volatile volume: a second start, or the first start after a
// crash, gives a snapshot a fresh copy of its source and a volatile volume
// a fresh empty image, as in Qubes. Only Revert refuses a dirty volume
// (ErrDirty); resizing a running volume is allowed, as in Qubes.
//
// After its own restart, a caller stops the storage of every VM it knows
// not to run (Qubes' stop_storage when qubesd starts): an origin commits
// what it holds and snapshot and volatile images are discarded.
// pool.Manager.StopStorage does this.
//
// A commit makes the dirty image the new clean image. Before it does, the
// old clean image is kept as a revision, unless revisions_to_keep is 0;
// revisions beyond revisions_to_keep are then pruned, oldest first. A
// revision has an id (a decimal number for the file drivers) and the time
// its data was last modified. revisions_to_keep = -1 disables snapshots of
// an origin volume altogether: it runs on its committed image directly and
// keeps no revisions.
//
// A snapshot volume is outdated when its source has committed (or been
// reverted, resized or imported) since the snapshot started: the VM sees
// stale data until it restarts.
//
// # Rules every driver keeps
//
// Every operation that touches disk takes a [context.Context] first and
// returns an error; errors wrap the sentinel values of this package so
// callers test them with [errors.Is], and carry the pool, vid and operation
// in an [*Error]. Bad input is refused before anything changes on disk. Stop
// is idempotent. Operations on one volume are serialised; different volumes
// proceed in parallel. A pool holds an advisory lock on its location so a
// second process cannot corrupt it, and records its owner there
// ([PoolConfig.Owner]) so that a second keeper cannot take it over by
// accident. Create never replaces a save_on_stop volume's data (ErrExists;
// Qubes' create deletes it). A driver that works with files never follows
// a symlink inside its pool (ErrUnsafePath).
//
// A pool does not discover volumes from disk, as in Qubes: the caller keeps
// the volume configurations (see [VolumeConfig]) and hands them to
// [Pool.InitVolume] after opening the pool; the caller also writes back what
// Resize, the imports and Reconfigure change (the size, the configuration).
// Where a caller's saved size is stale, the image's size wins at
// InitVolume.
package storage
