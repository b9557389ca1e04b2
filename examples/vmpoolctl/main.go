// Command vmpoolctl manages vmpool storage pools and the volumes of VMs
// from the shell, as Qubes' qvm-pool and qvm-volume do. Its state (the
// pools and volume configurations, see pool.Manager) lives in --state DIR,
// by default $VMPOOL_STATE or /var/lib/vmpool.
//
//	vmpoolctl pool add NAME DRIVER key=value... [--adopt]
//	vmpoolctl pool list | info NAME | default | drivers
//	vmpoolctl pool remove NAME [--force]
//	vmpoolctl pool set NAME KEY VALUE
//	vmpoolctl pool migrate NAME DRIVER [key=value...]
//	vmpoolctl pool import-qubes-xml [--root DIR] FILE
//	vmpoolctl volume create POOL VID --size SIZE [--rw] [--save-on-stop] [--snap-on-start --source VID] [--volatile] [--revisions-to-keep N] [--replace]
//	vmpoolctl volume start | stop | remove | info | revisions POOL VID
//	vmpoolctl volume revert POOL VID [REV]
//	vmpoolctl volume resize POOL VID SIZE [--force]
//	vmpoolctl volume import POOL VID FILE
//	vmpoolctl volume import-from POOL VID SRC_POOL SRC_VID
//	vmpoolctl volume config POOL VID KEY VALUE
//	vmpoolctl vm start | stop VM
//	vmpoolctl vm list
//
// A VID is appvms/VM/VOLUME or vm-templates/VM/VOLUME (the file
// drivers; the VM is the second part, the volume's name the third) or
// VG/vm-VM-VOLUME (lvm_thin; split at the last '-'). Sizes take qvm-volume's units
// (10G = 10×1000³, 10GiB = 10×1024³). Flags may come before or after the
// arguments (a negative number such as -1 is an argument, not a flag);
// --json makes every command print one JSON document, and -v logs what the
// pools do on stderr.
//
// A pool directory records the state that owns it: pool add refuses the
// pool of another state unless --adopt, and volume create refuses a
// save_on_stop vid with data or revisions on disk unless --replace, which
// deletes them (pool.Manager.AdoptPool, ReplaceVolume).
//
// pool remove refuses a pool that volumes use unless --force, which
// forgets those volumes and leaves their images and revisions on disk
// (pool.RemovePoolOptions). pool info shows included_in, the pool whose
// directory holds the pool's dir_path, when there is one. pool default
// prints the pool Qubes' default_pool defaults to (pool.Manager.DefaultPool)
// from $DEFAULT_LVM_POOL; it does not probe LVM for the thin pool that
// holds "/".
//
// pool migrate moves a pool to another driver in place: file →
// file-reflink, once every VM of the pool is stopped
// (pool.Manager.MigratePool). volume import-from copies another volume's
// committed data, from any pool, into a stopped volume
// (pool.Manager.ImportVolume). volume info of a running volume adds, after
// the Admin API's keys, the block device its VM gets (block_device.path,
// .name, .rw, .devtype).
//
// pool import-qubes-xml records the pools and VM volumes of a Qubes R4
// qubes.xml (pool.Manager.ImportQubesXML; --root is where that
// installation's root is mounted) and prints them. A pool whose driver
// vmpoolctl lacks (lvm_thin, so far) is recorded unavailable, as is a
// recorded pool that cannot be opened: pool list and pool info say so and
// why, and operations on its volumes fail (kind unavailable).
//
// Exit status:
//
//	0  success
//	1  the operation failed
//	2  bad usage or bad input (including input a pool refuses as
//	   invalid); nothing was changed
//	3  the operation was done, but the state file could not be written
//	   (pool.ErrNotSaved: a full or read-only filesystem); do not repeat
//	   it, the next vmpoolctl run that can write the state records it
//
// On SIGINT or SIGTERM, vmpoolctl cancels the operation under way (an
// operation that is already done, such as a commit, stays done), waits at
// most half a second for the pools' background work (precache copies,
// which only speed up the next start) and then ends by that signal, so
// that a shell reports 130 or 143 and a script running it stops too. What
// became of the operation is on stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"

	_ "github.com/vmpool/vmpool/file" // registers the file driver
	_ "github.com/vmpool/vmpool/lvm"  // registers the lvm_thin driver
	"github.com/vmpool/vmpool/pool"
	_ "github.com/vmpool/vmpool/reflink" // registers the file-reflink driver
	"github.com/vmpool/vmpool/storage"
)

