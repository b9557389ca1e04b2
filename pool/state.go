package pool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/google/renameio/v2"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// StateFile is the name of the Manager's state file inside its directory.
const StateFile = "state.json"

// stateVersion is the version of the state file this package reads and
// writes. A file of any other version is refused, never rewritten.
const stateVersion = 1

// state is the content of the state file:
//
//	{"version": 1, "id": "5f0c...",
//	 "pools": {"NAME": {"driver": "file-reflink", "params": {"dir_path": "..."}}},
//	 "vms": {"VM": {"volumes": {"private": <storage.VolumeConfig>}}}}
//
// It is the counterpart of the <pools> and <domains> parts of Qubes'
// qubes.xml.
type state struct {
	Version int `json:"version"`
	// ID identifies this state: it is recorded in the directories of its
	// pools as their owner (see storage.PoolConfig.Owner). A state written
	// before it existed gets one at its next save.
	ID    string               `json:"id,omitempty"`
	Pools map[string]poolState `json:"pools"`
	VMs   map[string]vmState   `json:"vms"`
}

// poolState is one pool: its driver and the parameters its Config reports,
// without name and driver.
type poolState struct {
	Driver string            `json:"driver"`
	Params map[string]string `json:"params"`
	// MigratingFrom names the driver the pool was migrated from while the
	// migration's last step (removing that driver's files, see
	// Manager.MigratePool) is not done.
	MigratingFrom string `json:"migrating_from,omitempty"`
}

// vmState is one VM: its volume configurations by volume name.
type vmState struct {
	Volumes map[string]storage.VolumeConfig `json:"volumes"`
}

// readState reads the state file at path and returns it with the file's
// bytes. A missing file is an empty state (and no bytes). Malformed JSON,
// unknown fields and versions other than stateVersion are errors wrapping
// storage.ErrInvalidConfig.
func readState(path string) (*state, []byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &state{Version: stateVersion}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read state: %w", err)
	}
	if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
		return nil, nil, fmt.Errorf("%w: state file %s does not hold a JSON object (it should start with {\"version\": 1, ...)", storage.ErrInvalidConfig, path)
	}
	var probe struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		if te := (*json.UnmarshalTypeError)(nil); errors.As(err, &te) {
			return nil, nil, fmt.Errorf("%w: state file %s: version holds a JSON %s where the number %d belongs", storage.ErrInvalidConfig, path, te.Value, stateVersion)
		}
		return nil, nil, fmt.Errorf("%w: state file %s is not valid JSON: %w", storage.ErrInvalidConfig, path, err)
	}
	switch {
	case probe.Version == nil:
		return nil, nil, fmt.Errorf("%w: state file %s has no version field", storage.ErrInvalidConfig, path)
	case *probe.Version != stateVersion:
		return nil, nil, fmt.Errorf("%w: state file %s has version %d; this vmpool reads version %d only",
			storage.ErrInvalidConfig, path, *probe.Version, stateVersion)
	}
	var st state
	dec := json.NewDecoder(bytes.NewReader(data))
	// An unknown field would be lost by the next save: refuse it.
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			// Say it in JSON's terms, not Go's.
			return nil, nil, fmt.Errorf("%w: state file %s: %s holds a JSON %s where %s belongs",
				storage.ErrInvalidConfig, path, te.Field, te.Value, jsonKind(te.Type.Kind()))
		}
		return nil, nil, fmt.Errorf("%w: state file %s: %w", storage.ErrInvalidConfig, path, err)
	}
	return &st, data, nil
}

// encode returns the state file's bytes: indented JSON, keys sorted (Go
// sorts map keys), ending in a newline.
func (st *state) encode() ([]byte, error) {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// writeState replaces the state file in dir atomically (a temporary file in
// dir, fsynced and renamed over the old one) and fsyncs dir, which renameio
// leaves to its caller.
func writeState(dir string, data []byte) error {
	f, err := renameio.NewPendingFile(filepath.Join(dir, StateFile), renameio.WithTempDir(dir), renameio.WithPermissions(0o600))
	if err != nil {
		return err
	}
	defer f.Cleanup()
	if _, err := f.Write(data); err != nil {
		return err
	}
	crashPoint("state-temp-written")
	// CloseAtomicallyReplace fsyncs the temporary file before its rename.
	if err := f.CloseAtomicallyReplace(); err != nil {
		return err
	}
	crashPoint("state-renamed")
	return fsutil.SyncDir(dir)
}

// removeStateTemps removes the temporary files a writeState killed before
// its rename left in dir (renameio names them ".state.json<digits>"); the
// caller holds the state directory's lock.
func removeStateTemps(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	removed := false
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), "."+StateFile)
		if !ok || rest == "" || strings.Trim(rest, "0123456789") != "" || !e.Type().IsRegular() {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		removed = true
	}
	if removed {
		return fsutil.SyncDir(dir)
	}
	return nil
}

// crashHook, set by tests only, is called at the named points of the
// Manager's multi-step operations (a test kills its process there).
var crashHook func(point string)

// crashPoint calls crashHook, if set.
func crashPoint(point string) {
	if crashHook != nil {
		crashHook(point)
	}
}

// jsonKind names the JSON value that a Go value of kind k is read from.
func jsonKind(k reflect.Kind) string {
	switch k {
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Pointer, reflect.Interface:
		return "a value"
	}
	return "a number"
}
