package reflink

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
	"github.com/vmpool/vmpool/storage"
)

// killEnv names the environment variable that makes the test binary a
// child that runs one operation and kills itself at a crash point.
const killEnv = "VMPOOL_REFLINK_KILL"

// killJob is what the child does: open the pool in Dir, register Config,
// and run Op, sending itself SIGKILL when the pool reaches Point.
type killJob struct {
	Dir    string
	Config storage.VolumeConfig
	Op     string // "revert" or "import"
	Point  string
	Marker string // import: the data to import
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
	sp, err := Driver{}.Open(ctx, storage.PoolConfig{Name: job.Config.Pool, Params: map[string]string{"dir_path": job.Dir, "setup_check": "no"}})
	if err != nil {
		return err
	}
	p := sp.(*reflinkPool)
	p.crashHook = func(point string) {
		if point == job.Point {
			testenv.KillSelf()
		}
	}
	v, err := p.InitVolume(job.Config)
	if err != nil {
		return err
	}
	switch job.Op {
	case "revert":
		return v.Revert(ctx, "")
	case "import":
		path, err := v.ImportData(ctx, job.Config.Size)
		if err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(job.Marker), 0o600); err != nil {
			return err
		}
		if err := os.Truncate(path, job.Config.Size); err != nil {
			return err
		}
		return v.ImportDataEnd(ctx, true)
	}
	return fmt.Errorf("unknown op %q", job.Op)
}

// killAt runs job in a child process of the test binary and checks that
// it died by SIGKILL at job.Point.
func killAt(t *testing.T, job killJob) {
	t.Helper()
	spec, err := json.Marshal(job)
	require.NoError(t, err)
	testenv.RunKilled(t, "at "+job.Point, killEnv+"="+string(spec))
}

// TestKilledRevertRetried: a revert killed (a real process, SIGKILL)
// between its hard link of the current image and its rename leaves a
// revision that is a second name of the current image; the retried revert
// restores the target's content. An import killed at the same step leaves
// the data as it was, and a revert then goes to the state before it.
func TestKilledRevertRetried(t *testing.T) {
	// Revert's steps before its rename: the current image linked as a
	// revision, then the old precache discarded.
	for _, point := range []string{"revision-linked", "precache-discarded"} {
		t.Run(point, func(t *testing.T) { testKilledRevert(t, point) })
	}
}

func testKilledRevert(t *testing.T, point string) {
	ctx := t.Context()
	dir := filepath.Join(t.TempDir(), "pool")
	tp := openTestPool(t, dir, map[string]string{"setup_check": "no"}, true)
	keep := 3
	cfg := storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 1 << 20, RevisionsToKeep: &keep}
	v := tp.volume(t, cfg)
	require.NoError(t, v.Create(ctx))
	for _, m := range []string{"A", "B"} {
		require.NoError(t, v.Start(ctx))
		mark(t, v.dirty, m)
		require.NoError(t, v.Stop(ctx))
	}
	require.Equal(t, "B", marker(t, v.clean))
	require.NoError(t, tp.Close())

	killAt(t, killJob{Dir: dir, Config: v.Config(), Op: "revert", Point: point})
	tp2 := openTestPool(t, dir, map[string]string{"setup_check": "no"}, false)
	v2 := tp2.volume(t, v.Config())
	assert.Equal(t, "B", marker(t, v2.clean), "the killed revert changed nothing yet")
	require.NoError(t, v2.Revert(ctx, ""), "the retried revert")
	assert.Equal(t, "A", marker(t, v2.clean), "the retried revert restores the target")
	empty := strings.Repeat("\x00", 8) // the image Create made
	assert.Equal(t, []string{empty, "B"}, revisionMarkers(t, v2), "B is kept once, as a revision")
	require.NoError(t, tp2.Close())

	killAt(t, killJob{Dir: dir, Config: v.Config(), Op: "import", Point: point, Marker: "IMPORT"})
	tp3 := openTestPool(t, dir, map[string]string{"setup_check": "no"}, false)
	v3 := tp3.volume(t, v.Config())
	assert.Equal(t, "A", marker(t, v3.clean), "the killed import changed nothing")
	require.NoError(t, v3.Revert(ctx, ""))
	assert.Equal(t, "B", marker(t, v3.clean), "a revert after the killed import goes to the state before A")
	require.NoError(t, v3.Start(ctx))
	require.NoError(t, v3.Stop(ctx))
	noTemps(t, tp3)
}
