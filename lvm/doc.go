// Package lvm is the lvm_thin driver: volumes are thin logical volumes in
// an LVM thin pool, named and handled exactly as Qubes' qubes/storage/lvm.py
// does, so that a volume group written by Qubes opens in vmpool and the
// other way round.
//
// # Parameters
//
// volume_group and thin_pool (required) name the thin pool;
// revisions_to_keep (default 1) and ephemeral_volatile (default False)
// are as for every driver. Setup only checks that the thin pool exists
// (ErrNotFound) and is one (ErrInvalidConfig); Destroy does nothing.
//
// # Names
//
// A vid is "VG/vm-VM-VOLUME" (storage.ParseLVMVID). Its logical volumes:
//
//	vm-VM-VOLUME                the committed state; a volatile volume's running LV
//	vm-VM-VOLUME-snap           a running snapshot or origin (the VM's disk)
//	vm-VM-VOLUME-<epoch>-back   a revision; its id is "<epoch>-back"
//	vm-VM-VOLUME-import         an import in progress
//
// When vm-VM-VOLUME is missing (a commit interrupted between its two
// renames, as in Qubes' test_009_interrupted_commit) the newest revision
// is the committed state. The VM gets "/dev/mapper/VG-LV" with each '-' of
// VG and LV doubled. A new revision is named after the current time, or
// one second after the newest revision when that is not older, so two
// commits within a second do not collide.
//
// # Operations
//
// Start makes -snap a thin snapshot of the source's (a snapshot volume) or
// its own (an origin) committed LV, resumes a dirty origin's -snap
// (activating it with --ignoreactivationskip where needed), makes a
// volatile volume's LV afresh, and, with snapshots disabled
// (revisions_to_keep -1), removes the revisions and runs on the committed
// LV. Stop commits an origin (the committed LV is renamed to a revision,
// -snap to the committed name, then the revisions beyond
// revisions_to_keep are discarded with blkdiscard and removed, as Qubes
// does) and removes a snapshot's -snap or a volatile volume's LV, after
// blkdiscard. Revert clones the revision to -import, then replaces the
// committed LV with it; the revisions stay (as Qubes). Resize changes
// the LV in use: -snap of a running volume, a running volatile LV, an
// import in progress, a stopped origin's committed LV. ImportData makes
// -import; ImportVolume clones a source of the same thin pool and copies
// another pool's source sparsely (blocks of zeros are skipped) into
// -import; both commit as a stop does. Snapshot-then-commit volumes are
// refused (ErrUnsupported), as Qubes documents; so are imports into a
// running volume (ErrRunning).
//
// # The lvm binary, and batches
//
// The driver runs the lvm binary through a [Runner] ([ExecRunner] unless
// [OpenWith] is given another). Every operation is one lvm process: its
// commands, fed to lvm's shell on stdin, then the report ("lvs
// --nameprefixes --noheadings --units b --nosuffix": the shell ignores
// --reportformat json), which the pool keeps until the next process, so
// that reads (IsDirty, Size, Revisions, Verify) run no process. The shell
// goes on after a failing command and exits 0, so each operation's
// effect is checked in the report; its commands are ordered so that a
// later command fails harmlessly after an earlier one failed, and what a
// failed operation did make is removed (or, for a commit, renamed back),
// so that no half-made LV stays. A failure is a [*CommandError] carrying
// the command and its stderr (split per command at marker lines), wrapping
// storage.ErrNotFound or ErrExists where lvm says so.
//
// A storage.Set whose volumes are all in one lvm_thin pool starts and
// stops them as one batch (storage.Batcher): a VM start is one lvm
// process, a stop one, plus one more when revisions are pruned (the
// pruned revisions are discarded between the two, after the commit is
// known to have worked). Qubes' driver spawns 6 lvm processes per start
// and 10 to 13 per stop of the same VM. Measured in the test VM on a
// loaded host (BenchmarkLVMVMStartStop, 3 cycles, medians; AppVM with a
// snapshot root, private keeping 1 revision, volatile, 16 MiB written
// into each): start 1.6 s with 1 lvm process, stop 4.3 s with 2, against
// (a) the same operations as one lvm process each: 4.2 s and 6.4 s, and
// (b) all fed to one lvm process: 1.3 s and 2.7 s (start 1.22× of (b),
// stop 1.58×: the second process of a pruning stop). Qubes' driver took
// 5.3 s and 7.9 s in another run of the same VM.
//
// # Compatibility with Qubes
//
// Names, the revision id form and sort order, the interrupted-commit and
// old layouts of Qubes' migration tests, blkdiscard before removal and
// the activation flags are Qubes'. Thin snapshots are made with
// --snapshot without --type=thin, which lvm2 2.03.12 to 2.03.21 refuse.
// The LVs vmpool makes have no activation-skip flag
// (--setactivationskip=n, as Qubes); LVs made by other tools may, and are
// activated with --ignoreactivationskip.
//
// Checked by hand in the VM against Qubes' own driver (qubes_driver.py
// running qubes-core-admin's lvm.py, one operation per call, on one
// volume group, lvm2 2.03.16): Qubes created an origin and a template
// root and committed twice; vmpool read the committed data and the
// revision, reverted to it, ran a cycle (commit and prune), and started
// an AppVM root as a snapshot of Qubes' template root, which showed its
// data; Qubes then read vmpool's committed data and revision, ran a cycle
// of its own (pruning vmpool's revision), which vmpool read; vmpool made a
// new volume and left it running, which Qubes saw as a volume with
// uncommitted data, committed at its stop, and removed. Each side saw the
// other's data, revisions (ids and timestamps) and running state.
package lvm
