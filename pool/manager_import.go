package pool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vmpool/vmpool/storage"
)

// importBlock is the unit in which ImportData copies; an all-zero block is
// not written but skipped, so it stays a hole.
const importBlock = 64 << 10

// ImportData replaces the data of volume name of VM vm with exactly size
// bytes read from r, as qvm-volume import does: the volume's ImportData
// gives a fresh image of size bytes, r is copied into it (all-zero 64 KiB
// blocks are skipped, so they stay holes), and ImportDataEnd commits it,
// or discards it if the copy failed. The volume's size becomes size; the
// state is saved. Progress is reported to the storage.ProgressFunc of ctx.
//
// The VM must be stopped (ErrRunning), as the Admin API requires; a
// negative size is ErrInvalidConfig; fewer or more than size bytes in r is
// an error and nothing is committed.
func (m *Manager) ImportData(ctx context.Context, vm, name string, r io.Reader, size int64) error {
	return m.withVolume(vm, name, "import data into", func(v storage.Volume) error {
		if size < 0 {
			return fmt.Errorf("%w: negative size %d", storage.ErrInvalidConfig, size)
		}
		if err := m.checkHalted(ctx, vm); err != nil {
			return err
		}
		path, err := v.ImportData(ctx, size)
		if err != nil {
			return err
		}
		cerr := copyImport(ctx, path, r, size)
		if err := v.ImportDataEnd(context.WithoutCancel(ctx), cerr == nil); err != nil {
			return errors.Join(cerr, err)
		}
		return cerr
	})
}

// checkHalted returns ErrRunning if any volume of vm runs; the caller
// holds mu.
func (m *Manager) checkHalted(ctx context.Context, vm string) error {
	for _, v := range m.vms[vm] {
		running, err := v.IsRunning(ctx)
		if err != nil {
			return err
		}
		if running {
			return fmt.Errorf("VM %s must be stopped (volume %s is running): %w", vm, v.Config().Name, storage.ErrRunning)
		}
	}
	return nil
}

// copyImport copies exactly size bytes from r into the file at path, which
// ImportData made (a fresh sparse file of size bytes, all zeros), leaving
// all-zero blocks unwritten as Qubes' import script does with dd
// conv=sparse, and fsyncs it.
func copyImport(ctx context.Context, path string, r io.Reader, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	progress := storage.ProgressFrom(ctx)
	buf := make([]byte, importBlock)
	zero := make([]byte, importBlock)
	var done int64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := io.ReadFull(r, buf)
		if int64(n) > size-done {
			return fmt.Errorf("too much data (expected %d bytes)", size)
		}
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, err := f.WriteAt(buf[:n], done); err != nil {
				return err
			}
		}
		done += int64(n)
		if n > 0 {
			progress(done, size)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read import data: %w", rerr)
		}
	}
	if done < size {
		return fmt.Errorf("not enough data (copied %d bytes, expected %d bytes)", done, size)
	}
	// The image should already have size bytes; make sure of it, as the
	// trailing holes were never written.
	if st, err := f.Stat(); err != nil {
		return err
	} else if st.Size() != size {
		if err := f.Truncate(size); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}
