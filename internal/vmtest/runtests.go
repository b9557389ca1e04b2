package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vmpool/vmpool/internal/testenv"
)

// EnvRun, when set, is a regular expression: RunTests runs only the in-VM
// tests whose names it matches.
const EnvRun = "VMPOOL_VMTEST_RUN"

// RequireVM skips or fails t (testenv.Need: skip by default, fail under
// VMPOOL_REQUIRE=all) unless a VM can run here: root, QEMU, lvm when
// setup needs it, and the kernel and busybox in the cache (fetched with
// apt on the first call).
func RequireVM(t testing.TB, setup Setup) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommand(t, qemuBinary)
	if setup != SetupNone {
		testenv.RequireCommand(t, "lvm")
	}
	_, err := prepare(t.Context())
	why := ""
	if err != nil {
		why = err.Error()
	}
	testenv.Need(t, err == nil, "vmtest-kernel", "the VM's kernel and busybox: "+why)
}

// RunTests runs the in-VM tests of a package in a VM (see the package
// doc for the convention). It builds the test binary of the current
// directory, the package under test, with `CGO_ENABLED=0 go test -c -tags
// vmtest`, boots a VM with opts and runs the binary there, in the
// package's directory, with -test.v, a -test.run that selects the tests
// of the package's //go:build vmtest files (the untagged tests compiled
// into it ran on the host already), and args after them. The binary's
// output goes to the test log as it comes. t fails when the package has
// no in-VM tests, when the VM fails (with its logs), when the binary
// exits non-zero, prints no PASS line or has no tests to run. One line of
// the log says that the tests ran in the VM, on which kernel and how long
// the build, the boot and the tests took.
//
// VMPOOL_REQUIRE is passed on, so a prerequisite an in-VM test misses
// fails there as it would here; -test.short too. Options.Timeout is cut
// to what is left of the test binary's -timeout less a minute (to report
// the VM's logs), and the in-VM binary's -test.timeout is set a little
// shorter, so that a hung test prints its goroutines before QEMU is
// killed.
func RunTests(t *testing.T, opts Options, args ...string) {
	t.Helper()
	runTests(t, opts, "", args...)
}

// RunPackageTests is RunTests for another package than the current
// directory's: pkg is a package path or a directory as go test takes it,
// and the binary runs in that package's directory.
func RunPackageTests(t *testing.T, opts Options, pkg string, args ...string) {
	t.Helper()
	runTests(t, opts, pkg, args...)
}

func runTests(t *testing.T, opts Options, pkg string, args ...string) {
	t.Helper()
	if InVM() {
		t.Fatalf("vmtest.RunTests called inside the VM: the file that calls it needs //go:build !vmtest")
	}
	RequireVM(t, opts.Setup)
	testenv.RequireCommand(t, "go")
	ctx := t.Context()

	bin := filepath.Join(t.TempDir(), "vm.test")
	start := time.Now()
	build := exec.CommandContext(ctx, "go", "test", "-c", "-tags", "vmtest", "-o", bin)
	if pkg != "" {
		build.Args = append(build.Args, pkg)
	}
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the in-VM tests: %s: %v\n%s", strings.Join(build.Args, " "), err, out)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("build the in-VM tests: %s wrote no test binary (a package without test files?)", strings.Join(build.Args, " "))
	}
	buildTime := time.Since(start)
	dir, names, err := vmTests(ctx, pkg)
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	if opts.Dir == "" {
		opts.Dir = dir
	}
	if len(names) == 0 {
		t.Fatalf("vmtest: no in-VM tests to run: no Test functions in the package's //go:build vmtest files")
	}
	if r := os.Getenv(EnvRun); r != "" {
		re, err := regexp.Compile(r)
		if err != nil {
			t.Fatalf("vmtest: %s: %v", EnvRun, err)
		}
		names = slices.DeleteFunc(names, func(n string) bool { return !re.MatchString(n) })
		if len(names) == 0 {
			t.Skipf("vmtest: no in-VM test matches %s=%q", EnvRun, r)
		}
	}

	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if dl, ok := t.Deadline(); ok && time.Until(dl)-time.Minute < opts.Timeout {
		// Stop the VM while there is time to print its logs.
		opts.Timeout = time.Until(dl) - time.Minute
		if opts.Timeout < time.Minute {
			t.Fatalf("vmtest: only %v left before the test binary's deadline", time.Until(dl).Round(time.Second))
		}
	}
	targs := []string{"-test.v"}
	if inner := opts.Timeout - opts.Timeout/10 - 5*time.Second; inner >= 10*time.Second {
		targs = append(targs, "-test.timeout="+inner.String())
	}
	if testing.Short() {
		targs = append(targs, "-test.short")
	}
	targs = append(targs, "-test.run=^("+strings.Join(names, "|")+")$")
	targs = append(targs, args...)
	if r, ok := os.LookupEnv(testenv.EnvRequire); ok {
		opts.Env = append([]string{testenv.EnvRequire + "=" + r}, opts.Env...)
	}

	out := &lockedWriter{w: t.Output()}
	log, errLog := &testLog{w: out}, &testLog{w: out}
	opts.Stdout, opts.Stderr = log, errLog
	res, err := Run(ctx, opts, append([]string{bin}, targs...)...)
	log.flush()
	errLog.flush()
	if err != nil {
		t.Fatalf("in-VM tests: %v", err)
	}
	t.Logf("the tests ran in a VM: kernel %s, build %.1fs, boot %.1fs, tests %.1fs, VM wall %.1fs",
		res.Kernel, buildTime.Seconds(), res.Boot.Seconds(), res.Command.Seconds(), res.Wall.Seconds())
	switch {
	case res.ExitCode != 0:
		t.Fatalf("in-VM tests exited with status %d", res.ExitCode)
	case log.noTests || errLog.noTests:
		t.Fatalf("in-VM tests: the binary has no tests to run (are the in-VM test files tagged //go:build vmtest?)")
	case !log.pass:
		t.Fatalf("in-VM tests: exit status 0 but no PASS line")
	}
}

