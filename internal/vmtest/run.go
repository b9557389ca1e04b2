package vmtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Setup says what LVM the VM has before the command runs, on its fresh
// sparse virtio disk (VMTEST_DISK, /dev/vda).
type Setup int

const (
	// SetupThinPool (the default) makes the disk a PV with a VG
	// (Options.VG) holding a thin pool (Options.ThinPool, PoolSize).
	SetupThinPool Setup = iota
	// SetupVG makes the disk a PV with a VG and no LV.
	SetupVG
	// SetupNone leaves the disk empty.
	SetupNone
)

// String names the setup ("thin pool", "VG", "none").
func (s Setup) String() string {
	switch s {
	case SetupThinPool:
		return "thin pool"
	case SetupVG:
		return "VG"
	case SetupNone:
		return "none"
	}
	return "Setup(" + strconv.Itoa(int(s)) + ")"
}

// Defaults of Options.
const (
	DefaultVG       = "vmtestvg"
	DefaultThinPool = "pool"
	DefaultDiskSize = 8 << 30
	DefaultPoolSize = 4 << 30
	DefaultMem      = 2048
	DefaultTimeout  = 30 * time.Minute
)

// Options configure one VM. The zero value is a VM with DefaultModules,
// a VG vmtestvg with a 4 GiB thin pool "pool" on an 8 GiB disk, 2 GiB of
// memory, run in the current directory.
type Options struct {
	// Modules are kernel modules to load besides DefaultModules (for
	// example "dm-crypt"); what they depend on is loaded too. The kernel
	// package's drivers/md, drivers/block, crypto, lib, fs/9p,
	// fs/overlayfs, drivers/virtio and arch/x86/crypto modules are at hand.
	Modules []string
	// Setup is the LVM made before the command runs.
	Setup Setup
	// VG and ThinPool name the volume group and the thin pool LV
	// (DefaultVG, DefaultThinPool).
	VG, ThinPool string
	// DiskSize is the size of the sparse virtio disk, PoolSize that of
	// the thin pool's data LV (DefaultDiskSize, DefaultPoolSize).
	DiskSize, PoolSize int64
	// Env adds NAME=VALUE pairs to the command's environment; they
	// override the defaults.
	Env []string
	// Mem is the VM's memory in MiB (DefaultMem).
	Mem int
	// Timeout bounds the whole run, boot included; QEMU is killed after
	// it (DefaultTimeout).
	Timeout time.Duration
	// Dir is the command's working directory (default: the current
	// directory). It is read-only in the VM unless it is under /tmp (the
	// guest's own overlay) or under an RW directory.
	Dir string
	// RW are host directories shared read-write at the same path, for
	// results the command writes back (coverage files, artifacts).
	RW []string
	// Stdout and Stderr receive the command's output as it comes (nil:
	// discarded). It arrives whole or Run fails with ErrVM. A write
	// error drops the rest of that stream and Run returns it.
	Stdout, Stderr io.Writer
}

// Result is the outcome of a command that ran in a VM.
type Result struct {
	// ExitCode is the command's exit status (128+n for a signal n).
	ExitCode int
	// Boot is the guest's uptime when the command started: kernel, module
	// loading, mounts and the LVM setup.
	Boot time.Duration
	// Command is how long the command ran.
	Command time.Duration
	// Wall is the host's time for the whole run, QEMU's start to its end.
	Wall time.Duration
	// Kernel is the guest kernel's release (uname -r).
	Kernel string
}

// Errors of the VM itself, as opposed to the command's exit status. They
// come wrapped in a *VMError that holds the VM's logs.
var (
	// ErrVM means the VM failed before or instead of running the command:
	// QEMU did not start or ended early, a module did not load, a mount
	// or the LVM setup failed.
	ErrVM = errors.New("vmtest: the VM failed")
	// ErrTimeout means Options.Timeout ended the run.
	ErrTimeout = errors.New("vmtest: timed out")
)

// EnvAppend is added to the guest kernel's command line (for example
// loglevel=7 to see the kernel's messages in a VMError's console log).
const EnvAppend = "VMPOOL_VMTEST_APPEND"

// EnvKeep, set to 1, keeps each run's directory (console log, setup log,
// stage 2 script, initramfs) instead of removing it; a VMError names it.
const EnvKeep = "VMPOOL_VMTEST_KEEP"

