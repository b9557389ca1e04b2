package reflink

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/storage"
)

// crashed is the panic value of a simulated crash.
type crashed struct{ point string }

// crashAt makes the pool "crash" the first time it reaches point: the
// operation stops there without any cleanup, the worker drops its queue
// and the pool's lock is released, as if the process had died.
func (tp *testPool) crashAt(t *testing.T, point string, op func()) {
	t.Helper()
	hit := false
	tp.crashHook = func(p string) {
		if p == point && !hit {
			hit = true
			panic(crashed{p})
		}
	}
	func() {
		defer func() {
			r := recover()
			if _, ok := r.(crashed); !ok && r != nil {
				panic(r)
			}
		}()
		op()
	}()
	require.True(t, hit, "the operation never reached %s", point)
	tp.worker.mu.Lock()
	tp.worker.halted = true
	tp.worker.mu.Unlock()
	require.NoError(t, tp.worker.flush(context.Background()))
	tp.mu.Lock()
	tp.closed = true
	require.NoError(t, tp.lock.Unlock())
	tp.lock = nil
	tp.mu.Unlock()
}

// marker reads the 8-byte marker at the start of an image.
func marker(t *testing.T, path string) string {
	t.Helper()
	return strings.TrimRight(readAt(t, path, 0, 8), " ")
}

func mark(t *testing.T, path, m string) { writeAt(t, path, 0, m+strings.Repeat(" ", 8-len(m))) }

// revisionMarkers returns the markers of a volume's revisions, oldest first.
func revisionMarkers(t *testing.T, v *volume) []string {
	t.Helper()
	revs, err := listRevisions(v.clean)
	require.NoError(t, err)
	var out []string
	for _, r := range revs {
		out = append(out, marker(t, r.path))
	}
	return out
}

func noTemps(t *testing.T, tp *testPool) {
	t.Helper()
	for _, f := range tp.tree(t) {
		assert.False(t, fsutil.IsTemp(f), "left over after recovery: %s", f)
	}
}

var privateCfg = storage.VolumeConfig{VID: "appvms/a/private", SaveOnStop: true, RW: true, Size: 1 << 20, RevisionsToKeep: intp(2)}

// committed makes an origin with clean "v3" and revisions "v1", "v2".
func committed(t *testing.T, tp *testPool) *volume {
	t.Helper()
	ctx := context.Background()
	v := tp.volume(t, privateCfg)
	require.NoError(t, v.Create(ctx))
	for _, m := range []string{"v1", "v2", "v3"} {
		require.NoError(t, v.Start(ctx))
		mark(t, v.dirty, m)
		require.NoError(t, v.Stop(ctx))
	}
	require.Equal(t, []string{"v1", "v2"}, revisionMarkers(t, v))
	return v
}

