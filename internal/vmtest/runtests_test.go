package vmtest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/testenv"
)

// TestVMTests checks that RunTests selects exactly the tests of this
// package's //go:build vmtest file.
func TestVMTests(t *testing.T) {
	testenv.RequireCommand(t, "go")
	dir, names, err := vmTests(t.Context(), "")
	require.NoError(t, err)
	wd, err := os.Getwd()
	require.NoError(t, err)
	assert.Equal(t, wd, dir)
	assert.Equal(t, []string{"TestVMEnvironment", "TestDMTargets", "TestThinPool", "TestLoopDevice", "TestChildExit"}, names)

	dir, names, err = vmTests(t.Context(), "./testdata/consumer")
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(wd, "testdata", "consumer"), dir)
	assert.Equal(t, []string{"TestAnswerInVM"}, names)

	dir, names, err = vmTests(t.Context(), "github.com/vmpool/vmpool/internal/testenv")
	require.NoError(t, err)
	assert.NotEqual(t, wd, dir)
	assert.Empty(t, names)
}

func TestIsTestName(t *testing.T) {
	for name, want := range map[string]bool{
		"Test": true, "TestX": true, "Test_x": true, "Test1": true,
		"Testx": false, "TestMain": false, "testX": false, "BenchmarkX": false,
	} {
		assert.Equal(t, want, isTestName(name), name)
	}
}

func TestTestLog(t *testing.T) {
	var out lockedWriter
	var sink testWriter
	out.w = &sink
	l := &testLog{w: &out}
	for _, chunk := range []string{"=== RUN   TestA\n--- PA", "SS: TestA (0.00s)\nPA", "SS\n", "tail"} {
		_, err := l.Write([]byte(chunk))
		require.NoError(t, err)
	}
	assert.True(t, l.pass)
	assert.False(t, l.noTests)
	assert.Equal(t, []string{"=== RUN   TestA\n", "--- PASS: TestA (0.00s)\n", "PASS\n"}, sink.lines)
	l.flush()
	assert.Equal(t, "tail\n", sink.lines[3])

	l = &testLog{w: &out}
	_, _ = l.Write([]byte("testing: warning: no tests to run\nPASS x\n"))
	assert.True(t, l.noTests)
	assert.False(t, l.pass, "only a line that is exactly PASS counts")
}

type testWriter struct{ lines []string }

func (w *testWriter) Write(p []byte) (int, error) {
	w.lines = append(w.lines, string(p))
	return len(p), nil
}
