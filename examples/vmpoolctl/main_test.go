package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/ownerfile"
)

// mainEnv makes the test binary run vmpoolctl's main instead of the tests,
// so that a test can run vmpoolctl as a process of its own (see
// vmpoolctlCommand).
const mainEnv = "VMPOOLCTL_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		main() // exits
	}
	os.Exit(m.Run())
}

// vmpoolctlCommand returns the command that runs vmpoolctl with --state
// state and args as a process: this test binary, made vmpoolctl by
// mainEnv.
func vmpoolctlCommand(t *testing.T, state string, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, append([]string{"--state", state}, args...)...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	return cmd
}

// result is what one vmpoolctl run printed and returned.
type result struct {
	stdout, stderr string
	code           int
}

// ctl runs vmpoolctl with --state state and args, in-process.
func ctl(t *testing.T, state string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"--state", state}, args...), &out, &errb)
	return result{out.String(), errb.String(), code}
}

// ok runs vmpoolctl and requires it to succeed.
func ok(t *testing.T, state string, args ...string) string {
	t.Helper()
	r := ctl(t, state, args...)
	require.Equal(t, exitOK, r.code, "vmpoolctl %s: %s", strings.Join(args, " "), r.stderr)
	return r.stdout
}

// okJSON runs vmpoolctl --json and decodes its document into v.
func okJSON(t *testing.T, state string, v any, args ...string) {
	t.Helper()
	out := ok(t, state, append([]string{"--json"}, args...)...)
	require.NoError(t, json.Unmarshal([]byte(out), v), out)
}

func TestRunUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{nil, exitUsage, "usage: vmpoolctl"},
		{[]string{"--bogus"}, exitUsage, "flag provided but not defined: -bogus"},
		{[]string{"nope"}, exitUsage, `unknown command "nope"`},
		{[]string{"pool"}, exitUsage, "pool: missing subcommand (add, list, info, default, remove, set, migrate, drivers, import-qubes-xml)"},
		{[]string{"pool", "nope"}, exitUsage, `pool: unknown subcommand "nope"`},
		{[]string{"pool", "info"}, exitUsage, "pool info: wrong number of arguments (0)\nusage: vmpoolctl pool info NAME"},
		{[]string{"pool", "list", "x"}, exitUsage, "wrong number of arguments"},
		{[]string{"pool", "add", "p"}, exitUsage, "wrong number of arguments"},
		{[]string{"pool", "add", "p", "file-reflink", "dir_path"}, exitUsage, `pool parameter "dir_path": want key=value`},
		{[]string{"pool", "add", "p", "file-reflink", "a=1", "a=2"}, exitUsage, "given twice"},
		{[]string{"pool", "set", "p", "revisions_to_keep"}, exitUsage, "pool set: wrong number of arguments (2)\nusage: vmpoolctl pool set NAME KEY VALUE"},
		{[]string{"volume", "create", "p", "appvms/w/private", "--size", "1G", "--bogus"}, exitUsage, "flag provided but not defined: -bogus"},
		{[]string{"volume", "create", "p", "appvms/../private", "--size", "1G"}, exitUsage, "has a .. part"},
		{[]string{"volume", "create", "p", "/appvms/w/private", "--size", "1G"}, exitUsage, "starts with /"},
		{[]string{"volume", "create", "p", "appvms/w/pri\x00vate", "--size", "1G"}, exitUsage, "NUL"},
		{[]string{"volume", "create", "p", "appvms//private", "--size", "1G"}, exitUsage, "empty part"},
		{[]string{"volume", "create", "p", "appvms/1w/private", "--size", "1G"}, exitUsage, "must start with a letter"},
		{[]string{"volume", "create", "p", "appvms/w/private"}, exitUsage, "--size is required"},
		{[]string{"volume", "create", "p", "appvms/w/private", "--size", "-1"}, exitUsage, "is negative"},
		{[]string{"volume", "create", "p", "appvms/w/private", "--size", "1Q"}, exitUsage, "not a whole number"},
		{[]string{"volume", "create", "p", "appvms/w/private", "--size", "1G", "--volatile", "--save-on-stop"}, exitUsage, "--volatile excludes"},
		{[]string{"volume", "create", "p", "appvms/w/root", "--snap-on-start"}, exitUsage, "--snap-on-start needs --source"},
		{[]string{"volume", "create", "p", "appvms/w/root", "--size", "1G", "--source", "vm-templates/t/root"}, exitUsage, "--source needs --snap-on-start"},
		{[]string{"volume", "create", "p", "appvms/w/root", "--snap-on-start", "--source", "vm-templates/t/../root"}, exitUsage, "--source: invalid configuration"},
		{[]string{"volume", "create", "p", "appvms/w/private", "--size", "1G", "--revisions-to-keep", "x"}, exitUsage, "not an integer"},
		{[]string{"volume", "resize", "p", "appvms/w/private", "10Q"}, exitUsage, `size "10Q"`},
		{[]string{"volume", "resize", "p", "appvms/w/private"}, exitUsage, "wrong number of arguments"},
		{[]string{"volume", "resize", "p", "appvms/w/private", "-1"}, exitUsage, "is negative"},
		{[]string{"volume", "revert", "p", "appvms/w/private", "../1"}, exitUsage, "revision id"},
		{[]string{"volume", "info", "p", "appvms/w"}, exitUsage, "three parts"},
		{[]string{"volume", "config", "p", "appvms/w/private", "rw"}, exitUsage, "volume config: wrong number of arguments (3)\nusage: vmpoolctl volume config POOL VID KEY VALUE"},
		{[]string{"volume", "config", "p", "appvms/w/private", "size", "1G"}, exitUsage, `unknown volume property "size" (valid keys: revisions_to_keep, rw, ephemeral, source)`},
		{[]string{"volume", "config", "p", "appvms/w/private", "revisions_to_keep", "-2"}, exitUsage, `revisions_to_keep "-2": want an integer of at least -1`},
		{[]string{"volume", "config", "p", "appvms/w/private", "revisions_to_keep", "1.5"}, exitUsage, `revisions_to_keep "1.5": want an integer`},
		{[]string{"volume", "config", "p", "appvms/w/private", "rw", "maybe"}, exitUsage, `rw: invalid configuration: "maybe" is not a boolean (yes/no, true/false, on/off, 1/0)`},
		{[]string{"volume", "config", "p", "appvms/w/volatile", "ephemeral", ""}, exitUsage, `ephemeral: invalid configuration: "" is not a boolean`},
		{[]string{"volume", "config", "p", "appvms/w/root", "source", "vm-templates/t/../root"}, exitUsage, "source: invalid configuration"},
		{[]string{"volume", "config", "p", "appvms/../private", "rw", "yes"}, exitUsage, "has a .. part"},
		{[]string{"vm", "start", "1bad"}, exitUsage, "must start with a letter"},
		{[]string{"vm", "stop"}, exitUsage, "wrong number of arguments"},
		{[]string{"volume", "import", "p", "appvms/w/private", "/nonexistent"}, exitFailed, "no such file"},
		{[]string{"volume", "import", "p", "appvms/w/private", "/"}, exitUsage, "not a regular file"},
	} {
		state := filepath.Join(t.TempDir(), "state")
		r := ctl(t, state, tc.args...)
		assert.Equal(t, tc.code, r.code, "%q: %s", tc.args, r.stderr)
		assert.Contains(t, r.stderr, tc.msg, "%q", tc.args)
		assert.Empty(t, r.stdout, "%q", tc.args)
		assert.NoDirExists(t, state, "%q: bad input does not even create the state directory", tc.args)
	}
}

func TestRunHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		r := ctl(t, t.TempDir(), args...)
		assert.Equal(t, exitOK, r.code)
		assert.Contains(t, r.stdout, "volume create POOL VID")
	}
	r := ctl(t, t.TempDir(), "volume", "resize", "-h")
	assert.Equal(t, exitOK, r.code)
	assert.Contains(t, r.stdout, "usage: vmpoolctl volume resize POOL VID SIZE [--force]")
	assert.Contains(t, r.stdout, "-force")
	for _, tc := range [][]string{
		{"volume", "config", "-h", "usage: vmpoolctl volume config POOL VID KEY VALUE\n\nchange a volume's revisions_to_keep"},
		{"pool", "set", "-h", "usage: vmpoolctl pool set NAME KEY VALUE\n\nchange a pool's parameter"},
		{"pool", "add", "-h", "usage: vmpoolctl pool add NAME DRIVER [key=value...] [--adopt]\n"},
		{"pool", "add", "-h", "\n  -adopt\n    \ttake over a directory recorded as a pool of another state directory"},
		{"volume", "create", "-h", " [--revisions-to-keep N] [--replace]\n"},
		{"volume", "create", "-h", "\n  -replace\n    \tdelete the images and revisions VID has on disk first"},
		{"pool", "remove", "-h", "usage: vmpoolctl pool remove NAME [--force]\n\nremove a pool no volume uses (its files stay); " +
			"--force removes one that volumes use: it forgets those volumes and leaves their images and revisions on disk\n"},
		{"pool", "remove", "-h", "\n  -force\n    \tremove the pool even though volumes use it: forget those volumes"},
	} {
		r := ctl(t, t.TempDir(), tc[:3]...)
		assert.Equal(t, exitOK, r.code, "%q", tc[:3])
		assert.Contains(t, r.stdout, tc[3], "%q", tc[:3])
	}
}

// TestRunHelpExitStatus: the help lists every exit status.
func TestRunHelpExitStatus(t *testing.T) {
	out := ok(t, t.TempDir(), "help")
	for code, text := range map[int]string{
		exitOK:       "success",
		exitFailed:   "the operation failed",
		exitUsage:    "bad usage or bad input; nothing was changed",
		exitNotSaved: "the operation was done, but the state could not be saved",
	} {
		assert.Contains(t, out, fmt.Sprintf("\n  %d  %s", code, text))
	}
	assert.Contains(t, out, "ends by the signal (a shell shows 130 or 143)")
}

// TestRunEmptyState: an empty --state is a usage error that says so (it
// was "open pool manager: mkdir : no such file or directory"), and nothing
// is made in the working directory.
func TestRunEmptyState(t *testing.T) {
	wd := t.TempDir()
	t.Chdir(wd)
	for _, args := range [][]string{
		{"--state", "", "pool", "list"},
		{"--state=", "vm", "start", "work"},
		{"pool", "add", "p", "file-reflink", "dir_path=" + filepath.Join(t.TempDir(), "pool"), "--state", ""},
		{"--json", "--state", "", "volume", "info", "p", "appvms/work/private"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), args, &out, &errb)
		assert.Equal(t, exitUsage, code, "%q", args)
		assert.Equal(t, "vmpoolctl: --state is empty: give the state directory, or leave --state out for $VMPOOL_STATE, else /var/lib/vmpool\n",
			errb.String(), "%q", args)
		if args[0] == "--json" {
			var doc errorDoc
			require.NoError(t, json.Unmarshal(out.Bytes(), &doc), out.String())
			assert.Equal(t, "usage", doc.Kind)
		} else {
			assert.Empty(t, out.String(), "%q", args)
		}
	}
	entries, err := os.ReadDir(wd)
	require.NoError(t, err)
	assert.Empty(t, entries)
}

// TestRunPoolAddHeldDirectory adds a pool on the directory of pool p, by
// its path, with a trailing slash, through a symlink, and on the state
// directory: each is refused at once with an error naming what the
// directory is (before the Manager checked, the add waited for the lock it
// holds itself), and the state stays as it was.
func TestRunPoolAddHeldDirectory(t *testing.T) {
	state, dir := addPool(t)
	link := filepath.Join(t.TempDir(), "link")
	require.NoError(t, os.Symlink(dir, link))
	for _, tc := range []struct{ dir, msg string }{
		{dir, "directory " + dir + " is already pool p"},
		{dir + "/", "directory " + dir + "/ is already pool p"},
		{link, "directory " + link + " is already pool p"},
		{state, "directory " + state + " is the state directory of this pool manager"},
	} {
		start := time.Now()
		refuseJSON(t, state, exitFailed, "exists", tc.msg, "pool", "add", "q", "file-reflink", "dir_path="+tc.dir, "setup_check=no")
		assert.Less(t, time.Since(start), time.Second, "%s is refused at once", tc.dir)
	}
	assert.Equal(t, "NAME  DRIVER\np     file-reflink\n", ok(t, state, "pool", "list"))
}