// Exit statuses; see the package doc.
const (
	exitOK       = 0
	exitFailed   = 1
	exitUsage    = 2
	exitNotSaved = 3
)

// defaultStateDir is where the state lives without --state or
// $VMPOOL_STATE.
const defaultStateDir = "/var/lib/vmpool"

// lockWait is how long a command waits for another vmpoolctl (or any
// other holder of the state lock or of a pool's lock) to finish.
const lockWait = 30 * time.Second

// closeWait is how long a command interrupted by a signal still waits for
// the pools' background work before it ends without it. The process ends
// once its threads leave the kernel: a precache copy in its closing fsync
// holds it until the copy's data is written back.
const closeWait = 500 * time.Millisecond

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() { cancel(signalled{(<-sigs).(syscall.Signal)}) }()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	var s signalled
	if errors.As(context.Cause(ctx), &s) {
		// End by the signal, as a program that does not catch it does:
		// a shell running vmpoolctl in a script then stops the script
		// too, which it does not for a program that exits normally.
		// Sent to this thread, which runs the default action before the
		// call returns (sent to the process, another thread could take
		// it after os.Exit).
		signal.Reset(s.sig)
		runtime.LockOSThread()
		_ = unix.Tgkill(unix.Getpid(), unix.Gettid(), s.sig)
		code = 128 + int(s.sig) // the status a shell shows, should the signal not end the process
	}
	os.Exit(code)
}

// signalled is the cause of the context of a run that a signal
// interrupted.
type signalled struct{ sig syscall.Signal }

func (s signalled) Error() string { return unix.SignalName(s.sig) + " received" }

// env is what a command runs with: the global flags and the outputs.
type env struct {
	ctx            context.Context
	stdout, stderr io.Writer
	state          string
	json           bool
	verbose        bool
}

// registerGlobals defines the global flags on fs, so that they may be
// given before the command or among its arguments.
func (e *env) registerGlobals(fs *flag.FlagSet) {
	fs.StringVar(&e.state, "state", e.state, "state directory ($VMPOOL_STATE, else "+defaultStateDir+")")
	fs.BoolVar(&e.json, "json", e.json, "print one JSON document")
	fs.BoolVar(&e.verbose, "v", e.verbose, "log the pools' operations on stderr")
}

// usageError marks an error in the command line.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// run runs vmpoolctl with args (without the program name) and returns the
// exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{ctx: ctx, stdout: stdout, stderr: stderr, state: os.Getenv("VMPOOL_STATE")}
	if e.state == "" {
		e.state = defaultStateDir
	}
	global := flag.NewFlagSet("vmpoolctl", flag.ContinueOnError)
	global.SetOutput(io.Discard)
	e.registerGlobals(global)
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return exitOK
		}
		return e.fail(usageError{err}, nil)
	}
	args = global.Args()
	if len(args) == 0 || args[0] == "help" {
		if len(args) == 0 {
			printUsage(stderr)
			return exitUsage
		}
		printUsage(stdout)
		return exitOK
	}
	cmd, args, err := findCommand(args)
	if err != nil {
		return e.fail(err, nil)
	}
	fs := flag.NewFlagSet("vmpoolctl "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	e.registerGlobals(fs)
	runCmd := cmd.setup(fs)
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		printCommandHelp(stdout, cmd, fs)
		return exitOK
	}
	if err == nil {
		err = cmd.checkArgs(pos)
	}
	if err != nil {
		return e.fail(usageError{err}, cmd)
	}
	if e.state == "" {
		// Not the command's usage: the synopsis would not help.
		return e.fail(usagef("--state is empty: give the state directory, or leave --state out for $VMPOOL_STATE, else %s", defaultStateDir), nil)
	}
	err = runCmd(e, pos)
	if err == nil && e.ctx.Err() != nil {
		fmt.Fprintf(e.stderr, "vmpoolctl: %v: the operation was done\n", context.Cause(e.ctx))
	}
	return e.fail(err, cmd)
}

