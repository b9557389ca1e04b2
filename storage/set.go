package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Set holds the volumes of one VM and starts and stops them together, as
// Qubes' Storage does for a domain. When all its volumes share one
// [Batch] (they implement [Batcher] and live in one pool whose driver
// batches), Set starts and stops them through it; otherwise it calls each
// volume's Start and Stop concurrently.
type Set struct {
	volumes []Volume
	vm      string    // the VM, for the names of encrypted mappings
	enc     Encryptor // nil: ephemeral volumes are not encrypted
}

// NewSet returns a Set of the given volumes that does not encrypt
// ephemeral volumes (a caller that starts VMs uses NewVMSet).
func NewSet(volumes ...Volume) *Set {
	return &Set{volumes: append([]Volume(nil), volumes...)}
}

// NewVMSet returns the Set of the volumes of VM vm that runs each
// ephemeral volume (Volume.Ephemeral) behind a plain dm-crypt mapping
// with a key nobody keeps, made by enc, as Qubes' Storage does
// (start_encrypted): Start starts the volume, then enc opens the mapping
// over its block device and zeroes its first 64 KiB; the VM gets the
// mapping (BlockDevices); Stop closes the mapping of every volume that
// has one, ephemeral or no longer, before stopping it. The mapping's name
// is EncryptedName. A nil enc is NewSet.
func NewVMSet(vm string, enc Encryptor, volumes ...Volume) *Set {
	s := NewSet(volumes...)
	s.vm, s.enc = vm, enc
	return s
}

// Encryptor makes and removes the dm-crypt mappings of ephemeral volumes
// (package storage/ephemeral has the one that runs cryptsetup).
type Encryptor interface {
	// Open maps the block device at device as /dev/mapper/name with
	// plain dm-crypt (aes-xts-plain64) and a random key read from
	// /dev/urandom and never stored, closing a stale mapping of that name
	// first, and zeroes the first 64 KiB of the mapping (whatever the
	// image held reads as noise, not as a filesystem).
	Open(ctx context.Context, device, name string) error
	// Close removes the mapping /dev/mapper/name; a missing one is fine.
	Close(ctx context.Context, name string) error
}

// EncryptedNamer is implemented by a Volume whose driver names its
// encrypted mapping itself (Qubes' lvm_thin overrides
// encrypted_volume_path with its LV's name).
type EncryptedNamer interface {
	// EncryptedName returns the name of the volume's mapping under
	// /dev/mapper when it runs for VM vm.
	EncryptedName(vm string) string
}

// EncryptedName returns the name, under /dev/mapper, of the encrypted
// mapping of volume v when it runs for VM vm: the volume's own
// (EncryptedNamer), else Qubes' encrypted_volume_path,
// "vm-volatile-<vm>-crypt@<volume>", where the VM's name has "_" written
// "_u" and "-" written "_d" (so that it cannot collide with the names of
// LVM or LUKS).
func EncryptedName(v Volume, vm string) string {
	if n, ok := v.(EncryptedNamer); ok {
		return n.EncryptedName(vm)
	}
	esc := strings.NewReplacer("_", "_u", "-", "_d").Replace(vm)
	return "vm-volatile-" + esc + "-crypt@" + v.Config().Name
}

// BlockDevices returns what the VM gets for each volume, in the Set's
// order: the volume's BlockDevice, or for an ephemeral volume of a Set
// made by NewVMSet its encrypted mapping (Qubes' make_encrypted_device).
func (s *Set) BlockDevices() []BlockDevice {
	out := make([]BlockDevice, 0, len(s.volumes))
	for _, v := range s.volumes {
		bd := v.BlockDevice()
		if s.encrypts(v) {
			bd = BlockDevice{Path: "/dev/mapper/" + EncryptedName(v, s.vm), Name: bd.Name, RW: bd.RW, DevType: "disk"}
		}
		out = append(out, bd)
	}
	return out
}

// encrypts tells whether Start runs v behind an encrypted mapping.
func (s *Set) encrypts(v Volume) bool { return s.enc != nil && v.Ephemeral() }

// mappingName returns v's mapping name, refusing one that would not be a
// single name under /dev/mapper.
func (s *Set) mappingName(v Volume) (string, error) {
	name := EncryptedName(v, s.vm)
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return "", fmt.Errorf("%w: %q is not a device-mapper name", ErrInvalidConfig, name)
	}
	return name, nil
}

// Volumes returns the volumes of the set.
func (s *Set) Volumes() []Volume { return append([]Volume(nil), s.volumes...) }

// Verify checks every volume; it returns all the failures joined.
func (s *Set) Verify(ctx context.Context) error {
	return s.each(ctx, func(ctx context.Context, v Volume) error { return v.Verify(ctx) })
}