func TestRunJSONErrors(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	for _, tc := range []struct {
		args       []string
		code       int
		kind, text string
	}{
		{[]string{"--json", "volume", "create", "p", "appvms/../x", "--size", "1G"}, exitUsage, "invalid_config", "has a .. part"},
		{[]string{"--json", "pool", "nope"}, exitUsage, "usage", "unknown subcommand"},
		// Global flags may follow the command and its arguments.
		{[]string{"volume", "info", "p", "appvms/work/private", "--json"}, exitFailed, "not_found", `no pool "p"`},
		{[]string{"pool", "remove", "p", "--json"}, exitFailed, "not_found", "remove pool p"},
		{[]string{"vm", "start", "work", "--json"}, exitFailed, "not_found", `no VM "work"`},
	} {
		r := ctl(t, state, tc.args...)
		assert.Equal(t, tc.code, r.code, "%q", tc.args)
		var doc errorDoc
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &doc), "%q: %s", tc.args, r.stdout)
		assert.Equal(t, tc.kind, doc.Kind, "%q", tc.args)
		assert.Contains(t, doc.Error, tc.text, "%q", tc.args)
		assert.Contains(t, r.stderr, tc.text, "%q: the error is on stderr too", tc.args)
	}
}

func TestRunStateFromEnvironment(t *testing.T) {
	state := filepath.Join(t.TempDir(), "env-state")
	t.Setenv("VMPOOL_STATE", state)
	var out, errb bytes.Buffer
	require.Equal(t, exitOK, run(context.Background(), []string{"--json", "vm", "list"}, &out, &errb), errb.String())
	assert.JSONEq(t, `[]`, out.String())
	assert.DirExists(t, state)
}

func TestRunPoolDrivers(t *testing.T) {
	out := ok(t, t.TempDir(), "pool", "drivers")
	assert.Regexp(t, `(?m)^file-reflink\n  revisions_to_keep +.*\n  dir_path \(required\) +.*\n  setup_check +.*\n  ephemeral_volatile +.*$`, out)
	var docs []driverDoc
	okJSON(t, t.TempDir(), &docs, "pool", "drivers")
	require.NotEmpty(t, docs)
	var names []string
	for _, d := range docs {
		if d.Driver == "file-reflink" {
			for _, p := range d.Parameters {
				names = append(names, p.Name)
				assert.Equal(t, p.Name == "dir_path", p.Required, p.Name)
			}
		}
	}
	assert.Equal(t, []string{"revisions_to_keep", "dir_path", "setup_check", "ephemeral_volatile"}, names)
}

// TestRunSetupCheck adds a file-reflink pool on the test's temporary
// directory, which is usually ext4 (no reflinks): refused with a message
// that names setup_check, and nothing saved.
func TestRunSetupCheck(t *testing.T) {
	dir := t.TempDir()
	if ok, err := fsutil.ReflinkSupported(dir); err != nil || ok {
		t.Skipf("the temporary directory's filesystem supports reflinks (%v)", err)
	}
	state := filepath.Join(t.TempDir(), "state")
	r := ctl(t, state, "pool", "add", "p", "file-reflink", "dir_path="+filepath.Join(dir, "pool"))
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stderr, "setup_check")
	assert.NoFileExists(t, filepath.Join(state, "state.json"))
	assert.NoDirExists(t, filepath.Join(dir, "pool"), "the pool directory it made is removed again")
}

