package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/loopfs"
)

// testChunk is chunk i of the data TestRunInterruptedClose writes: a
// pattern numbered with i, so that a chunk in the wrong place shows.
func testChunk(base []byte, i int) []byte {
	binary.BigEndian.PutUint64(base, uint64(i)+1)
	return base
}

// TestRunInterruptedClose interrupts vmpoolctl while it waits at exit for
// the precache copy of a commit, a sparse copy of seconds on a filesystem
// without reflinks: it ends by SIGINT within 2 s, and the commit it made
// is durable (the next vm start runs on the data).
func TestRunInterruptedClose(t *testing.T) {
	const (
		size  = 2560 << 20
		chunk = 1 << 20
		// 2 GiB: the copy writes to the page cache for more than a second
		// here, then fsyncs for as long; a process cannot end before its
		// fsync returns (see closeWait).
		written = 2048
	)
	dir := t.TempDir()
	if ok, err := fsutil.ReflinkSupported(dir); err != nil || ok {
		// A clone would make the precache at once.
		dir = loopfs.Mount(t, loopfs.Ext4, 6<<30)
	}
	dir = filepath.Join(dir, "pool")
	state := filepath.Join(t.TempDir(), "state")
	private := filepath.Join(dir, "appvms/work/private")
	ok(t, state, "pool", "add", "p", "file-reflink", "dir_path="+dir, "setup_check=no")
	ok(t, state, "volume", "create", "p", "appvms/work/private", "--size", "2560MiB", "--rw", "--save-on-stop")
	ok(t, state, "vm", "start", "work")
	base := bytes.Repeat([]byte("vmpool interrupted close test data\n"), chunk/35+1)[:chunk]
	f, err := os.OpenFile(private+"-dirty.img", os.O_WRONLY, 0)
	require.NoError(t, err)
	for i := range written {
		_, err := f.Write(testChunk(base, i))
		require.NoError(t, err)
	}
	// Written back now, so that the fsyncs of the stop's commit do not
	// wait for it after the step the test waits for.
	require.NoError(t, f.Sync())
	require.NoError(t, f.Close())

	cmd := vmpoolctlCommand(t, state, "-v", "vm", "stop", "work")
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	kill := time.AfterFunc(5*time.Minute, func() { _ = cmd.Process.Kill() })
	defer kill.Stop()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// The commit's last step: the dirty image becomes the clean one. Then
	// vmpoolctl saves and waits for the precache copy the commit queued.
	committed := "op=rename pool=p src=" + private + "-dirty.img"
	var log []string
	for line := range lines {
		log = append(log, line)
		if strings.Contains(line, committed) {
			break
		}
	}
	require.Contains(t, strings.Join(log, "\n"), committed)
	sent := time.Now()
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	for line := range lines {
		log = append(log, line)
	}
	err = cmd.Wait()
	elapsed := time.Since(sent)
	t.Logf("vmpoolctl ended %v after SIGINT", elapsed)
	assert.Less(t, elapsed, 2*time.Second)
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	ws := exit.Sys().(syscall.WaitStatus)
	assert.True(t, ws.Signaled() && ws.Signal() == syscall.SIGINT, "vmpoolctl ends by the signal: %v", err)
	stderrText := strings.Join(log, "\n")
	// The copy is dropped from the queue or cancelled while it runs
	// (Manager.CancelBackground) and removes its temporary file; only a
	// copy caught in its final fsync is left behind, with a message saying
	// so.
	assert.True(t, strings.HasSuffix(stderrText, "\nvmpoolctl: SIGINT received: the operation was done"), "%s", stderrText)
	assert.NoFileExists(t, private+"-precache.img", "the precache copy was cut short")
	if !strings.Contains(stderrText, "ending without waiting") {
		temps, err := filepath.Glob(filepath.Join(dir, "appvms/work/*~*"))
		require.NoError(t, err)
		assert.Empty(t, temps, "a cancelled copy removes its temporary file")
	}

	start := time.Now()
	ok(t, state, "vm", "start", "work")
	t.Logf("the next vm start took %v (it waits for the precache copy its open queued)", time.Since(start))
	temps, err := filepath.Glob(filepath.Join(dir, "appvms/work/*~*"))
	require.NoError(t, err)
	assert.Empty(t, temps, "the half-made precache is removed")
	img, err := os.Open(private + "-dirty.img")
	require.NoError(t, err)
	defer img.Close()
	got, zero := make([]byte, chunk), make([]byte, chunk)
	for i := range size / chunk {
		_, err := io.ReadFull(img, got)
		require.NoError(t, err)
		want := zero
		if i < written {
			want = testChunk(base, i)
		}
		require.True(t, bytes.Equal(want, got), "chunk %d of the committed data", i)
	}
}