// TestCrashPoints cuts stop, revert, resize, import and start short at each
// step, reopens the pool as a restarted process would, and checks that the
// committed data is the old or the new state, never neither, that no
// revision is lost, and that the next start and stop recover cleanly.
func TestCrashPoints(t *testing.T) {
	mnt := loopfs.Mount(t, loopfs.Btrfs, 320<<20)
	ctx := context.Background()
	type crashCase struct {
		name, point string
		op          func(t *testing.T, v *volume)
		after       func(t *testing.T, v *volume) // on the reopened pool
	}
	var cases []crashCase
	for _, point := range []string{"commit-synced", "revision-linked", "commit-pruned", "precache-discarded", "clean-replaced"} {
		cases = append(cases, crashCase{"stop/" + point, point,
			func(t *testing.T, v *volume) {
				require.NoError(t, v.Start(ctx))
				mark(t, v.dirty, "v4")
				_ = v.Stop(ctx)
			},
			func(t *testing.T, v *volume) {
				want := []string{"v2", "v3"} // after the (repeated) commit
				if exists(v.dirty) {
					assert.Equal(t, "v4", marker(t, v.dirty), "the uncommitted data is resumed")
					assert.Equal(t, "v3", marker(t, v.clean))
				} else {
					assert.Equal(t, "v4", marker(t, v.clean), "the commit is complete")
					assert.Equal(t, want, revisionMarkers(t, v))
					want = []string{"v3", "v4"} // the recovery run below commits once more
				}
				require.NoError(t, v.Start(ctx))
				assert.Equal(t, "v4", marker(t, v.dirty))
				require.NoError(t, v.Stop(ctx))
				assert.Equal(t, "v4", marker(t, v.clean))
				assert.Equal(t, want, revisionMarkers(t, v), "no revision lost or doubled")
			}})
	}
	for _, point := range []string{"commit-synced", "revision-linked", "clean-replaced"} {
		cases = append(cases, crashCase{"import-data-end/" + point, point,
			func(t *testing.T, v *volume) {
				path, err := v.ImportData(ctx, 1<<20)
				require.NoError(t, err)
				mark(t, path, "imp")
				_ = v.ImportDataEnd(ctx, true)
			},
			func(t *testing.T, v *volume) {
				got := marker(t, v.clean)
				assert.Contains(t, []string{"v3", "imp"}, got, "old or new, never neither")
				if got == "imp" {
					assert.Equal(t, []string{"v2", "v3"}, revisionMarkers(t, v))
				} else {
					// A crash after the link leaves the clean image also
					// listed as the newest revision, until the next commit.
					assert.Subset(t, revisionMarkers(t, v), []string{"v1", "v2"})
				}
				require.NoError(t, v.Start(ctx))
				require.NoError(t, v.Stop(ctx))
				assert.Equal(t, got, marker(t, v.clean), "an unfinished import is dropped at start, as in Qubes")
			}})
	}
	for _, point := range []string{"revision-linked", "precache-discarded", "clean-replaced"} {
		cases = append(cases, crashCase{"revert/" + point, point,
			func(t *testing.T, v *volume) { _ = v.Revert(ctx, "2") }, // revision 2 holds "v1"
			func(t *testing.T, v *volume) {
				got := marker(t, v.clean)
				assert.Contains(t, []string{"v3", "v1"}, got)
				all := append(revisionMarkers(t, v), got)
				for _, m := range []string{"v1", "v2", "v3"} {
					assert.Contains(t, all, m, "no state is lost")
				}
				require.NoError(t, v.Start(ctx))
				require.NoError(t, v.Stop(ctx))
				assert.Equal(t, got, marker(t, v.clean))
			}})
	}
	cases = append(cases, crashCase{"resize/resize-copied", "resize-copied",
		func(t *testing.T, v *volume) { _ = v.Resize(ctx, 2<<20, storage.ResizeOptions{}) },
		func(t *testing.T, v *volume) {
			assert.Equal(t, "v3", marker(t, v.clean))
			require.NoError(t, v.Start(ctx))
			n, err := v.Size(ctx)
			require.NoError(t, err)
			assert.EqualValues(t, 2<<20, n, "the new clean image is in place")
			require.NoError(t, v.Stop(ctx))
		}})
	for _, point := range []string{"start-temps-handed-over", "origin-before-copy"} {
		cases = append(cases, crashCase{"start/" + point, point,
			func(t *testing.T, v *volume) {
				require.NoError(t, v.p.Flush(ctx))
				require.NoError(t, os.Remove(v.precache)) // so that start copies
				_ = v.Start(ctx)
			},
			func(t *testing.T, v *volume) {
				require.NoError(t, v.Start(ctx))
				assert.Equal(t, "v3", marker(t, v.dirty))
				require.NoError(t, v.Stop(ctx))
				assert.Equal(t, []string{"v2", "v3"}, revisionMarkers(t, v))
			}})
	}

	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(mnt, "pool"+string(rune('a'+i)))
			tp := openTestPool(t, dir, nil, true)
			v := committed(t, tp)
			require.NoError(t, tp.Flush(ctx))
			tp.crashAt(t, tc.point, func() { tc.op(t, v) })

			tp2 := openTestPool(t, dir, nil, false)
			v2 := tp2.volume(t, privateCfg)
			require.NoError(t, tp2.Flush(ctx))
			tc.after(t, v2)
			noTemps(t, tp2)
		})
	}
}

// TestCrashSnapshotStart: a snapshot's start cut short after its link is
// redone by the next start.
func TestCrashSnapshotStart(t *testing.T) {
	ctx := context.Background()
	tp := newTestPool(t, loopfs.Btrfs, nil)
	tpl := tp.volume(t, storage.VolumeConfig{VID: "vm-templates/t/root", SaveOnStop: true, RW: true, Size: 1 << 20})
	snapCfg := storage.VolumeConfig{VID: "appvms/a/root", SnapOnStart: true, Source: "vm-templates/t/root"}
	snap := tp.volume(t, snapCfg)
	require.NoError(t, tpl.Create(ctx))
	require.NoError(t, tpl.Start(ctx))
	mark(t, tpl.dirty, "tpl")
	require.NoError(t, tpl.Stop(ctx))
	tp.crashAt(t, "snapshot-linked", func() { _ = snap.Start(ctx) })

	tp2 := openTestPool(t, tp.dir, nil, false)
	tp2.volume(t, tpl.Config())
	snap2 := tp2.volume(t, snapCfg)
	require.NoError(t, snap2.Start(ctx))
	assert.Equal(t, "tpl", marker(t, snap2.dirty))
	require.NoError(t, snap2.Stop(ctx))
	noTemps(t, tp2)
	assert.NoFileExists(t, snap2.clean)
}