// TestRunSparseFallback runs the commands against a file-reflink pool with
// setup_check=no on the test's temporary directory: no root needed, copies
// fall back to sparse copies where the filesystem has no reflinks.
func TestRunSparseFallback(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	dir := filepath.Join(t.TempDir(), "pool")
	ok(t, state, "pool", "add", "p", "file-reflink", "dir_path="+dir, "setup_check=no", "revisions_to_keep=2")
	assert.Equal(t, "NAME  DRIVER\np     file-reflink\n", ok(t, state, "pool", "list"))
	info := ok(t, state, "pool", "info", "p")
	assert.Regexp(t, `^name=p\ndir_path=`+regexp.QuoteMeta(dir)+`\ndriver=file-reflink\nephemeral_volatile=False\nrevisions_to_keep=2\nsize=\d+\nusage=\d+\n$`, info)

	ok(t, state, "volume", "create", "p", "vm-templates/fedora/root", "--size", "4MiB", "--rw", "--save-on-stop")
	var created volumeDoc
	okJSON(t, state, &created, "volume", "create", "p", "appvms/work/root", "--snap-on-start", "--source", "vm-templates/fedora/root", "--rw")
	assert.EqualValues(t, 4<<20, created.Size, "a snapshot's size defaults to its source's")
	assert.Equal(t, "work", created.VM)
	ok(t, state, "volume", "create", "--rw", "p", "--save-on-stop", "appvms/work/private", "--size=2M", "--revisions-to-keep", "-1")
	ok(t, state, "volume", "create", "p", "appvms/work/volatile", "--size", "1MiB", "--rw", "--volatile")

	assert.Equal(t, "NAME    STATE   VOLUMES\n"+
		"fedora  Halted  p:vm-templates/fedora/root\n"+
		"work    Halted  p:appvms/work/private p:appvms/work/root p:appvms/work/volatile\n", ok(t, state, "vm", "list"))
	var vm vmDoc
	okJSON(t, state, &vm, "vm", "start", "work")
	assert.Equal(t, "Running", vm.State)
	assert.Len(t, vm.Volumes, 3)

	assert.Equal(t, "pool=p\nvid=appvms/work/private\nsize=2000000\nusage=0\nrw=True\nsource=\npath="+dir+"/appvms/work/private-dirty.img\n"+
		"save_on_stop=True\nsnap_on_start=False\nrevisions_to_keep=-1\nephemeral=False\nis_outdated=False\n"+
		"block_device.path="+dir+"/appvms/work/private-dirty.img\nblock_device.name=private\nblock_device.rw=True\nblock_device.devtype=disk\n",
		ok(t, state, "volume", "info", "p", "appvms/work/private"))
	r := ctl(t, state, "volume", "remove", "p", "appvms/work/volatile")
	assert.Equal(t, exitFailed, r.code, "a running volume is not removed")
	assert.Contains(t, r.stderr, "running")
	r = ctl(t, state, "volume", "info", "p", "appvms/work/nope")
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stderr, "no volume appvms/work/nope in pool p")
	r = ctl(t, state, "volume", "info", "q", "appvms/work/private")
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stderr, `no pool "q"`)

	ok(t, state, "vm", "stop", "work")
	ok(t, state, "volume", "start", "p", "vm-templates/fedora/root")
	ok(t, state, "volume", "stop", "p", "vm-templates/fedora/root")
	assert.Regexp(t, `^1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\n$`, ok(t, state, "volume", "revisions", "p", "vm-templates/fedora/root"))
	var revs []revisionDoc
	okJSON(t, state, &revs, "volume", "revisions", "p", "appvms/work/private")
	assert.Empty(t, revs, "revisions_to_keep -1 keeps none")
	assert.NotNil(t, revs, "an empty list is [], not null")

	r = ctl(t, state, "pool", "remove", "p")
	assert.Equal(t, exitFailed, r.code)
	assert.Contains(t, r.stderr, "storage pool is in use by fedora:root, work:private, work:root, work:volatile")
	for _, vid := range []string{"appvms/work/volatile", "appvms/work/root", "appvms/work/private", "vm-templates/fedora/root"} {
		ok(t, state, "volume", "remove", "p", vid)
	}
	ok(t, state, "pool", "remove", "p")
	assert.Equal(t, "NAME  DRIVER\n", ok(t, state, "pool", "list"))
	data, err := os.ReadFile(filepath.Join(state, "state.json"))
	require.NoError(t, err)
	var st map[string]any
	require.NoError(t, json.Unmarshal(data, &st))
	assert.Len(t, st["id"], 32, "the state keeps its ID")
	delete(st, "id")
	assert.Equal(t, map[string]any{"version": 1.0, "pools": map[string]any{}, "vms": map[string]any{}}, st)
}

func TestRunVerbose(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	dir := filepath.Join(t.TempDir(), "pool")
	ok(t, state, "pool", "add", "p", "file-reflink", "dir_path="+dir, "setup_check=no")
	r := ctl(t, state, "-v", "volume", "create", "p", "appvms/work/private", "--size", "1M", "--rw", "--save-on-stop")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stderr, "pool=p", "-v logs the pool's operations on stderr")
	assert.Empty(t, r.stdout)
	r = ctl(t, state, "volume", "create", "p", "appvms/work/volatile", "--size", "1M", "--rw")
	require.Equal(t, exitOK, r.code)
	assert.Empty(t, r.stderr, "without -v nothing is logged")
}