// fail reports err (if any) on stderr, and in JSON mode as a document on
// stdout, and returns the exit status.
func (e *env) fail(err error, cmd *command) int {
	if err == nil {
		return exitOK
	}
	code := exitFailed
	var ue usageError
	switch {
	case errors.Is(err, pool.ErrNotSaved):
		code = exitNotSaved
	case errors.As(err, &ue) || errors.Is(err, storage.ErrInvalidConfig):
		code = exitUsage
	}
	fmt.Fprintf(e.stderr, "vmpoolctl: %v\n", err)
	if cause := context.Cause(e.ctx); cause != nil && errors.Is(err, context.Canceled) {
		fmt.Fprintf(e.stderr, "vmpoolctl: interrupted: %v\n", cause)
	}
	h := e.hint(err)
	if h != "" {
		fmt.Fprintf(e.stderr, "vmpoolctl: %s\n", h)
	}
	if errors.As(err, &ue) && cmd != nil {
		fmt.Fprintf(e.stderr, "usage: vmpoolctl %s %s\n", cmd.name, cmd.args)
	}
	if e.json {
		writeJSON(e.stdout, errorDoc{Error: err.Error(), Kind: errorKind(err), Hint: h})
	}
	return code
}

// hint returns what the user can do about err, or "".
func (e *env) hint(err error) string {
	var he hintError
	switch {
	case errors.Is(err, pool.ErrNotSaved):
		return fmt.Sprintf("the operation was done, but the state in %s could not be saved; do not repeat it: "+
			"the next vmpoolctl command records it once the state directory can be written", e.state)
	case errors.As(err, &he):
		return he.hint
	}
	return ""
}

// hintError is an error of a command that knows what the user can do
// about it.
type hintError struct {
	err  error
	hint string
}

func (h hintError) Error() string { return h.err.Error() }
func (h hintError) Unwrap() error { return h.err }

// errorDoc is the JSON document of a failed command.
type errorDoc struct {
	Error string `json:"error"`
	// Kind names the sentinel the error wraps: not_saved (pool.ErrNotSaved,
	// exit status 3), unavailable (pool.ErrUnavailable), not_found, exists, dirty, unsupported,
	// invalid_config, reflink_unsupported, shrink, read_only, running,
	// in_use, closed, unsafe_path; "usage" for a bad command line, "error"
	// for anything else.
	Kind string `json:"kind"`
	// Hint says what the user can do about it, when vmpoolctl knows.
	Hint string `json:"hint,omitempty"`
}