// A VMError is a failure of the VM (ErrVM, ErrTimeout) with what its logs
// say: QEMU's stderr, the kernel console and the setup log.
type VMError struct {
	Err      error  // ErrVM or ErrTimeout
	Detail   string // what happened
	QEMU     string // QEMU's stderr
	Console  string // the kernel console (init's messages included)
	SetupLog string // stage 2's own commands (LVM setup) and their output
	Kept     string // the run directory, when EnvKeep kept it
}

func (e *VMError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %s", e.Err, e.Detail)
	for _, l := range []struct{ name, text string }{
		{"qemu stderr", e.QEMU}, {"console", e.Console}, {"setup log", e.SetupLog},
	} {
		if t := strings.TrimSpace(l.text); t != "" {
			fmt.Fprintf(&b, "\n---- %s (last 40 lines) ----\n%s", l.name, lastLines(t, 40))
		}
	}
	if e.Kept != "" {
		fmt.Fprintf(&b, "\n(run directory kept: %s)", e.Kept)
	}
	return b.String()
}

// Unwrap returns ErrVM or ErrTimeout.
func (e *VMError) Unwrap() error { return e.Err }

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// InVM reports whether this process runs inside a vmtest VM
// (VMPOOL_IN_VM=1).
func InVM() bool { return os.Getenv(EnvInVM) == "1" }

// EnvInVM is set to 1 in the environment of a command run by Run.
const EnvInVM = "VMPOOL_IN_VM"

// qemuBinary is the QEMU Run starts, always with TCG: KVM does not work
// on our hosts (their /dev/kvm is kvm-pvm).
const qemuBinary = "qemu-system-x86_64"

var (
	lvmNameRE = regexp.MustCompile(`^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$`)
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// withDefaults checks o and fills in the defaults; an error says which
// option is wrong, before anything is made.
func (o Options) withDefaults() (Options, error) {
	if o.VG == "" {
		o.VG = DefaultVG
	}
	if o.ThinPool == "" {
		o.ThinPool = DefaultThinPool
	}
	if o.DiskSize == 0 {
		o.DiskSize = DefaultDiskSize
	}
	if o.PoolSize == 0 {
		o.PoolSize = DefaultPoolSize
	}
	if o.Mem == 0 {
		o.Mem = DefaultMem
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	switch o.Setup {
	case SetupThinPool, SetupVG, SetupNone:
	default:
		return o, fmt.Errorf("vmtest: unknown %v", o.Setup)
	}
	for _, n := range []string{o.VG, o.ThinPool} {
		if !lvmNameRE.MatchString(n) || n == "." || n == ".." || len(n) > 127 {
			return o, fmt.Errorf("vmtest: %q is not a valid LVM name", n)
		}
	}
	if o.DiskSize < 64<<20 || o.DiskSize%512 != 0 {
		return o, fmt.Errorf("vmtest: disk size %d: want a multiple of 512 of at least 64 MiB", o.DiskSize)
	}
	if o.Setup == SetupThinPool && (o.PoolSize < 4<<20 || o.PoolSize > o.DiskSize-o.DiskSize/16-16<<20) {
		return o, fmt.Errorf("vmtest: pool size %d does not fit a %d-byte disk with the pool's metadata", o.PoolSize, o.DiskSize)
	}
	if o.Mem < 256 {
		return o, fmt.Errorf("vmtest: %d MiB of memory is too little (at least 256)", o.Mem)
	}
	if o.Timeout < 0 {
		return o, fmt.Errorf("vmtest: negative timeout %v", o.Timeout)
	}
	for _, kv := range o.Env {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || !envNameRE.MatchString(name) {
			return o, fmt.Errorf("vmtest: environment entry %q is not NAME=VALUE", kv)
		}
	}
	for _, m := range o.Modules {
		if !validModule(m) {
			return o, fmt.Errorf("vmtest: %q is not a kernel module name", m)
		}
	}
	if o.Dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return o, fmt.Errorf("vmtest: %w", err)
		}
		o.Dir = wd
	}
	if !filepath.IsAbs(o.Dir) {
		return o, fmt.Errorf("vmtest: working directory %q is not absolute", o.Dir)
	}
	rw := make([]string, 0, len(o.RW))
	for _, d := range o.RW {
		if !filepath.IsAbs(d) {
			return o, fmt.Errorf("vmtest: read-write directory %q is not absolute", d)
		}
		real, err := filepath.EvalSymlinks(d)
		if err != nil {
			return o, fmt.Errorf("vmtest: read-write directory: %w", err)
		}
		if st, err := os.Stat(real); err != nil || !st.IsDir() {
			return o, fmt.Errorf("vmtest: read-write directory %q is not a directory", d)
		}
		if strings.ContainsRune(real, '\n') {
			return o, fmt.Errorf("vmtest: read-write directory %q: a path with a newline cannot be mounted", d)
		}
		rw = append(rw, real)
	}
	o.RW = rw
	return o, nil
}

