// Package reflink is the "file-reflink" driver: VM images as plain files
// on a reflink-capable filesystem (btrfs, XFS), snapshots made with FICLONE
// (the ioctl behind cp --reflink), no device-mapper. It writes the same
// tree as Qubes' file-reflink driver, so either can open a pool the other
// wrote:
//
//	DIR/appvms/VM/private.img                         committed (clean) image
//	DIR/appvms/VM/private-dirty.img                   running image
//	DIR/appvms/VM/private-precache.img                clone of clean, ready for the next start
//	DIR/appvms/VM/private-import.img                  import in progress
//	DIR/appvms/VM/private.img.3@2018-01-02T03:04:05Z  revision 3
//	DIR/appvms/VM/private.img@2018-01-02T03:04:05Z    revision of the seed era, id "2018-01-02T03:04:05Z"
//	DIR/appvms/VM/private.img~XXXX                    temporary or pending removal
//	DIR/vm-templates/TPL/root.img ...
//
// Import it for its side effect of registering the driver:
//
//	import _ "github.com/vmpool/vmpool/reflink"
//
// # Parameters
//
// In the order the Admin API lists them: revisions_to_keep (default 1;
// -1 or more), dir_path (required; the pool's directory, whose parent must
// exist), setup_check (default yes; yes/no, true/false, on/off, 1/0, any
// case) and ephemeral_volatile (default False; True/1/on or
// False/0/off/empty, case-sensitive, as Qubes parses it). Anything else is
// storage.ErrInvalidConfig. setup_check is not part of the pool's Config,
// as in Qubes.
//
// # How it differs from Qubes, on purpose
//
// The tree is Qubes', but the work is arranged so that nothing on the start
// or stop path clones when a link or a rename does the same job:
//
//   - Start renames the ready precache into the dirty image (as Qubes does);
//     if the background worker is making it right now, Start waits for it
//     rather than making a second clone; if it is only queued, Start clones
//     the clean image itself, as Qubes does without a precache.
//   - Stop keeps the old clean image as a revision by hard-linking it (Qubes
//     clones it) and renames the dirty image over the clean one. This is
//     safe because a clean image is never written in place: every change,
//     the resize of a stopped volume included, makes a new inode. A
//     consequence: after a revert to a revision whose inode a running
//     snapshot still uses, that snapshot is not outdated (its data is the
//     same), where Qubes would say it is. Another: Qubes' revisions are
//     copies whose mtime is the time of the copy, so after a revert Qubes
//     names the next revision after that time; vmpool names it after the
//     last write of the data, the intent of Qubes' d9be5402.
//   - Pruning old revisions and cloning the next precache happen after the
//     commit is durable, in a pool-level background worker that Close and
//     Flush wait for. Pruned revisions are first renamed to "~" names, so
//     Revisions is right at once; the worker deletes them. Neither job is
//     needed for correctness: Start clones when the precache is missing or
//     stale, and the "~" files a crash left are deleted by the worker once
//     InitVolume registers their volume: only that volume's own names
//     (<image>~*, <image>.<n>@<ts>Z~*), never anything else in the tree,
//     so a user's notes~old or firewall.xml~ beside the images stays, as
//     with Qubes, which removes <volume>*.img*~* of one volume at its
//     create, start or remove. InitVolume also queues the precache of an
//     origin that has none, so the first Open after a crash or after Qubes'
//     driver finishes that work too.
//   - A commit repeated after a crash between its hard link and its rename
//     adds no second revision of the same image (Qubes would add a copy).
//   - Shrinking needs ResizeOptions.Force (storage.ErrShrink otherwise).
//   - Create refuses (storage.ErrExists) a save_on_stop volume whose vid
//     has a clean or dirty image or revisions: Qubes' create deletes them,
//     which lets a second caller with a stale or lost configuration wipe a
//     VM's disk. Remove deletes them.
//   - Setup records PoolConfig.Owner in DIR/.vmpool-owner, and Open and
//     Setup refuse a directory recorded for another owner unless
//     PoolConfig.Adopt; Qubes' driver ignores the file.
//   - A VM directory, an image or a revision that is a symlink (or not the
//     kind of file it should be) is never followed: every operation on its
//     volume is storage.ErrUnsafePath.
//   - Revision numbers are decimal strings of up to 60 digits, compared and
//     incremented as such, as Qubes' unbounded integers are.
//   - Revert "" goes to the newest revision that is not the clean image
//     itself (a revert cut short after its hard link leaves one).
//   - Revisions with the seed-era names (private.img@<timestamp>Z) are
//     listed (oldest first, before numbered ones), count towards
//     revisions_to_keep and can be reverted to; their id is the part after
//     "@".
//   - Start, as Qubes' (is_dirty is save_on_stop and a dirty image),
//     resumes only a save_on_stop volume's running image; a snapshot or
//     volatile volume whose dirty image survived a crash or a double start
//     starts fresh, its old image discarded to the worker.
//   - ImportData and ImportVolume accept a running volume, as Qubes' do
//     (admin.vm.volume.Clear and CloneTo work on a running qube): the
//     import becomes the clean image and the VM keeps its dirty image,
//     which its stop commits over the import (the import is then kept as a
//     revision). A volume running with snapshots disabled has no clean
//     image to replace: storage.ErrRunning, where Qubes fails on the
//     missing file. The Manager's ImportData (admin.vm.volume.Import)
//     still needs the VM halted, as Qubes' API does.
//   - Copies that cannot be reflinked (another filesystem, a filesystem
//     without reflinks) are sparse copies in Go instead of cp
//     --sparse=always, with the same result: the source's holes are
//     skipped (SEEK_DATA/SEEK_HOLE) and its all-zero 4 KiB blocks are not
//     written, so they become holes too. A source that is a block device
//     or a FIFO (another driver's export) is read to its end. After the
//     first EOPNOTSUPP the pool stops trying FICLONE.
//
// Every copy, link, rename and remove is logged to the pool's zerolog
// logger with op, src, dst, bytes and duration.
//
// Qubes quirks kept: revisions_to_keep 0 commits without a revision; an
// import into a volume with revisions_to_keep -1 adds a revision and
// prunes only the oldest; a volatile volume keeps a resize made while it
// ran; revert keeps the current state as a new revision without pruning.
package reflink
