package pool

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmpool/vmpool/internal/testenv"
)

// killEnv names the environment variable that makes the test binary a
// child that runs one Manager operation and kills itself (SIGKILL) at a
// crash point.
const killEnv = "VMPOOL_POOL_KILL"

// killJob is what the child does: open the Manager in State and, by Op,
// add the fake pool Pool on PoolDir ("add") or migrate Pool to the target
// driver ("migrate"), dying at Point.
type killJob struct {
	State, Op, Pool, PoolDir, Point string
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(killEnv); spec != "" {
		if err := runKillJob(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		os.Exit(0) // the crash point was never reached
	}
	os.Exit(m.Run())
}

func runKillJob(spec string) error {
	var job killJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		return err
	}
	ctx := context.Background()
	m, err := OpenManager(ctx, job.State, ManagerOptions{})
	if err != nil {
		return err
	}
	crashHook = func(point string) {
		if point == job.Point {
			testenv.KillSelf()
		}
	}
	switch job.Op {
	case "add":
		_, err = m.AddPool(ctx, job.Pool, fakeDriverName, map[string]string{"dir_path": job.PoolDir})
	case "migrate":
		err = m.MigratePool(ctx, job.Pool, targetDriverName, nil)
	default:
		err = fmt.Errorf("unknown op %q", job.Op)
	}
	return err
}

// killAt runs job in a child process and checks that it died by SIGKILL.
func killAt(t *testing.T, job killJob) {
	t.Helper()
	spec, err := json.Marshal(job)
	require.NoError(t, err)
	testenv.RunKilled(t, "at "+job.Point, killEnv+"="+string(spec))
}

// TestKilledStateWrite: a process killed (SIGKILL) after writing the state
// file's temporary file but before renaming it leaves the previous state
// file, byte for byte, and the next OpenManager reads it and removes the
// temporary file; killed right after the rename, the new state is read.
func TestKilledStateWrite(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	state := filepath.Join(base, "state")
	m, err := OpenManager(ctx, state, ManagerOptions{})
	require.NoError(t, err)
	_, err = m.AddPool(ctx, "first", fakeDriverName, map[string]string{"dir_path": filepath.Join(base, "first")})
	require.NoError(t, err)
	require.NoError(t, m.Close())
	before, err := os.ReadFile(filepath.Join(state, StateFile))
	require.NoError(t, err)

	killAt(t, killJob{State: state, Op: "add", Pool: "second", PoolDir: filepath.Join(base, "second"), Point: "state-temp-written"})
	after, err := os.ReadFile(filepath.Join(state, StateFile))
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after), "the state file is the previous one")
	assert.Len(t, stateTemps(t, state), 1, "the killed write left its temporary file, with the new state in it")

	m, err = OpenManager(ctx, state, ManagerOptions{})
	require.NoError(t, err)
	assert.Equal(t, []string{"first"}, poolNames(m))
	assert.Empty(t, stateTemps(t, state), "OpenManager removed the temporary file")
	require.NoError(t, m.Close())

	killAt(t, killJob{State: state, Op: "add", Pool: "second", PoolDir: filepath.Join(base, "second"), Point: "state-renamed"})
	m, err = OpenManager(ctx, state, ManagerOptions{})
	require.NoError(t, err)
	assert.Equal(t, []string{"first", "second"}, poolNames(m), "killed after the rename: the new state")
	require.NoError(t, m.Close())
}

// stateTemps lists renameio's temporary files in the state directory.
func stateTemps(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "."+StateFile) {
			out = append(out, e.Name())
		}
	}
	return out
}

func poolNames(m *Manager) []string {
	var names []string
	for _, p := range m.Pools() {
		names = append(names, p.Name())
	}
	return names
}