// addPool adds file-reflink pool p with setup_check=no and the given
// parameters on a temporary directory, and returns the state directory
// and the pool's directory.
func addPool(t *testing.T, params ...string) (state, dir string) {
	t.Helper()
	state = filepath.Join(t.TempDir(), "state")
	dir = filepath.Join(t.TempDir(), "pool")
	ok(t, state, append([]string{"pool", "add", "p", "file-reflink", "dir_path=" + dir, "setup_check=no"}, params...)...)
	return state, dir
}

// writeImage writes data at the start of the image at path, as a VM
// writes to its running volume.
func writeImage(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(data, 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// fileSums returns the SHA-256 of every file under dir by its relative
// path, but for the owner record: what a second state must not change.
func fileSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == ownerfile.Name {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		sum := sha256.Sum256(data)
		sums[rel] = hex.EncodeToString(sum[:])
		return nil
	}))
	return sums
}

// refuseJSON runs vmpoolctl --json with args, which must fail with code,
// an error of kind kind whose message contains msg, and leave state.json
// byte for byte as it was.
func refuseJSON(t *testing.T, state string, code int, kind, msg string, args ...string) {
	t.Helper()
	stateFile := filepath.Join(state, "state.json")
	before, err := os.ReadFile(stateFile)
	require.NoError(t, err)
	r := ctl(t, state, append([]string{"--json"}, args...)...)
	assert.Equal(t, code, r.code, "%q: %s", args, r.stderr)
	assert.Contains(t, r.stderr, msg, "%q", args)
	var doc errorDoc
	if assert.NoError(t, json.Unmarshal([]byte(r.stdout), &doc), "%q: %s", args, r.stdout) {
		assert.Equal(t, kind, doc.Kind, "%q: %s", args, doc.Error)
	}
	after, err := os.ReadFile(stateFile)
	require.NoError(t, err)
	assert.Equal(t, string(before), string(after), "%q changes nothing in the state", args)
}