// guestPath is the command's PATH: the host's, with the sbin directories
// (lvm, dmsetup, losetup) added if missing.
func guestPath() string {
	p := os.Getenv("PATH")
	if p == "" {
		p = "/usr/local/bin:/usr/bin:/bin"
	}
	have := map[string]bool{}
	for _, d := range filepath.SplitList(p) {
		have[d] = true
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if !have[d] {
			p += ":" + d
		}
	}
	return p
}

// Run boots a throw-away VM and runs argv in it: the host's root
// filesystem, read-only, is its root, so argv[0] is a host path or found
// on the host's PATH. It returns when the VM has ended; Result.ExitCode is
// the command's exit status. An error means the command did not run to
// its end: a bad option (nothing started), a missing prerequisite, the
// kernel download, or a *VMError (ErrVM, ErrTimeout). Cancelling ctx
// kills the VM.
//
// The first Run of a machine downloads the kernel and busybox into the
// cache (see CacheDir); later ones work offline.
func Run(ctx context.Context, opts Options, argv ...string) (*Result, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("vmtest: no command")
	}
	if strings.Contains(argv[0], "=") {
		return nil, fmt.Errorf("vmtest: command %q contains '='", argv[0])
	}
	if _, err := exec.LookPath(qemuBinary); err != nil {
		return nil, fmt.Errorf("vmtest: %s is not installed (make deps): %w", qemuBinary, err)
	}
	if o.Setup != SetupNone {
		if _, err := exec.LookPath("lvm"); err != nil {
			return nil, fmt.Errorf("vmtest: the LVM setup needs lvm on the host (make deps): %w", err)
		}
	}
	a, err := prepare(ctx)
	if err != nil {
		return nil, fmt.Errorf("vmtest: prepare the kernel: %w", err)
	}
	md, err := openModuleDir(a.modules(), a.builtinFile())
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	order, err := moduleOrder(md, append(append([]string{}, DefaultModules...), o.Modules...))
	if err != nil {
		return nil, fmt.Errorf("vmtest: kernel %s: %w", a.KernelDir, err)
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	marker := "vmtest-end-" + hex.EncodeToString(nonce)
	initrd, err := buildInitramfs(a.busyboxPath(), a.modules(), order, marker)
	if err != nil {
		return nil, fmt.Errorf("vmtest: initramfs: %w", err)
	}

	run, err := os.MkdirTemp("", "vmtest-")
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	keep := os.Getenv(EnvKeep) == "1"
	if !keep {
		defer os.RemoveAll(run)
	}
	v := &vm{opts: o, assets: a, run: run, xfer: filepath.Join(run, "xfer"), marker: marker}
	if keep {
		v.kept = run
	}
	if err := v.write(initrd, argv); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	return v.boot(ctx)
}

// vm is one run: its directory holds the initramfs, the disk, the logs
// and the transfer directory shared with the guest.
type vm struct {
	opts   Options
	assets *assets
	run    string
	xfer   string
	kept   string
	marker string // ends the guest's output on each port
}

func (v *vm) write(initrd []byte, argv []string) error {
	if err := os.Mkdir(v.xfer, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(v.run, "initrd.cpio"), initrd, 0o644); err != nil {
		return err
	}
	conf, err := formatLVMConf(guestLVMConf)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(v.xfer, xferLVMConf), []byte(conf), 0o644); err != nil {
		return err
	}
	env := []string{
		"PATH=" + guestPath(),
		"HOME=" + homeDir(),
		"TMPDIR=/tmp",
		"LANG=C.UTF-8",
		EnvInVM + "=1",
		"VMTEST_DISK=/dev/vda",
		"DM_DISABLE_UDEV=1", // libdevmapper (dmsetup, lvm, cryptsetup) makes the /dev nodes itself
	}
	if v.opts.Setup != SetupNone {
		env = append(env, "VMTEST_VG="+v.opts.VG)
	}
	if v.opts.Setup == SetupThinPool {
		env = append(env, "VMTEST_THINPOOL="+v.opts.ThinPool)
	}
	env = append(env, v.opts.Env...)
	s := &stage2{
		path: guestPath(), rw: v.opts.RW, setup: v.opts.Setup,
		vg: v.opts.VG, pool: v.opts.ThinPool, poolSz: v.opts.PoolSize,
		dir: v.opts.Dir, env: env, argv: argv,
	}
	if err := os.WriteFile(filepath.Join(v.xfer, xferStage2), []byte(s.script()), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(v.xfer, xferSetupLog), nil, 0o644); err != nil {
		return err
	}
	disk, err := os.Create(filepath.Join(v.run, "disk.img"))
	if err != nil {
		return err
	}
	if err := disk.Truncate(v.opts.DiskSize); err != nil {
		disk.Close()
		return err
	}
	return disk.Close()
}

