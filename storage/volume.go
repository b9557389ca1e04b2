package storage

import (
	"context"
	"fmt"
	"time"
)

// VolumeConfig is the configuration of one volume, the counterpart of a
// <volume> element in Qubes' qubes.xml. The caller persists it (pool.Manager
// does, as JSON) and hands it back to [Pool.InitVolume] when it opens the
// pool again.
type VolumeConfig struct {
	// Name is the volume's name inside its VM: root, private, volatile,
	// kernel.
	Name string `json:"name"`
	// Pool is the name of the pool the volume lives in. InitVolume fills it
	// in when empty.
	Pool string `json:"pool"`
	// VID identifies the volume within its pool. Its form is the driver's
	// (file-reflink: "appvms/<vm>/<name>" or "vm-templates/<vm>/<name>").
	VID string `json:"vid"`
	// Size is the volume's size in bytes.
	Size int64 `json:"size,omitempty"`
	// RW makes the volume writable by its VM.
	RW bool `json:"rw"`
	// SnapOnStart makes each start begin from Source's committed state.
	SnapOnStart bool `json:"snap_on_start"`
	// SaveOnStop makes each stop commit the volume's data.
	SaveOnStop bool `json:"save_on_stop"`
	// Source is the vid of the volume a SnapOnStart volume starts from; it
	// lives in the same pool.
	Source string `json:"source,omitempty"`
	// RevisionsToKeep is how many old committed states a SaveOnStop volume
	// keeps; -1 disables snapshots (the volume runs on its committed image).
	// Nil means the pool's default; InitVolume resolves it, so the Config of
	// a volume always has it set.
	RevisionsToKeep *int `json:"revisions_to_keep,omitempty"`
	// Ephemeral asks for the volume to be encrypted with a throw-away key
	// at each start. Nil means the pool's ephemeral_volatile for volatile
	// volumes, false for others. vmpool carries it as a property only.
	Ephemeral *bool `json:"ephemeral,omitempty"`
}

// Kind is one of the four snap_on_start/save_on_stop combinations.
type Kind int

// The four kinds of volume.
const (
	Volatile       Kind = iota // neither snap_on_start nor save_on_stop
	Snapshot                   // snap_on_start only
	Origin                     // save_on_stop only
	SnapshotCommit             // both
)