// TestRunVolumeConfig changes each property volume config takes, each in a
// vmpoolctl run of its own, and reads it back with the next run's volume
// info: every change is saved. Refused changes exit non-zero, say why and
// leave state.json as it was.
func TestRunVolumeConfig(t *testing.T) {
	state, _ := addPool(t, "revisions_to_keep=2")
	ok(t, state, "volume", "create", "p", "vm-templates/fedora/root", "--size", "1MiB", "--rw", "--save-on-stop")
	ok(t, state, "volume", "create", "p", "vm-templates/debian/root", "--size", "1MiB", "--rw", "--save-on-stop")
	ok(t, state, "volume", "create", "p", "appvms/work/root", "--snap-on-start", "--source", "vm-templates/fedora/root", "--rw")
	ok(t, state, "volume", "create", "p", "appvms/work/private", "--size", "1MiB", "--rw", "--save-on-stop")
	ok(t, state, "volume", "create", "p", "appvms/work/data", "--size", "1MiB", "--rw", "--save-on-stop", "--revisions-to-keep", "-1")
	ok(t, state, "volume", "create", "p", "appvms/work/volatile", "--size", "1MiB", "--rw", "--volatile")
	info := func(vid string) volumeDoc {
		t.Helper()
		var doc volumeDoc
		okJSON(t, state, &doc, "volume", "info", "p", vid)
		return doc
	}
	type change struct {
		vid, key, value string
		got             func(volumeDoc) any
		want            any
	}
	keep := func(d volumeDoc) any { return d.RevisionsToKeep }
	rw := func(d volumeDoc) any { return d.RW }
	ephemeral := func(d volumeDoc) any { return d.Ephemeral }
	source := func(d volumeDoc) any { return d.Source }
	// apply makes each change and checks that the next run sees it.
	apply := func(changes []change) {
		t.Helper()
		for _, c := range changes {
			r := ctl(t, state, "volume", "config", "p", c.vid, c.key, c.value)
			require.Equal(t, exitOK, r.code, "%s %s %s: %s", c.vid, c.key, c.value, r.stderr)
			assert.Empty(t, r.stdout, "volume config prints nothing")
			assert.Empty(t, r.stderr)
			assert.Equal(t, c.want, c.got(info(c.vid)), "%s %s %s", c.vid, c.key, c.value)
		}
	}

	apply([]change{
		{"appvms/work/private", "revisions_to_keep", "5", keep, 5},
		{"appvms/work/private", "revisions_to_keep", "-1", keep, -1},
		{"appvms/work/private", "revisions_to_keep", "+0", keep, 0},
		{"appvms/work/private", "rw", "No", rw, false},
		{"appvms/work/private", "rw", "ON", rw, true},
		{"appvms/work/private", "rw", "0", rw, false},
		{"appvms/work/private", "rw", "true", rw, true},
		{"appvms/work/volatile", "ephemeral", "yes", ephemeral, true},
		{"appvms/work/volatile", "ephemeral", "Off", ephemeral, false},
		{"appvms/work/root", "source", "vm-templates/debian/root", source, "vm-templates/debian/root"},
	})
	var doc volumeDoc
	okJSON(t, state, &doc, "volume", "config", "p", "appvms/work/root", "source", "vm-templates/fedora/root")
	assert.Equal(t, "vm-templates/fedora/root", doc.Source, "--json prints the volume as changed")
	assert.Equal(t, "vm-templates/fedora/root", info("appvms/work/root").Source)

	for _, tc := range []struct {
		code      int
		kind, msg string
		args      []string
	}{
		{exitUsage, "invalid_config", "valid keys: revisions_to_keep, rw, ephemeral, source", []string{"appvms/work/private", "size", "2MiB"}},
		{exitUsage, "invalid_config", "want an integer of at least -1", []string{"appvms/work/private", "revisions_to_keep", "-2"}},
		{exitUsage, "invalid_config", "want an integer of at least -1", []string{"appvms/work/private", "revisions_to_keep", "many"}},
		{exitUsage, "invalid_config", `"maybe" is not a boolean`, []string{"appvms/work/private", "rw", "maybe"}},
		{exitUsage, "invalid_config", "only a writable volatile volume can be ephemeral", []string{"appvms/work/private", "ephemeral", "yes"}},
		{exitUsage, "invalid_config", "is not snap_on_start and has no source", []string{"appvms/work/private", "source", "vm-templates/debian/root"}},
		{exitUsage, "invalid_config", "volume is its own source", []string{"appvms/work/root", "source", "appvms/work/root"}},
		{exitFailed, "not_found", "vm-templates/nope/root is not a volume of pool p", []string{"appvms/work/root", "source", "vm-templates/nope/root"}},
		{exitFailed, "not_found", "no volume appvms/work/nope in pool p", []string{"appvms/work/nope", "rw", "yes"}},
	} {
		refuseJSON(t, state, tc.code, tc.kind, tc.msg, append([]string{"volume", "config", "p"}, tc.args...)...)
	}

	ok(t, state, "vm", "start", "work")
	for _, tc := range []struct{ vid, key, value string }{
		{"appvms/work/private", "revisions_to_keep", "-1"}, // disables snapshots
		{"appvms/work/data", "revisions_to_keep", "1"},     // enables them again
		{"appvms/work/private", "rw", "no"},
		{"appvms/work/root", "source", "vm-templates/debian/root"},
	} {
		refuseJSON(t, state, exitFailed, "running", "VM work must be stopped", "volume", "config", "p", tc.vid, tc.key, tc.value)
	}
	// What Qubes changes on a running VM: another number of revisions, and
	// the ephemeral flag of the next start.
	apply([]change{
		{"appvms/work/private", "revisions_to_keep", "3", keep, 3},
		{"appvms/work/data", "revisions_to_keep", "-1", keep, -1},
		{"appvms/work/volatile", "ephemeral", "1", ephemeral, true},
	})
	ok(t, state, "vm", "stop", "work")
	assert.Equal(t, volumeDoc{VM: "work", Name: "private", Pool: "p", VID: "appvms/work/private", Size: 1 << 20, RW: true,
		Path: info("appvms/work/private").Path, SaveOnStop: true, RevisionsToKeep: 3}, info("appvms/work/private"))
}

