// Package file is the "file" driver: Qubes' original file pool
// (qubes/storage/file.py), VM images as sparse files with device-mapper
// snapshots over loop devices. It writes the same tree as Qubes' file
// driver, so either can open a pool the other wrote:
//
//	DIR/appvms/VM/private.img             the image: an origin's VM writes here
//	DIR/appvms/VM/private-cow.img         the dm-snapshot exception store of the run (old chunks)
//	DIR/appvms/VM/private-cow.img.old     the previous run's cow: the one revision, id "old"
//	DIR/appvms/VM/private-import.img      import in progress
//	DIR/appvms/VM/root-cow.img            a snapshot volume's own cow (it runs on its source's image)
//	DIR/appvms/VM/volatile.img            a volatile volume's image, made anew at each start
//	DIR/vm-templates/TPL/root.img ...
//
// Import it for its side effect of registering the driver:
//
//	import _ "github.com/vmpool/vmpool/file"
//
// # Parameters
//
// In the order the Admin API lists them: revisions_to_keep (default 1;
// -1, 0 or 1: more is storage.ErrUnsupported, as Qubes' NotImplementedError
// "FilePool supports maximum 1 volume revision to keep"), dir_path
// (required; the pool's directory, whose parent must exist) and
// ephemeral_volatile (default False; True/1/on or False/0/off/empty,
// case-sensitive, as Qubes parses it). There is no setup_check. Anything
// else is storage.ErrInvalidConfig.
//
// # Devices
//
// As Qubes' create-snapshot and destroy-snapshot scripts do, but made by
// the driver itself (losetup, dmsetup and blockdev; no scripts, no sudo):
//
//	origin (save_on_stop)    loop(img), loop(cow)
//	                         snapshot-<img>-<cow>: "0 N snapshot loop(img) loop(cow) P 256"
//	                         origin-<img>:         "0 N snapshot-origin loop(img)"   ← the VM's device
//	snapshot (snap_on_start) snapshot-<img>-<srccow> as above (shared with a running source)
//	                         snapshot-<img>-<srccow>-<cow>: "0 N snapshot /dev/mapper/snapshot-<img>-<srccow> loop(cow) P 256"
//	volatile, and an origin with revisions_to_keep -1: the VM gets the image itself
//
// Each <x> is the hexadecimal device number and decimal inode number of
// the file ("%x:%d", stat --printf=%D:%i), BlockDevice().Path the
// /dev/mapper path and Script empty. An origin's writes land in its image
// and the old chunks in its cow, so a snapshot of a running origin sees
// the origin's state at its start: the committed state. Loop devices are
// found with --nooverlap, so that an origin and the snapshots of its
// image share one block device. A stop removes the device and what it
// alone used, as destroy-snapshot: an origin's unused exception stores
// (one still used by a running snapshot keeps the origin, as in Qubes),
// a snapshot volume's device and its source's exception store when no
// other snapshot uses it and the source's origin is gone, and the loop
// devices. Resizing a running origin truncates its image, tells its loop
// devices (losetup --set-capacity) and loads the origin's table with the
// new length (dmsetup load, resume), as file.py does.
//
// The device-mapper work is behind a small interface (blockLayer): the
// host tests, which have no device-mapper, use an emulation that gives a
// VM's view of dm-snapshot and leaves in the cows what the kernel leaves
// there for is_dirty (see emulation_test.go); the tests built with the
// vmtest tag run the real one in a VM with dm-snapshot.
//
// # How it follows Qubes
//
// Start, stop, commit, is_dirty, usage, size, verify, export, imports and
// resize are file.py's: a stop commits an origin by keeping its cow as
// <vid>-cow.img.old (revisions_to_keep 1) or deleting it (0) and making a
// new empty cow; is_dirty is file.py's test of the cow (data beyond the
// empty exception store the kernel writes at activation, by SEEK_DATA,
// SEEK_HOLE and the allocated size), so a started origin is dirty only
// once its VM wrote; the revision "old" is timed by its ctime; is_outdated
// is always false; Revert is storage.ErrUnsupported (Qubes has none, and
// the old cow is an exception store, not an image); snap_on_start with
// save_on_stop is storage.ErrUnsupported (NotImplementedError); the export
// of a running or dirty volume is refused; an import into a volume that
// is not save_on_stop is refused, import_volume from a snapshot volume
// too; a snapshot volume cannot be resized; its size is its source's.
//
// # How it differs from Qubes, on purpose
//
//   - The contract's rules: bad input is refused before anything changes
//     on disk; nothing inside the pool is followed if it is a symlink
//     (storage.ErrUnsafePath); the pool directory is locked and records
//     its owner (.vmpool-owner), as file-reflink's; Create never replaces
//     a save_on_stop volume's data (storage.ErrExists).
//   - Every new file is written under a temporary name, fsynced and
//     renamed in place, and the directory fsynced; the import's rename is
//     durable (Qubes' is a plain os.rename). An import volume is a sparse
//     copy in Go (fsutil.CopyFile) instead of cp --sparse=always
//     --reflink=auto, without reflinks (Capabilities.Reflink is false), from
//     a file of any filesystem, a block device or a FIFO, with progress
//     reported to storage.ProgressFrom(ctx).
//   - An import into a running volume is storage.ErrRunning
//     (Capabilities.ImportRunning false): its VM writes to the image the
//     import would replace. Qubes' file driver has no check.
//   - Shrinking needs ResizeOptions.Force (storage.ErrShrink otherwise).
//   - Running is recorded in DIR/.vmpool-running/<vid, "-" → "--", "/" →
//     "-">, which holds the device the start made: Qubes keeps the same
//     fact outside the pool (/var/run/qubes/volume-running-<pool:vid>), and
//     the file driver's own files cannot tell a running volume from a
//     stopped one. The recorded device is what the stop removes: Qubes
//     recomputes it from the files, and misses a snapshot's device once its
//     source has committed (a new source cow). Stopping a stopped volume
//     does nothing (Qubes' stop commits again: its next cow would replace
//     the revision). Qubes' file driver ignores the directory; a migration
//     to file-reflink should remove it with the stale cows.
//   - A snapshot's start removes a device left by an earlier run (Qubes'
//     create-snapshot would reuse it, with the old run's writes), and a
//     snapshot volume's stop does not remove the exception store under it
//     while its source's origin exists (destroy-snapshot does, which
//     leaves a running template without one).
//   - revisions_to_keep 0 deletes the revision at the commit, and a start
//     with revisions_to_keep -1 deletes the cow and the revision (Qubes
//     leaves them, unused).
//   - A device that is still open is not removed: the stop fails with
//     storage.ErrInUse and can be repeated (destroy-snapshot prints a
//     message and succeeds, and file.py then commits).
//   - Abort (a start rolled back) removes the devices without a commit; an
//     origin keeps its cow, dirty or not.
//
// # Interoperability, checked by hand
//
// With Qubes' own file.py (qubes-core-admin 1ad5f9b8, driven one
// operation at a time): a tree Qubes made (setup, create, import of 1 MiB
// of data in a 32 MiB image, a stop that commits) opens in vmpool with the
// same size, no revision and a clean cow; vmpool's export has the
// imported bytes (same SHA-256); Create over it is storage.ErrExists;
// on the emulated block layer, vmpool starts it, writes, stops it (the cow becomes
// private-cow.img.old), and a snapshot volume starts on Qubes' template.
// The other way, Qubes' info reads vmpool's tree (size, usage, revisions
// {"old": <ctime>}, not dirty, the same origin-<dev:ino> name), exports
// it and removes it. On real device-mapper (the VM of internal/vmtest)
// vmpool starts and stops a template and a snapshot on a tree Qubes made
// and leaves no device or loop device; Qubes' create-snapshot script
// itself fails there (dmsetup cannot open its /dev/fd/3 arguments on
// that kernel), so the devices were not exchanged between the two.
package file
