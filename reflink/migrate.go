package reflink

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vmpool/vmpool/internal/dmsnap"
	"github.com/vmpool/vmpool/internal/filepool"
	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// fileDriver is the driver whose trees file-reflink takes over.
const fileDriver = "file"

// The file driver's files beside an image NAME.img: the dm-snapshot
// exception store of the running origin, and its one revision.
const (
	fileCowSuffix = "-cow.img"
	fileOldSuffix = "-cow.img.old"
)

// fileRunDir is where vmpool's file driver keeps a marker per running
// volume; empty once every volume stopped, as MigratePool requires.
const fileRunDir = ".vmpool-running"

// MigrateFrom implements storage.Migrator for pools of the file driver,
// whose tree is file-reflink's (NAME.img is the committed image in both).
// The file driver's one revision, NAME-cow.img.old, is a dm-snapshot
// exception store holding the chunks that its last run overwrote; for
// each origin volume that keeps revisions, MigrateFrom applies it to a
// clone of NAME.img and keeps the result as a revision of file-reflink
// (the next number, time = the store's ctime, which is the time the file
// driver reports for it). The store itself stays, so the file driver
// still works until the caller records the switch. A revision of that
// time already present (an interrupted migration run again) is not made
// twice. A store the kernel invalidated gives no revision (logged).
func (p *reflinkPool) MigrateFrom(ctx context.Context, driver string) error {
	if driver != fileDriver {
		return &storage.Error{Op: "migrate", Pool: p.name,
			Err: fmt.Errorf("%w: file-reflink takes over pools of the %s driver only, not %s", storage.ErrUnsupported, fileDriver, driver)}
	}
	for _, v := range p.sortedVolumes() {
		if v.cfg.Kind() != storage.Origin {
			continue
		}
		if err := v.do(ctx, "migrate", func() error { return v.convertFileRevision(ctx) }); err != nil {
			return err
		}
	}
	return nil
}

// sortedVolumes returns the registered volumes by vid.
func (p *reflinkPool) sortedVolumes() []*volume {
	p.mu.Lock()
	defer p.mu.Unlock()
	vols := make([]*volume, 0, len(p.volumes))
	for _, v := range p.volumes {
		vols = append(vols, v)
	}
	slices.SortFunc(vols, func(a, b *volume) int { return strings.Compare(a.cfg.VID, b.cfg.VID) })
	return vols
}

// convertFileRevision turns the file driver's revision of v into one of
// file-reflink's. Needs sem.
func (v *volume) convertFileRevision(ctx context.Context) error {
	old := v.base + fileOldSuffix
	st, err := os.Lstat(old)
	if errors.Is(err, fs.ErrNotExist) || v.keep() <= 0 {
		return nil
	}
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is a %s, not a regular file: %w", old, filepool.FileKind(st.Mode()), storage.ErrUnsafePath)
	}
	if err := checkFiles(v.clean); err != nil {
		return err
	}
	ctime := statCtime(st)
	revs, err := listRevisions(v.clean)
	if err != nil {
		return err
	}
	for _, r := range revs {
		if r.Time.Equal(ctime) {
			return nil // converted by an earlier, interrupted run
		}
	}
	cow, err := os.Open(old)
	if err != nil {
		return err
	}
	defer cow.Close()
	store, err := dmsnap.Read(cow, st.Size())
	if errors.Is(err, dmsnap.ErrInvalidated) {
		v.p.log.Warn().Str("vid", v.cfg.VID).Str("path", old).Msg("the file driver's revision was invalidated by the kernel; it is not kept")
		return nil
	}
	if err != nil {
		return fmt.Errorf("read the file driver's revision %s: %w", old, err)
	}
	dst := revisionPath(v.clean, nextRevision(revs), ctime)
	start := time.Now()
	err = v.restoreInto(ctx, dst, store, cow)
	v.p.logOp("migrate-revision", old, dst, 0, start, err)
	if err != nil {
		return fmt.Errorf("keep the file driver's revision %s: %w", old, err)
	}
	v.p.crashPoint("migrate-revision")
	return nil
}

// restoreInto makes dst a copy of the clean image (a reflink, or a sparse
// copy where the filesystem has none) with store's old chunks applied
// before it is fsynced and renamed into place.
func (v *volume) restoreInto(ctx context.Context, dst string, store *dmsnap.Store, cow *os.File) error {
	return v.p.copy(ctx, v.clean, dst, fsutil.CopyOptions{Size: -1, Edit: func(tmp *os.File) error {
		st, err := tmp.Stat()
		if err != nil {
			return err
		}
		return store.Restore(ctx, tmp, cow, st.Size())
	}})
}

// statCtime is a file's change time, to the second, as Qubes' file driver
// reports its revision (int(os.path.getctime(...))).
func statCtime(st os.FileInfo) time.Time {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return time.Unix(s.Ctim.Sec, 0).UTC()
	}
	return st.ModTime().Truncate(time.Second).UTC()
}

// FinishMigration implements storage.Migrator: it removes every
// NAME-cow.img and NAME-cow.img.old of the tree (the file driver's
// exception stores, which Qubes' manual migration deletes too), in every
// VM directory, registered or not, and the file driver's empty directory
// of running markers. Only regular files are removed; a symlink of such a
// name is ErrUnsafePath.
func (p *reflinkPool) FinishMigration(ctx context.Context, driver string) error {
	if driver != fileDriver {
		return &storage.Error{Op: "finish migration", Pool: p.name,
			Err: fmt.Errorf("%w: file-reflink takes over pools of the %s driver only, not %s", storage.ErrUnsupported, fileDriver, driver)}
	}
	if err := p.begin(); err != nil {
		return &storage.Error{Op: "finish migration", Pool: p.name, Err: err}
	}
	defer p.end()
	for _, sub := range storage.FileVIDDirs() {
		if err := p.removeFileCows(ctx, filepath.Join(p.dir, sub)); err != nil {
			return &storage.Error{Op: "finish migration", Pool: p.name, Err: err}
		}
	}
	if err := checkDirs(filepath.Join(p.dir, fileRunDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return &storage.Error{Op: "finish migration", Pool: p.name, Err: err}
	}
	p.removeEmptyDir(filepath.Join(p.dir, fileRunDir))
	return nil
}

// removeFileCows removes the file driver's stores in the VM directories
// under dir.
func (p *reflinkPool) removeFileCows(ctx context.Context, dir string) error {
	vms, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, vm := range vms {
		if !vm.IsDir() {
			continue
		}
		vmDir := filepath.Join(dir, vm.Name())
		entries, err := os.ReadDir(vmDir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			name := e.Name()
			if !strings.HasSuffix(name, fileCowSuffix) && !strings.HasSuffix(name, fileOldSuffix) {
				continue
			}
			path := filepath.Join(vmDir, name)
			if !e.Type().IsRegular() {
				return fmt.Errorf("%s is a %s, not a regular file: %w", path, filepool.FileKind(e.Type()), storage.ErrUnsafePath)
			}
			if err := p.remove(path); err != nil {
				return err
			}
			p.crashPoint("migrate-cow-removed")
		}
	}
	return nil
}