// TestRunPoolSet changes the parameters pool set may change and reads them
// back with the next run's pool info; refused changes (dir_path above
// all) exit non-zero, say why and leave state.json as it was.
func TestRunPoolSet(t *testing.T) {
	state, dir := addPool(t, "revisions_to_keep=2")
	ok(t, state, "volume", "create", "p", "appvms/work/private", "--size", "1MiB", "--rw", "--save-on-stop")

	r := ctl(t, state, "pool", "set", "p", "revisions_to_keep", "3")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Empty(t, r.stdout, "pool set prints nothing")
	assert.Empty(t, r.stderr)
	ok(t, state, "pool", "set", "p", "ephemeral_volatile", "Yes")
	assert.Regexp(t, `^name=p\ndir_path=`+regexp.QuoteMeta(dir)+`\ndriver=file-reflink\nephemeral_volatile=True\nrevisions_to_keep=3\nsize=\d+\nusage=\d+\n$`,
		ok(t, state, "pool", "info", "p"))
	var doc poolDoc
	okJSON(t, state, &doc, "pool", "set", "p", "revisions_to_keep", "4")
	assert.Equal(t, "4", doc.Config["revisions_to_keep"], "--json prints the pool as changed")
	okJSON(t, state, &doc, "pool", "info", "p")
	assert.Equal(t, map[string]string{"name": "p", "driver": "file-reflink", "dir_path": dir, "revisions_to_keep": "4", "ephemeral_volatile": "True"}, doc.Config)

	var vol volumeDoc
	okJSON(t, state, &vol, "volume", "info", "p", "appvms/work/private")
	assert.Equal(t, 2, vol.RevisionsToKeep, "a volume registered before keeps its revisions_to_keep")
	okJSON(t, state, &vol, "volume", "create", "p", "appvms/work/data", "--size", "1MiB", "--rw", "--save-on-stop")
	assert.Equal(t, 4, vol.RevisionsToKeep, "a new volume gets the pool's")
	okJSON(t, state, &vol, "volume", "create", "p", "appvms/work/volatile", "--size", "1MiB", "--rw", "--volatile")
	assert.True(t, vol.Ephemeral, "with ephemeral_volatile, a writable volatile volume is ephemeral")

	for _, tc := range []struct {
		code      int
		kind, msg string
		args      []string
	}{
		{exitFailed, "unsupported", "dir_path is fixed when the pool is added", []string{"p", "dir_path", filepath.Join(t.TempDir(), "elsewhere")}},
		{exitFailed, "unsupported", "setup_check is fixed when the pool is added", []string{"p", "setup_check", "yes"}},
		{exitUsage, "invalid_config", `unknown parameter "size"`, []string{"p", "size", "1G"}},
		{exitUsage, "invalid_config", "want an integer of at least -1", []string{"p", "revisions_to_keep", "-2"}},
		{exitUsage, "invalid_config", `"maybe" is not a boolean`, []string{"p", "ephemeral_volatile", "maybe"}},
		{exitFailed, "not_found", `no pool "q"`, []string{"q", "revisions_to_keep", "1"}},
	} {
		refuseJSON(t, state, tc.code, tc.kind, tc.msg, append([]string{"pool", "set"}, tc.args...)...)
	}
	assert.Contains(t, ok(t, state, "pool", "info", "p"), "\ndir_path="+dir+"\n")
}

// TestRunPoolInfoMissingDir renames a pool's directory away, as an
// unmounted mount point would leave it: pool info still works, as
// qvm-pool info does, and shows the configuration without size and usage.
func TestRunPoolInfoMissingDir(t *testing.T) {
	state, dir := addPool(t)
	ok(t, state, "volume", "create", "p", "appvms/work/private", "--size", "1MiB", "--rw", "--save-on-stop")
	require.NoError(t, os.Rename(dir, dir+".away"))

	assert.Equal(t, "name=p\ndir_path="+dir+"\ndriver=file-reflink\nephemeral_volatile=False\nrevisions_to_keep=1\n", ok(t, state, "pool", "info", "p"))
	var doc map[string]any
	okJSON(t, state, &doc, "pool", "info", "p")
	assert.NotContains(t, doc, "size")
	assert.NotContains(t, doc, "usage")
	assert.Contains(t, doc, "config")
	assert.Equal(t, "NAME  DRIVER\np     file-reflink\n", ok(t, state, "pool", "list"))
	assert.NoDirExists(t, dir, "nothing made the directory again")

	require.NoError(t, os.Rename(dir+".away", dir))
	assert.Regexp(t, `\nsize=\d+\nusage=\d+\n$`, ok(t, state, "pool", "info", "p"), "back in place, it is measured again")
}
