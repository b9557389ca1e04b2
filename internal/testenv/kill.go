package testenv

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// KillSelf ends the process with SIGKILL, as a crash would: no deferred
// function, no cleanup, no flush runs. A test child calls it at a crash
// point.
func KillSelf() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal ends the process
}

// RunKilled runs the test binary again as a child with env (NAME=VALUE
// entries added to this process's environment) and no test selected, so
// that the package's TestMain does the child's work, and checks that the
// child died by SIGKILL (KillSelf) rather than ending on its own.
func RunKilled(t testing.TB, what string, env ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("the child did not fail (%s): %v\n%s", what, err, out)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the child was not killed (%s): %v\n%s", what, err, out)
	}
}
