package storage

import (
	"context"

	"github.com/rs/zerolog"
)

// Parameter describes one parameter a driver accepts.
type Parameter struct {
	Name     string
	Required bool
	// Doc says what the parameter means, its values and its default.
	Doc string
}

// PoolConfig is what a driver needs to open a pool.
type PoolConfig struct {
	// Name is the pool's name.
	Name string
	// Params are the driver's parameters, as strings (as Qubes reads them
	// from qubes.xml). Unknown or malformed ones are ErrInvalidConfig.
	Params map[string]string
	// Logger receives the pool's structured log; the zero value logs
	// nothing.
	Logger zerolog.Logger
	// Owner identifies who keeps the pool (pool.Manager: its state). A
	// driver whose pool is a directory records it there at Setup, and
	// Open and Setup refuse (ErrInUse, naming the recorded owner) a
	// directory recorded for another owner, unless Adopt is set. The zero
	// Owner records and checks nothing.
	Owner PoolOwner
	// Adopt lets Setup take over a directory recorded for another owner:
	// its record is replaced by Owner.
	Adopt bool
}

// PoolOwner identifies the keeper of a pool.
type PoolOwner struct {
	// ID is compared: the same ID is the same owner.
	ID string `json:"id"`
	// Desc names the owner in messages ("pool demo of the vmpool state in
	// /var/lib/vmpool").
	Desc string `json:"desc"`
}

// Driver makes pools. A driver registers itself with pool.Register from an
// init function; it is safe for concurrent use.
type Driver interface {
	// Parameters lists the parameters the driver accepts, in the order the
	// Admin API prints them.
	Parameters() []Parameter
	// Open validates cfg and returns the pool. It creates nothing on disk:
	// Setup does. A pool that is already set up is locked against other
	// processes until Close (ErrInUse if the lock cannot be had before ctx
	// ends).
	Open(ctx context.Context, cfg PoolConfig) (Pool, error)
}

// Capabilities says which optional behaviours a pool has.
type Capabilities struct {
	// MaxRevisions is the largest revisions_to_keep a volume may have; -1
	// means no limit.
	MaxRevisions int
	// Revert tells whether Revert is implemented (else ErrUnsupported).
	Revert bool
	// SnapshotCommit tells whether volumes with both snap_on_start and
	// save_on_stop are accepted.
	SnapshotCommit bool
	// Outdated tells whether IsOutdated can ever report true.
	Outdated bool
	// Reflink tells whether copies inside the pool share extents (FICLONE)
	// instead of copying data.
	Reflink bool
	// ImportRunning tells whether ImportData and ImportVolume accept a
	// running volume, as Qubes' file drivers do (admin.vm.volume.Clear and
	// CloneTo work on a running qube): the import becomes the committed
	// state and the VM keeps its running image, which its stop commits
	// over the import. Without it, such an import is ErrRunning (Qubes'
	// lvm_thin).
	ImportRunning bool
}

// PoolUsage is the space a pool has and uses, in bytes.
type PoolUsage struct {
	// Unavailable is set when the pool cannot measure itself now (a
	// file-reflink pool whose directory is missing, e.g. an unmounted
	// mount point); the figures are zero then, and Qubes reports none
	// rather than an error, so qvm-pool info still works.
	Unavailable bool
	DataSize    int64
	DataUsage   int64
	// Extra holds driver-specific figures (lvm_thin: metadata_size,
	// metadata_usage).
	Extra map[string]int64
}

// Pool is a named place where volumes live. Implementations are safe for
// concurrent use.
type Pool interface {
	// Name returns the pool's name.
	Name() string
	// Driver returns the name the pool's driver is registered under.
	Driver() string
	// Config returns the pool's persistent configuration as Qubes reports
	// it: name, driver and the driver's persistent parameters.
	Config() map[string]string
	// Capabilities returns what the pool can do.
	Capabilities() Capabilities

	// Setup creates the pool on disk (or checks that it exists).
	Setup(ctx context.Context) error
	// Destroy removes what Setup made, where the driver does so.
	Destroy(ctx context.Context) error
	// Usage reports the pool's size and use; a pool that cannot measure
	// itself now reports PoolUsage.Unavailable, not an error.
	Usage(ctx context.Context) (PoolUsage, error)
	// SetParameter changes a persistent parameter of the open pool, as
	// qvm-pool set does (every driver: revisions_to_keep, the default for
	// volumes registered from now on, and ephemeral_volatile). A parameter
	// that cannot change (dir_path) is ErrUnsupported, an unknown one or a
	// malformed value ErrInvalidConfig; Config reports the new value and
	// the caller persists it.
	SetParameter(ctx context.Context, name, value string) error

	// InitVolume makes a Volume from its configuration and registers it in
	// the pool, changing nothing on disk at once: a driver may read the
	// disk (a save_on_stop volume's size comes from its image) and queue
	// background work (file-reflink deletes the volume's own "~" files and
	// prepares its precache). A vid already registered is ErrExists.
	InitVolume(cfg VolumeConfig) (Volume, error)
	// ForgetVolume unregisters volume vid without touching the disk (the
	// undo of InitVolume, e.g. after Create refused to replace data); the
	// operations of its Volume values that change the disk then fail with
	// ErrNotFound. An unknown vid is ErrNotFound.
	ForgetVolume(ctx context.Context, vid string) error
	// Volume returns the registered volume vid, or ErrNotFound.
	Volume(vid string) (Volume, error)
	// Volumes returns the registered volumes, sorted by vid.
	Volumes() []Volume

	// Close waits for the pool's background work, releases its lock and
	// makes later operations fail with ErrClosed.
	Close() error
}

// Flusher is implemented by pools that do work in the background (pruning
// revisions, preparing the next start). Flush returns when the work queued
// so far is done.
type Flusher interface {
	Flush(ctx context.Context) error
}

// BackgroundCanceller is implemented by pools whose background work can
// be abandoned (file-reflink's precache copies and removals of "~"
// files). CancelBackground stops the work running now and drops what is
// queued, leaving nothing half-made that the pool does not clean up
// later; it is for a program that was told to stop and does not want
// Close to wait. The pool goes on working.
type BackgroundCanceller interface {
	CancelBackground()
}

// Migrator is implemented by a Pool that can take over, in place, the
// directory or volume group that a pool of another driver used until now
// (file-reflink takes over a file pool's tree, which Qubes documents as a
// drop-in change). pool.Manager.MigratePool drives it: the old pool is
// closed, this pool is opened on the same place and Setup, the volume
// configurations are registered with InitVolume (all stopped, none
// dirty), then MigrateFrom runs, the caller records the switch, and
// FinishMigration runs.
type Migrator interface {
	// MigrateFrom converts what the old driver kept that this one can
	// use (the file driver's revision, for file-reflink) and must leave
	// the place usable by the old driver, so that a caller that fails or
	// dies before recording the switch still has a working pool. It is
	// idempotent: run again after an interruption it does not convert
	// twice. A driver it cannot migrate from is ErrUnsupported.
	MigrateFrom(ctx context.Context, driver string) error
	// FinishMigration removes what only the old driver used (the file
	// driver's *-cow.img and *-cow.img.old files), after the caller
	// recorded the switch. It is idempotent, and harmless to skip: the
	// leftovers do not disturb this driver.
	FinishMigration(ctx context.Context, driver string) error
}