// vmTests returns the directory of package pkg ("": the current
// directory's) and the names of the tests in its //go:build vmtest files:
// those of its test files with -tags vmtest that it does not have
// without. Only they run in the VM; the untagged tests, compiled into the
// binary too, run on the host.
func vmTests(ctx context.Context, pkg string) (string, []string, error) {
	list := func(tags ...string) (string, []string, error) {
		args := append([]string{"list"}, tags...)
		args = append(args, "-f", "{{.Dir}}\n{{range .TestGoFiles}}{{.}}\n{{end}}{{range .XTestGoFiles}}{{.}}\n{{end}}")
		if pkg != "" {
			args = append(args, pkg)
		}
		out, err := exec.CommandContext(ctx, "go", args...).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
			}
			return "", nil, fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return lines[0], lines[1:], nil
	}
	dir, tagged, err := list("-tags", "vmtest")
	if err != nil {
		return "", nil, err
	}
	_, untagged, err := list()
	if err != nil {
		return "", nil, err
	}
	var names []string
	fset := token.NewFileSet()
	for _, f := range tagged {
		if slices.Contains(untagged, f) {
			continue
		}
		file, err := parser.ParseFile(fset, filepath.Join(dir, f), nil, parser.SkipObjectResolution)
		if err != nil {
			return "", nil, err
		}
		for _, d := range file.Decls {
			if fn, ok := d.(*ast.FuncDecl); ok && fn.Recv == nil && isTestName(fn.Name.Name) {
				names = append(names, fn.Name.Name)
			}
		}
	}
	return dir, names, nil
}

// isTestName reports whether name is the name of a test function as go
// test sees it: Test, then nothing or not a lower-case letter.
func isTestName(name string) bool {
	rest, ok := strings.CutPrefix(name, "Test")
	if !ok {
		return false
	}
	r, _ := utf8.DecodeRuneInString(rest)
	return name != "TestMain" && (rest == "" || !unicode.IsLower(r))
}

// lockedWriter serialises the writes of the stdout and stderr relays.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// testLog writes one stream of the in-VM binary's output to the test log
// line by line and notes the lines that say how it ended.
type testLog struct {
	mu      sync.Mutex
	w       io.Writer
	buf     []byte
	pass    bool
	noTests bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.line(l.buf[:i+1])
		l.buf = l.buf[i+1:]
	}
	return len(p), nil
}

func (l *testLog) line(b []byte) {
	switch s := strings.TrimRight(string(b), "\n"); {
	case s == "PASS":
		l.pass = true
	case strings.HasPrefix(s, "testing: warning: no tests to run"):
		l.noTests = true
	}
	_, _ = l.w.Write(b)
}

func (l *testLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.line(append(l.buf, '\n'))
		l.buf = nil
	}
}