func errorKind(err error) string {
	for _, k := range []struct {
		err  error
		name string
	}{
		{pool.ErrNotSaved, "not_saved"}, {pool.ErrUnavailable, "unavailable"}, {storage.ErrNotFound, "not_found"}, {storage.ErrExists, "exists"}, {storage.ErrDirty, "dirty"},
		{storage.ErrUnsupported, "unsupported"}, {storage.ErrInvalidConfig, "invalid_config"},
		{storage.ErrReflinkUnsupported, "reflink_unsupported"}, {storage.ErrShrink, "shrink"},
		{storage.ErrReadOnly, "read_only"}, {storage.ErrRunning, "running"}, {storage.ErrInUse, "in_use"},
		{storage.ErrClosed, "closed"}, {storage.ErrUnsafePath, "unsafe_path"},
	} {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	if errors.As(err, new(usageError)) {
		return "usage"
	}
	return "error"
}

// logger returns the logger the pools get: a console writer on stderr with
// -v, nothing otherwise.
func (e *env) logger() zerolog.Logger {
	if !e.verbose {
		return zerolog.Nop()
	}
	// Pools log from their background workers too: serialise the writes.
	w := zerolog.ConsoleWriter{Out: zerolog.SyncWriter(e.stderr), NoColor: !isTerminal(e.stderr), TimeFormat: "15:04:05.000"}
	return zerolog.New(w).Level(zerolog.DebugLevel).With().Timestamp().Logger()
}

// withManager opens the Manager of the state directory, runs fn and closes
// it (waiting for the pools' background work; see closeManager).
func (e *env) withManager(fn func(*pool.Manager) error) (err error) {
	m, err := pool.OpenManager(e.ctx, e.state, pool.ManagerOptions{Logger: e.logger(), LockWait: lockWait})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := e.closeManager(m); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	return fn(m)
}

// closeManager closes m, which waits for the pools' background work. Once
// e.ctx ends (a signal), it cancels that work (Manager.CancelBackground)
// and waits closeWait at most, then returns with whatever still runs: the caller is about to end the process. What fn
// did is durable by then, and what is left undone is only precache copies
// (the next start of a volume without one copies its image itself) and
// the removal of "~" files, which the next run of vmpoolctl redoes, with
// the half-made copy the process leaves.
func (e *env) closeManager(m *pool.Manager) error {
	done := make(chan error, 1)
	go func() { done <- m.Close() }()
	select {
	case err := <-done:
		return err
	case <-e.ctx.Done():
	}
	// The precache copies only speed up the next start: abandon them, so
	// that Close returns at once (a copy cut short removes its temporary
	// file). A copy in its final fsync still holds Close until that ends:
	// then the process ends without it.
	m.CancelBackground()
	select {
	case err := <-done:
		return err
	case <-time.After(closeWait):
		fmt.Fprintf(e.stderr, "vmpoolctl: %v: ending without waiting for the pools' background work (precache copies): "+
			"the next vmpoolctl command removes what it leaves and makes the copies again, and a start without one copies the image itself\n",
			context.Cause(e.ctx))
		return nil
	}
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: vmpoolctl [--state DIR] [--json] [-v] COMMAND [ARGS]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %s\n      %s\n", strings.TrimSpace(c.name+" "+c.args), c.help)
	}
	fmt.Fprintln(w, "\nA VID is appvms/VM/VOLUME or vm-templates/VM/VOLUME (file drivers), VG/vm-VM-VOLUME (lvm_thin). Sizes: 1000, 10G (10×1000³), 10GiB (10×1024³).")
	fmt.Fprintln(w, "Global flags may also follow the command. \"vmpoolctl COMMAND -h\" shows a command's flags.")
	fmt.Fprintln(w, "\nexit status:")
	fmt.Fprintln(w, "  0  success")
	fmt.Fprintln(w, "  1  the operation failed")
	fmt.Fprintln(w, "  2  bad usage or bad input; nothing was changed")
	fmt.Fprintln(w, "  3  the operation was done, but the state could not be saved (a full or read-only")
	fmt.Fprintln(w, "     filesystem); do not repeat it: the next command that can write the state records it")
	fmt.Fprintln(w, "SIGINT or SIGTERM cancels the operation under way; vmpoolctl then waits at most 0.5 s for the")
	fmt.Fprintln(w, "pools' background work (precache copies) and ends by the signal (a shell shows 130 or 143).")
}

func printCommandHelp(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: vmpoolctl %s %s\n\n%s\n\nflags:\n", cmd.name, cmd.args, cmd.help)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// findCommand finds the command named by the first one or two words of
// args and returns it with the remaining arguments.
func findCommand(args []string) (*command, []string, error) {
	var subs []string
	for _, c := range commands {
		group, sub, _ := strings.Cut(c.name, " ")
		if group != args[0] {
			continue
		}
		if len(args) > 1 && sub == args[1] {
			return c, args[2:], nil
		}
		subs = append(subs, sub)
	}
	switch {
	case len(subs) == 0:
		return nil, nil, usagef("unknown command %q (commands: pool, volume, vm; see vmpoolctl help)", args[0])
	case len(args) == 1:
		return nil, nil, usagef("%s: missing subcommand (%s)", args[0], strings.Join(subs, ", "))
	}
	return nil, nil, usagef("%s: unknown subcommand %q (%s)", args[0], args[1], strings.Join(subs, ", "))
}
