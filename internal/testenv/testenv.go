// Package testenv lets tests state what they need from the machine (root,
// a command, a kernel feature) and decides what happens when it is missing.
//
// By default a missing prerequisite skips the test, so `go test ./...` works
// for an unprivileged developer. With VMPOOL_REQUIRE=all in the environment
// (as `make test` and CI set it) a missing prerequisite fails the test
// instead: a green run then proves that the real filesystems, loop devices
// and LVM were exercised. VMPOOL_REQUIRE may also name prerequisites one by
// one, comma-separated (VMPOOL_REQUIRE=root,mkfs.btrfs).
package testenv

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// EnvRequire is the environment variable that turns missing prerequisites
// from skips into failures.
const EnvRequire = "VMPOOL_REQUIRE"

// Required reports whether the prerequisite called what must be present,
// according to VMPOOL_REQUIRE.
func Required(what string) bool {
	for _, w := range strings.Split(os.Getenv(EnvRequire), ",") {
		w = strings.TrimSpace(w)
		if w == "all" || w == what {
			return true
		}
	}
	return false
}

// Need skips or fails t when ok is false: it fails when VMPOOL_REQUIRE
// requires what, and skips otherwise. why says what is missing.
func Need(t testing.TB, ok bool, what, why string) {
	t.Helper()
	if ok {
		return
	}
	if Required(what) {
		t.Fatalf("missing prerequisite %q (required by %s=%s): %s", what, EnvRequire, os.Getenv(EnvRequire), why)
	}
	t.Skipf("missing prerequisite %q: %s (set %s=all to make this a failure)", what, why, EnvRequire)
}

// RequireRoot skips or fails t unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	Need(t, os.Geteuid() == 0, "root", "this test needs root (loop devices, mounts)")
}

// RequireCommand skips or fails t unless every named command is on PATH.
func RequireCommand(t testing.TB, names ...string) {
	t.Helper()
	for _, name := range names {
		_, err := exec.LookPath(name)
		Need(t, err == nil, name, "command "+name+" not found on PATH")
	}
}

// HoldLock makes another process (util-linux flock) take an exclusive
// flock on path and keep it until the returned release is called (or
// the test ends); it returns once the lock is held.
func HoldLock(t testing.TB, path string) (release func()) {
	t.Helper()
	RequireCommand(t, "flock")
	cmd := exec.Command("flock", "-x", path, "-c", "echo locked; read _ || true")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		_ = cmd.Process.Kill()
		t.Fatalf("flock %s: %q, %v", path, line, err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			stdin.Close()
			if err := cmd.Wait(); err != nil {
				t.Errorf("flock %s: %v", path, err)
			}
		})
	}
	t.Cleanup(release)
	return release
}