func homeDir() string {
	if h := os.Getenv("HOME"); h != "" {
		return h
	}
	return "/root"
}

// kernelCmdline is the guest kernel's command line: the console on the
// serial port (the console log); a panic ends the VM at once (with QEMU's
// -no-reboot); the TSC is trusted and the timer IRQ not tested, because
// under TCG on a loaded host the emulated timer can be slow enough for the
// kernel to panic with "IO-APIC + timer doesn't work" (seen here); one
// UART, not four to probe.
const kernelCmdline = "console=ttyS0 panic=-1 reboot=t loglevel=4 tsc=reliable no_timer_check 8250.nr_uarts=1"

func (v *vm) qemuArgs() []string {
	// In QEMU's option syntax a ',' in a value is written ",,".
	esc := func(path string) string { return strings.ReplaceAll(path, ",", ",,") }
	p := func(name string) string { return esc(filepath.Join(v.run, name)) }
	args := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-machine", "q35", "-accel", "tcg,thread=multi", "-cpu", "qemu64,+rdrand",
		"-m", strconv.Itoa(v.opts.Mem), "-smp", "1",
		"-kernel", v.assets.image(), "-initrd", filepath.Join(v.run, "initrd.cpio"),
		"-append", strings.TrimSpace(kernelCmdline + " " + os.Getenv(EnvAppend)),
		"-chardev", "file,id=con,path=" + p("console.log"),
		"-serial", "chardev:con",
		"-chardev", "file,id=out,path=" + p("out.fifo"),
		"-chardev", "file,id=err,path=" + p("err.fifo"),
		"-device", "virtio-serial-pci,id=vser0,max_ports=4",
		"-device", "virtserialport,bus=vser0.0,chardev=out,name=vmtest.out",
		"-device", "virtserialport,bus=vser0.0,chardev=err,name=vmtest.err",
		"-fsdev", "local,id=vmroot,path=/,security_model=none,readonly=on,multidevs=remap",
		"-device", "virtio-9p-pci,fsdev=vmroot,mount_tag=vmroot",
		"-fsdev", "local,id=vmxfer,path=" + esc(v.xfer) + ",security_model=none",
		"-device", "virtio-9p-pci,fsdev=vmxfer,mount_tag=vmxfer",
		"-drive", "file=" + p("disk.img") + ",format=raw,if=none,id=disk0,cache=unsafe,discard=unmap,detect-zeroes=unmap",
		"-device", "virtio-blk-pci,drive=disk0",
	}
	for i, d := range v.opts.RW {
		args = append(args,
			"-fsdev", fmt.Sprintf("local,id=vmrw%d,path=%s,security_model=none,multidevs=remap", i, esc(d)),
			"-device", fmt.Sprintf("virtio-9p-pci,fsdev=vmrw%d,mount_tag=vmrw%d", i, i))
	}
	return args
}

// pipe relays one virtio serial port: QEMU writes a FIFO (its file
// chardev), a goroutine copies it to w (an endFilter).
type pipe struct {
	r, w *os.File
	done chan struct{}
}

func openPipe(path string, w io.Writer) (*pipe, error) {
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return nil, &os.PathError{Op: "mkfifo", Path: path, Err: err}
	}
	// The reader first (non-blocking, so the open does not wait), then
	// our own writer: it keeps the reader from seeing EOF before QEMU has
	// opened the FIFO, and its close after QEMU's end lets it see EOF.
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	wf, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		r.Close()
		return nil, err
	}
	// A larger FIFO lets QEMU write on while we are slow; best effort.
	_, _ = unix.FcntlInt(r.Fd(), unix.F_SETPIPE_SZ, 1<<20)
	p := &pipe{r: r, w: wf, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				_, _ = w.Write(buf[:n]) // an endFilter: never fails, keeps draining
			}
			if err != nil {
				return
			}
		}
	}()
	return p, nil
}

