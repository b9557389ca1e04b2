// Package ownerfile records which keeper (a pool.Manager's state) owns a
// pool directory, so that a second keeper cannot take it over by accident:
// two state directories adding pools on the same directory would otherwise
// both create, and delete, the same volumes. The record is a small JSON
// file in the pool's directory that Qubes' drivers ignore.
package ownerfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// Name is the record's file name inside a pool directory.
const Name = ".vmpool-owner"

// Check returns nil when dir records no owner, or records owner (the same
// ID). A directory recorded for another owner is an error wrapping
// storage.ErrInUse that names that owner and says how to adopt it; an
// empty owner ID checks nothing.
func Check(dir string, owner storage.PoolOwner) error {
	if owner.ID == "" {
		return nil
	}
	rec, err := Read(dir)
	if err != nil || rec == nil || rec.ID == owner.ID {
		return err
	}
	return fmt.Errorf("directory %s belongs to %s (recorded in %s); adopt it explicitly to take it over: %w",
		dir, rec.Desc, filepath.Join(dir, Name), storage.ErrInUse)
}

// Read returns the owner dir records, or nil when it records none.
func Read(dir string) (*storage.PoolOwner, error) {
	path := filepath.Join(dir, Name)
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file: %w", path, storage.ErrUnsafePath)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rec storage.PoolOwner
	if err := json.Unmarshal(data, &rec); err != nil || rec.ID == "" {
		return nil, fmt.Errorf("%w: owner record %s is malformed; remove it to release the directory", storage.ErrInvalidConfig, path)
	}
	return &rec, nil
}

// Record makes owner the recorded owner of dir, durably (a temporary file
// renamed over the record, the directory fsynced). An empty owner ID
// records nothing.
func Record(dir string, owner storage.PoolOwner) error {
	if owner.ID == "" {
		return nil
	}
	data, err := json.Marshal(owner)
	if err != nil {
		return err
	}
	if err := renameio.WriteFile(filepath.Join(dir, Name), append(data, '\n'), 0o644, renameio.WithTempDir(dir)); err != nil {
		return err
	}
	return fsutil.SyncDir(dir)
}