// Start verifies all volumes, then starts them concurrently. If any start
// fails, the volumes this call started are aborted (discarded without a
// commit, so no revision is created or pruned) and the error is returned;
// a volume that was dirty before the call (an origin whose uncommitted
// data the start resumed after a crash) keeps its running image. A snapshot
// or volatile volume that ran before the call started fresh, so its old
// image is gone either way, and it is aborted like the others.
func (s *Set) Start(ctx context.Context) error {
	if err := s.Verify(ctx); err != nil {
		return err
	}
	n := len(s.volumes)
	wasDirty := make([]bool, n)
	names := make([]string, n) // the encrypted mappings to open
	for i, v := range s.volumes {
		dirty, err := v.IsDirty(ctx)
		if err != nil {
			return fmt.Errorf("start %s: %w", v.Config().VID, err)
		}
		wasDirty[i] = dirty
		if s.encrypts(v) {
			if names[i], err = s.mappingName(v); err != nil {
				return fmt.Errorf("start %s: %w", v.Config().VID, err)
			}
		}
	}
	started := make([]bool, n)
	opened := make([]bool, n)
	encrypt := func(ctx context.Context, i int, v Volume) error {
		if names[i] == "" {
			return nil
		}
		if err := s.enc.Open(ctx, v.BlockDevice().Path, names[i]); err != nil {
			return fmt.Errorf("start %s: encrypt: %w", v.Config().VID, err)
		}
		opened[i] = true
		return nil
	}
	var err error
	b := s.batch()
	if b != nil {
		errs := b.Start(ctx, s.Volumes())
		for i, v := range s.volumes {
			if started[i] = errs[i] == nil; started[i] {
				errs[i] = encrypt(ctx, i, v)
			}
		}
		err = errors.Join(errs...)
	} else {
		err = s.eachIndex(ctx, func(ctx context.Context, i int, v Volume) error {
			if err := v.Start(ctx); err != nil {
				return err
			}
			started[i] = true
			return encrypt(ctx, i, v)
		})
	}
	if err == nil {
		return nil
	}
	// Roll back with a context that is not cancelled: a cancelled start
	// must still leave the volumes as they were.
	rollback := context.WithoutCancel(ctx)
	errs := []error{err}
	var abort []Volume
	for i, v := range s.volumes {
		if opened[i] {
			if cerr := s.enc.Close(rollback, names[i]); cerr != nil {
				errs = append(errs, fmt.Errorf("roll back %s: close its encrypted mapping: %w", v.Config().VID, cerr))
				continue // a volume under an open mapping is not aborted
			}
		}
		if started[i] && !wasDirty[i] {
			abort = append(abort, v)
		}
	}
	var aerrs []error
	if b != nil && len(abort) > 0 {
		aerrs = b.Stop(rollback, abort, true)
	} else {
		for _, v := range abort {
			aerrs = append(aerrs, v.Abort(rollback))
		}
	}
	for i, aerr := range aerrs {
		if aerr != nil {
			errs = append(errs, fmt.Errorf("roll back %s: %w", abort[i].Config().VID, aerr))
		}
	}
	return errors.Join(errs...)
}

// Stop stops all volumes (concurrently, or through their Batch) and
// returns all failures joined. A Set made by NewVMSet first closes each
// volume's encrypted mapping, if it has one (ephemeral or not: the flag
// may have changed while it ran); a volume whose mapping does not close
// is not stopped.
func (s *Set) Stop(ctx context.Context) error {
	vols := s.Volumes()
	var errs []error
	if s.enc != nil {
		vols = vols[:0]
		for _, v := range s.volumes {
			name, err := s.mappingName(v)
			if err == nil {
				err = s.enc.Close(ctx, name)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("stop %s: close its encrypted mapping: %w", v.Config().VID, err))
				continue
			}
			vols = append(vols, v)
		}
	}
	if b := s.batch(); b != nil {
		if len(vols) > 0 {
			errs = append(errs, b.Stop(ctx, vols, false)...)
		}
		return errors.Join(errs...)
	}
	errs = append(errs, (&Set{volumes: vols}).each(ctx, func(ctx context.Context, v Volume) error { return v.Stop(ctx) }))
	return errors.Join(errs...)
}

// Batcher is implemented by volumes whose pool starts and stops several of
// its volumes at once faster than one by one: lvm_thin runs the LV
// operations of all of them in one lvm process and reads the LV report
// once. Set uses it when every one of its volumes returns the same Batch.
type Batcher interface {
	Volume
	// Batch returns the value that starts and stops this volume together
	// with the other volumes of the same Batch (its pool's).
	Batch() Batch
}

// Batch starts and stops volumes of one pool together. Each volume gets
// its own result, as if its own Start, Stop or Abort had run: a volume
// that fails leaves nothing half-made, and the others are not affected
// by its failure.
type Batch interface {
	// Start starts vols; it returns one error per volume, nil for those
	// that started.
	Start(ctx context.Context, vols []Volume) []error
	// Stop stops vols, or aborts them (see Volume.Abort) when abort is
	// set; it returns one error per volume.
	Stop(ctx context.Context, vols []Volume, abort bool) []error
}

// batch returns the Batch every volume of the set shares, or nil.
func (s *Set) batch() Batch {
	var b Batch
	for _, v := range s.volumes {
		bv, ok := v.(Batcher)
		if !ok {
			return nil
		}
		vb := bv.Batch()
		if vb == nil || b != nil && vb != b {
			return nil
		}
		b = vb
	}
	return b
}

func (s *Set) each(ctx context.Context, fn func(context.Context, Volume) error) error {
	return s.eachIndex(ctx, func(ctx context.Context, _ int, v Volume) error { return fn(ctx, v) })
}

// eachIndex runs fn on every volume concurrently and joins the errors.
func (s *Set) eachIndex(ctx context.Context, fn func(context.Context, int, Volume) error) error {
	errs := make([]error, len(s.volumes))
	var wg sync.WaitGroup
	for i, v := range s.volumes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(ctx, i, v)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
