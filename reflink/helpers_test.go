package reflink

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/loopfs"
	"github.com/vmpool/vmpool/storage"
)

// logBuffer collects a pool's log lines for assertions.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// ops returns the "op" field of each line logged since the last reset,
// leaving out the background worker's, and resets.
func (l *logBuffer) ops(t *testing.T) []string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var ops []string
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		if op, ok := m["op"].(string); ok && m["background"] != true {
			ops = append(ops, op)
		}
	}
	l.buf.Reset()
	return ops
}

// all returns the "op" field of every line logged since the last reset,
// the background worker's included, and resets.
func (l *logBuffer) all(t *testing.T) []string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var ops []string
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		var m map[string]any
		if line != "" && json.Unmarshal([]byte(line), &m) == nil {
			if op, ok := m["op"].(string); ok {
				ops = append(ops, op)
			}
		}
	}
	l.buf.Reset()
	return ops
}

type testPool struct {
	*reflinkPool
	dir string
	log *logBuffer
}

// newTestPool sets up a file-reflink pool in a fresh directory on a
// filesystem of the given type (one mount per test).
func newTestPool(t *testing.T, typ loopfs.Type, params map[string]string) *testPool {
	t.Helper()
	mnt := loopfs.Mount(t, typ, 320<<20)
	return openTestPool(t, filepath.Join(mnt, "pool"), params, true)
}

func openTestPool(t *testing.T, dir string, params map[string]string, setup bool) *testPool {
	t.Helper()
	all := map[string]string{"dir_path": dir}
	for k, v := range params {
		all[k] = v
	}
	lb := &logBuffer{}
	sp, err := Driver{}.Open(context.Background(), storage.PoolConfig{Name: "test", Params: all, Logger: zerolog.New(lb)})
	require.NoError(t, err)
	p := sp.(*reflinkPool)
	t.Cleanup(func() { p.Close() })
	if setup {
		require.NoError(t, p.Setup(context.Background()))
	}
	return &testPool{reflinkPool: p, dir: dir, log: lb}
}

// tree lists the files under the pool directory (relative, sorted), after
// the background work is done.
func (tp *testPool) tree(t *testing.T) []string {
	t.Helper()
	require.NoError(t, tp.Flush(context.Background()))
	var files []string
	require.NoError(t, filepath.WalkDir(tp.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(tp.dir, path)
		if d.IsDir() {
			rel += "/"
		}
		if rel != "./" {
			files = append(files, rel)
		}
		return nil
	}))
	sort.Strings(files)
	return files
}

func intp(n int) *int { return &n }

func (tp *testPool) volume(t *testing.T, cfg storage.VolumeConfig) *volume {
	t.Helper()
	v, err := tp.InitVolume(cfg)
	require.NoError(t, err)
	return v.(*volume)
}

func writeAt(t *testing.T, path string, off int64, data string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	defer f.Close()
	_, err = f.WriteAt([]byte(data), off)
	require.NoError(t, err)
}

func readAt(t *testing.T, path string, off int64, n int) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	b := make([]byte, n)
	_, err = f.ReadAt(b, off)
	require.NoError(t, err)
	return string(b)
}
