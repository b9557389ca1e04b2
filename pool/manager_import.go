package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// ImportData replaces the data of volume name of VM vm with exactly size
// bytes read from r, as qvm-volume import does: the volume's ImportData
// gives a fresh image of size bytes, r is copied into it (all-zero 4 KiB
// blocks are skipped, so they stay holes), and ImportDataEnd commits it,
// or discards it if the copy failed. The volume's size becomes size; the
// state is saved. Progress is reported to the storage.ProgressFunc of ctx.
//
// When r is an *os.File holding a regular file, it is copied from its
// current offset and its holes are skipped without being read, so
// importing a large sparse image takes the time of its data.
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
	src := r
	if _, ok := r.(*os.File); !ok {
		src = importReader{r} // an *os.File names itself in its errors
	}
	n, err := fsutil.SparseCopy(ctx, f, src, size, storage.ProgressFrom(ctx))
	if err != nil {
		return err
	}
	if n < size {
		return fmt.Errorf("not enough data (copied %d bytes, expected %d bytes)", n, size)
	}
	// The image should already have size bytes; make sure of it.
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

// importReader says that its reader's errors are read errors of the
// import data.
type importReader struct{ r io.Reader }

func (r importReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("read import data: %w", err)
	}
	return n, err
}

// ImportVolume replaces the data of volume name of VM vm with the committed
// data of volume srcName of VM srcVM, as the Admin API's
// admin.vm.volume.CloneFrom and CloneTo do (qvm-clone, and a VM moved to
// another pool): the destination's ImportVolume exports the source and
// copies it — a reflink within one file-reflink filesystem, a sparse
// copy (holes stay holes) between pools, filesystems and drivers — then
// commits it. The destination's size becomes the source's; the state is
// saved. Progress of a copy is reported to the storage.ProgressFunc of
// ctx.
//
// The destination VM must be stopped (ErrRunning). The source may run, as
// in Qubes, where its committed data is what is copied; a source running
// with snapshots disabled has no committed image apart from the running
// one and is refused by the drivers (ErrRunning). A volume cannot import
// itself (ErrInvalidConfig). A destination that is not save_on_stop
// ignores the import, as Qubes' drivers do.
func (m *Manager) ImportVolume(ctx context.Context, vm, name, srcVM, srcName string) error {
	return m.withVolume(vm, name, "import into", func(v storage.Volume) error {
		if srcVM == vm && srcName == name {
			return fmt.Errorf("%w: a volume cannot import itself", storage.ErrInvalidConfig)
		}
		src, err := m.volume(srcVM, srcName)
		if err != nil {
			return fmt.Errorf("source: %w", err)
		}
		if err := m.checkHalted(ctx, vm); err != nil {
			return err
		}
		return v.ImportVolume(ctx, src)
	})
}