// finish waits for the relay to drain after QEMU has ended.
func (p *pipe) finish() {
	p.w.Close()
	<-p.done
	p.r.Close()
}

func (v *vm) boot(ctx context.Context) (*Result, error) {
	ack := func(name string) func() {
		return func() { _ = os.WriteFile(filepath.Join(v.xfer, name), nil, 0o644) }
	}
	outF := newEndFilter(v.opts.Stdout, v.marker, ack(xferAckOut))
	errF := newEndFilter(v.opts.Stderr, v.marker, ack(xferAckErr))
	out, err := openPipe(filepath.Join(v.run, "out.fifo"), outF)
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	errp, err := openPipe(filepath.Join(v.run, "err.fifo"), errF)
	if err != nil {
		out.finish()
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	qlog, err := os.Create(filepath.Join(v.run, "qemu.log"))
	if err != nil {
		out.finish()
		errp.finish()
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	defer qlog.Close()

	tctx, cancel := context.WithTimeout(ctx, v.opts.Timeout)
	defer cancel()
	cmd := exec.CommandContext(tctx, qemuBinary, v.qemuArgs()...)
	cmd.Stdout = qlog
	cmd.Stderr = qlog
	// QEMU dies with us (a test binary killed by go test's timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	out.finish()
	errp.finish()
	outWhole, errWhole := outF.Close(), errF.Close()

	res := &Result{Wall: wall}
	if k, rerr := os.ReadFile(filepath.Join(v.xfer, xferKernel)); rerr == nil {
		res.Kernel = strings.TrimSpace(string(k))
	}
	t0, err0 := v.uptime(xferStart)
	t1, err1 := v.uptime(xferEnd)
	if err0 == nil {
		res.Boot = t0
	}
	if err0 == nil && err1 == nil {
		res.Command = t1 - t0
	}
	rcData, rcErr := os.ReadFile(filepath.Join(v.xfer, xferRC))
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("vmtest: %w", ctx.Err())
	case tctx.Err() != nil:
		return res, v.vmError(ErrTimeout, fmt.Sprintf("the run did not end within %v (QEMU killed)", v.opts.Timeout))
	case err != nil:
		return res, v.vmError(ErrVM, fmt.Sprintf("%s: %v", qemuBinary, err))
	case rcErr != nil:
		return res, v.vmError(ErrVM, "the VM ended without running stage 2 to its end")
	case fileExists(filepath.Join(v.xfer, xferSetupFailed)) || err0 != nil:
		return res, v.vmError(ErrVM, "the setup in the VM failed before the command ran")
	}
	rc, err := strconv.Atoi(strings.TrimSpace(string(rcData)))
	if err != nil {
		return res, v.vmError(ErrVM, fmt.Sprintf("bad exit status %q", rcData))
	}
	if err1 != nil {
		return res, v.vmError(ErrVM, "the command's end was not recorded")
	}
	res.ExitCode = rc
	if !outWhole || !errWhole {
		return res, v.vmError(ErrVM, "the command's output did not arrive whole (no end marker)")
	}
	if outF.err != nil {
		return res, fmt.Errorf("vmtest: write the command's stdout: %w", outF.err)
	}
	if errF.err != nil {
		return res, fmt.Errorf("vmtest: write the command's stderr: %w", errF.err)
	}
	return res, nil
}

func (v *vm) uptime(name string) (time.Duration, error) {
	data, err := os.ReadFile(filepath.Join(v.xfer, name))
	if err != nil {
		return 0, err
	}
	s, err := parseUptime(data)
	if err != nil {
		return 0, err
	}
	return time.Duration(s * float64(time.Second)), nil
}

func (v *vm) vmError(kind error, detail string) error {
	read := func(p string) string {
		b, _ := os.ReadFile(p)
		return string(bytes.ToValidUTF8(b, []byte("?")))
	}
	return &VMError{
		Err:      kind,
		Detail:   detail,
		QEMU:     read(filepath.Join(v.run, "qemu.log")),
		Console:  read(filepath.Join(v.run, "console.log")),
		SetupLog: read(filepath.Join(v.xfer, xferSetupLog)),
		Kept:     v.kept,
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