// String returns the Qubes name of the kind.
func (k Kind) String() string {
	switch k {
	case Volatile:
		return "volatile"
	case Snapshot:
		return "snapshot"
	case Origin:
		return "origin"
	case SnapshotCommit:
		return "origin_snapshot"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Kind returns which of the four combinations c is.
func (c VolumeConfig) Kind() Kind {
	switch {
	case c.SnapOnStart && c.SaveOnStop:
		return SnapshotCommit
	case c.SnapOnStart:
		return Snapshot
	case c.SaveOnStop:
		return Origin
	}
	return Volatile
}

// Keep returns RevisionsToKeep, or def when it is not set.
func (c VolumeConfig) Keep(def int) int {
	if c.RevisionsToKeep == nil {
		return def
	}
	return *c.RevisionsToKeep
}

// SnapshotsDisabled reports whether c is an origin volume with
// revisions_to_keep -1: it runs on its committed image and keeps no
// revisions.
func (c VolumeConfig) SnapshotsDisabled() bool {
	return c.Kind() == Origin && c.RevisionsToKeep != nil && *c.RevisionsToKeep == -1
}

// Validate checks what every driver requires of a configuration: a
// well-formed name, a non-negative size, a source exactly when snap_on_start
// is set, revisions_to_keep of at least -1 and no explicit ephemeral on a
// volume that cannot be ephemeral. Errors wrap ErrInvalidConfig. The driver
// checks the vid.
func (c VolumeConfig) Validate() error {
	if err := ValidateVolumeName(c.Name); err != nil {
		return err
	}
	if c.Size < 0 {
		return fmt.Errorf("%w: volume %q: negative size %d", ErrInvalidConfig, c.Name, c.Size)
	}
	if c.SnapOnStart && c.Source == "" {
		return fmt.Errorf("%w: snap_on_start specified on %q but no volume source set", ErrInvalidConfig, c.Name)
	}
	if !c.SnapOnStart && c.Source != "" {
		return fmt.Errorf("%w: source specified on %q but no snap_on_start set", ErrInvalidConfig, c.Name)
	}
	if c.RevisionsToKeep != nil && *c.RevisionsToKeep < -1 {
		return fmt.Errorf("%w: volume %q: revisions_to_keep %d is below -1", ErrInvalidConfig, c.Name, *c.RevisionsToKeep)
	}
	if c.Ephemeral != nil && *c.Ephemeral && (c.SnapOnStart || c.SaveOnStop || !c.RW) {
		return fmt.Errorf("%w: volume %q: only a writable volatile volume can be ephemeral", ErrInvalidConfig, c.Name)
	}
	return nil
}

// VolumeChange is a change to the configuration of a registered volume,
// as Qubes' volume properties change (admin.vm.volume.Set.revisions_to_keep,
// .rw and .ephemeral; a new template gives a snapshot volume a new
// source). Nil fields stay as they are. The kind of a volume (snap_on_start,
// save_on_stop) and its vid never change; its size changes by Resize.
type VolumeChange struct {
	// RevisionsToKeep: -1 or more (drivers may allow fewer). A change to or
	// from -1 (snapshots disabled) needs a stopped volume, as Qubes'
	// set_revisions_to_keep checks; other changes apply from the next
	// commit on.
	RevisionsToKeep *int
	// RW makes the volume writable or read-only; the volume must be
	// stopped.
	RW *bool
	// Ephemeral sets the explicit ephemeral flag (true only on a writable
	// volatile volume, as Qubes' setter checks); it takes effect at the
	// next start.
	Ephemeral *bool
	// ClearEphemeral removes the explicit ephemeral flag, so that the
	// pool's ephemeral_volatile decides again; it cannot go with
	// Ephemeral.
	ClearEphemeral bool
	// Source is the new source of a snap_on_start volume, a vid of the same
	// pool; the volume must be stopped.
	Source *string
}

// Apply returns c with ch applied, checked with Validate. Errors wrap
// ErrInvalidConfig; whether the volume may change now (it runs) is the
// driver's to check.
func (c VolumeConfig) Apply(ch VolumeChange) (VolumeConfig, error) {
	if ch.RevisionsToKeep != nil {
		n := *ch.RevisionsToKeep
		c.RevisionsToKeep = &n
	}
	if ch.RW != nil {
		c.RW = *ch.RW
	}
	if ch.Ephemeral != nil {
		if ch.ClearEphemeral {
			return c, fmt.Errorf("%w: volume %q: a change cannot both set and clear ephemeral", ErrInvalidConfig, c.Name)
		}
		b := *ch.Ephemeral
		c.Ephemeral = &b
	}
	if ch.ClearEphemeral {
		c.Ephemeral = nil
	}
	if ch.Source != nil {
		if !c.SnapOnStart {
			return c, fmt.Errorf("%w: volume %q is not snap_on_start and has no source", ErrInvalidConfig, c.Name)
		}
		c.Source = *ch.Source
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// TogglesSnapshots reports whether going from c to next enables or
// disables snapshots (revisions_to_keep to or from -1), which Qubes allows
// only while the volume's VM is halted.
func (c VolumeConfig) TogglesSnapshots(next VolumeConfig) bool {
	return c.SnapshotsDisabled() != next.SnapshotsDisabled()
}

// Revision is an older committed state of a volume.
type Revision struct {
	// ID names the revision in Revert: a decimal number for the file
	// drivers ("1", "2", ...), "<epoch>-back" for lvm_thin.
	ID string
	// Time is when the revision's data was last modified (UTC, whole
	// seconds).
	Time time.Time
}

// Timestamp formats Time as Qubes does: "2006-01-02T15:04:05", UTC, no zone.
func (r Revision) Timestamp() string { return r.Time.UTC().Format(TimestampLayout) }

// TimestampLayout is the time layout of revision timestamps.
const TimestampLayout = "2006-01-02T15:04:05"

// BlockDevice describes how a running volume is given to its VM, as Qubes'
// BlockDevice does.
type BlockDevice struct {
	// Path is the image file or device node; for the file driver's scripts,
	// colon-joined paths.
	Path string
	// Name is the volume's name in the VM.
	Name string
	// Script is the block script that makes Path a block device (file
	// driver: "block-origin", "block-snapshot"); empty for none.
	Script string
	// RW tells whether the VM may write.
	RW bool
	// Domain is the backend domain; empty for the admin domain.
	Domain string
	// DevType is "disk".
	DevType string
}

// ResizeOptions modify Resize.
type ResizeOptions struct {
	// Force allows shrinking, which loses the data beyond the new size
	// (qvm-volume resize --force). Without it, shrinking is ErrShrink.
	Force bool
}

// Volume is one disk of one VM in a pool. The methods correspond to the
// methods and properties of Qubes' storage.Volume. Implementations are safe
// for concurrent use; operations on one volume are serialised.
type Volume interface {
	// Config returns the volume's current configuration, with
	// RevisionsToKeep resolved and Size as the volume's configured size.
	Config() VolumeConfig
	// Ephemeral reports whether the volume is ephemeral, after applying the
	// pool's ephemeral_volatile default.
	Ephemeral() bool
	// BlockDevice describes the device a running VM gets.
	BlockDevice() BlockDevice

	// Create makes the volume's images on disk. For a save_on_stop volume
	// whose vid has data or revisions on disk already it is ErrExists and
	// changes nothing (Qubes' drivers delete them; Remove does that here).
	// Leftovers of a snapshot or volatile volume are removed.
	Create(ctx context.Context) error
	// Remove deletes all the volume's images and revisions and forgets the
	// volume in its pool.
	Remove(ctx context.Context) error
	// Verify checks that the images Start needs exist (ErrNotFound).
	Verify(ctx context.Context) error
	// Start prepares the volume for its VM. A dirty volume (save_on_stop,
	// still running after a crash or a double start) is resumed: its
	// uncommitted data is kept. A snapshot or volatile volume always starts
	// fresh, whatever running image it had.
	Start(ctx context.Context) error
	// Stop ends a run: an origin commits, a snapshot or volatile volume is
	// discarded. Stopping a stopped volume does nothing.
	Stop(ctx context.Context) error
	// Abort undoes a Start that its VM never used: the running image is
	// discarded without a commit, so no revision is added or pruned.
	Abort(ctx context.Context) error

	// IsRunning reports whether the volume's running image exists.
	IsRunning(ctx context.Context) (bool, error)
	// IsDirty reports whether a save_on_stop volume holds data not yet
	// committed: it runs.
	IsDirty(ctx context.Context) (bool, error)
	// IsOutdated reports whether a running snapshot's source has changed
	// since the snapshot started.
	IsOutdated(ctx context.Context) (bool, error)
	// Size returns the current size in bytes.
	Size(ctx context.Context) (int64, error)
	// Usage returns the bytes allocated to the volume's current image.
	Usage(ctx context.Context) (int64, error)
	// Revisions returns the volume's revisions, oldest first.
	Revisions(ctx context.Context) ([]Revision, error)

	// Revert makes revision id the committed state; an empty id means the
	// newest revision. The current committed state is kept as a revision
	// where the driver does so. A dirty volume is ErrDirty.
	Revert(ctx context.Context, id string) error
	// Resize grows (or, with Force, shrinks) the volume, running or not.
	Resize(ctx context.Context, size int64, opts ResizeOptions) error
	// Reconfigure applies ch to the volume's configuration (see
	// VolumeChange for what may change when). A malformed change is
	// ErrInvalidConfig, one the driver cannot do ErrUnsupported, one that
	// needs a stopped volume ErrRunning; a refused change changes nothing.
	// The caller persists the new Config.
	Reconfigure(ctx context.Context, ch VolumeChange) error

	// Export returns a readable path with the volume's committed data (from
	// before the start, if it runs). ExportEnd releases it.
	Export(ctx context.Context) (string, error)
	// ExportEnd releases a path returned by Export.
	ExportEnd(ctx context.Context, path string) error
	// ImportData returns a writable path of size bytes; ImportDataEnd
	// commits what was written there, or discards it. A running volume
	// takes the import as its committed state and keeps its running image
	// where Capabilities.ImportRunning says so; else it is ErrRunning.
	ImportData(ctx context.Context, size int64) (string, error)
	// ImportDataEnd ends an ImportData: success commits, failure discards.
	ImportDataEnd(ctx context.Context, success bool) error
	// ImportVolume replaces the volume's committed data with src's; the
	// volume's size follows src's. A running volume is treated as by
	// ImportData.
	ImportVolume(ctx context.Context, src Volume) error
}
