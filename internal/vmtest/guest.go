package vmtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// msize is the 9p message size: larger messages make reads of the host's
// files (test binaries, lvm's libraries) several times faster.
const msize = 512000

// Names of the files the guest writes into the transfer directory (a 9p
// share, /run/vmtest in the guest).
const (
	xferRC          = "rc"           // exit status of stage 2, written last
	xferSetupFailed = "setup_failed" // stage 2 failed before the command
	xferStart       = "t_start"      // guest uptime when the command started
	xferEnd         = "t_end"        // guest uptime when it ended
	xferKernel      = "kernel"       // uname -r
	xferSetupLog    = "setup.log"    // output of stage 2's own commands
	xferStage2      = "stage2.sh"
	xferLVMConf     = "lvm.conf"
	xferAckOut      = "ack.out" // written by the host: stdout's end marker came
	xferAckErr      = "ack.err" // the same for stderr
)

// initScript is /init of the initramfs, run by busybox sh: it loads the
// modules, mounts the host's root read-only over 9p with writable /tmp
// (an overlay whose lower layer is the host's /tmp), /run, /var/tmp and
// /dev, mounts the transfer directory at /run/vmtest and runs stage 2
// chrooted into the host's root with stdout and stderr on the virtio
// serial ports vmtest.out and vmtest.err. Then it records stage 2's exit
// status, writes marker to both ports after the command's output, waits
// until the host has seen them (ack files in the transfer directory; at
// most a minute) and reboots, which ends QEMU (-no-reboot).
//
// A failure before stage 2 prints "vmtest-init: FAILED: ..." on the
// console and ends the VM without an exit status.
func initScript(marker string) string {
	return fmt.Sprintf(`#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
R=/mnt/root
say() { read up x </proc/uptime; echo "vmtest-init[$up]: $*"; }
die() { say "FAILED: $*"; sync; reboot -f; sleep 10; }
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/load.order); do
	insmod /lib/modules/$m.ko || die "insmod $m"
done
say "modules loaded"
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=%[1]d,cache=loose vmroot $R || die "mount the host root over 9p"
mount -t proc proc $R/proc && mount -t sysfs sysfs $R/sys && mount -t devtmpfs devtmpfs $R/dev || die "mount /proc /sys /dev"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tmpfs -o mode=755 tmpfs $R/run || die "mount /run"
mkdir -p $R/run/vmtest-tmp && mount -t tmpfs -o mode=755 tmpfs $R/run/vmtest-tmp &&
	mkdir -p $R/run/vmtest-tmp/upper $R/run/vmtest-tmp/work && chmod 1777 $R/run/vmtest-tmp/upper &&
	mount -t overlay -o lowerdir=$R/tmp,upperdir=$R/run/vmtest-tmp/upper,workdir=$R/run/vmtest-tmp/work overlay $R/tmp ||
	die "overlay on /tmp"
if [ -d $R/var/tmp ]; then mount -t tmpfs -o mode=1777 tmpfs $R/var/tmp || die "mount /var/tmp"; fi
mkdir -p $R/run/vmtest $R/run/lock $R/run/lvm
mount -t 9p -o trans=virtio,version=9p2000.L,msize=%[1]d,cache=none vmxfer $R/run/vmtest || die "mount the transfer directory"
OUT= ERR=
for p in /sys/class/virtio-ports/*; do
	case $(cat $p/name 2>/dev/null) in
	vmtest.out) OUT=/dev/${p##*/} ;;
	vmtest.err) ERR=/dev/${p##*/} ;;
	esac
done
[ -n "$OUT" ] && [ -n "$ERR" ] || die "no virtio serial ports vmtest.out and vmtest.err"
say "starting stage 2"
chroot $R /bin/sh /run/vmtest/%[2]s </dev/null >$OUT 2>$ERR
rc=$?
echo $rc >$R/run/vmtest/%[3]s.tmp && mv $R/run/vmtest/%[3]s.tmp $R/run/vmtest/%[3]s
say "stage 2 exited with status $rc"
printf '%%s' '%[4]s' >$OUT
printf '%%s' '%[4]s' >$ERR
i=0
while [ ! -e $R/run/vmtest/%[5]s ] || [ ! -e $R/run/vmtest/%[6]s ]; do
	i=$((i+1))
	if [ $i -gt 1200 ]; then say "the host did not see the end of the output"; break; fi
	usleep 50000
done
sync
reboot -f
`, msize, xferStage2, xferRC, marker, xferAckOut, xferAckErr)
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// stage2 holds what the stage 2 script needs to know.
type stage2 struct {
	path   string   // PATH of stage 2 and of the command
	rw     []string // host directories shared read-write, mount tags vmrw0...
	setup  Setup
	vg     string
	pool   string
	poolSz int64
	dir    string
	env    []string // the command's whole environment
	argv   []string
}

// script returns stage 2: it runs chrooted in the host's root with the
// command's stdout and stderr on fds 1 and 2, logs its own work to
// setup.log, shares the --rw directories, puts a guest copy of /etc/lvm
// with our lvm.conf in place, sets up LVM, and runs the command with
// exactly the environment env, in dir.
func (s *stage2) script() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("#!/bin/sh")
	w("# written by vmpool's internal/vmtest: stage 2, run in the VM chrooted into the host's root")
	w("set -u")
	w("X=/run/vmtest")
	w("exec 3>&1 4>&2 >>$X/%s 2>&1", xferSetupLog)
	w("PATH=%s LVM_SUPPRESS_FD_WARNINGS=1", shellQuote(s.path))
	w("export PATH LVM_SUPPRESS_FD_WARNINGS")
	w(`say() { read -r up _ </proc/uptime; echo "vmtest[$up]: $*"; }`)
	w(`fail() { say "setup failed: $*"; : >$X/%s; exit 125; }`, xferSetupFailed)
	w("say 'stage 2 start'")
	w("uname -r >$X/%s", xferKernel)
	for i, d := range s.rw {
		w("mount -t 9p -o trans=virtio,version=9p2000.L,msize=%d,cache=none vmrw%d %s || fail %s",
			msize, i, shellQuote(d), shellQuote("share "+d+" read-write"))
	}
	w("if [ -d /etc/lvm ]; then")
	w("\tmkdir -p /run/vmtest-etc-lvm && cp -a /etc/lvm/. /run/vmtest-etc-lvm/ && mount --bind /run/vmtest-etc-lvm /etc/lvm || fail 'a guest copy of /etc/lvm'")
	w("\tcp $X/%s /etc/lvm/lvm.conf && rm -f /etc/lvm/lvmlocal.conf || fail 'write /etc/lvm/lvm.conf'", xferLVMConf)
	w("fi")
	w("DISK=/dev/vda")
	w(`[ -b $DISK ] || fail "no virtio disk $DISK"`)
	if s.setup != SetupNone {
		w("pvcreate -q -y $DISK || fail pvcreate")
		w("vgcreate -q %s $DISK || fail vgcreate", shellQuote(s.vg))
	}
	if s.setup == SetupThinPool {
		w("lvcreate -q --type thin-pool -L %db -n %s %s || fail 'lvcreate --type thin-pool'", s.poolSz, shellQuote(s.pool), shellQuote(s.vg))
	}
	w("cd %s || fail %s", shellQuote(s.dir), shellQuote("cd "+s.dir))
	w("say 'setup done, running the command'")
	w("read -r up _ </proc/uptime; echo $up >$X/%s", xferStart)
	var cmd strings.Builder
	cmd.WriteString("env -i --")
	for _, kv := range s.env {
		cmd.WriteString(" " + shellQuote(kv))
	}
	for _, a := range s.argv {
		cmd.WriteString(" " + shellQuote(a))
	}
	w("%s 1>&3 2>&4 3>&- 4>&-", cmd.String())
	w("rc=$?")
	w("read -r up _ </proc/uptime; echo $up >$X/%s", xferEnd)
	w(`say "the command exited with status $rc"`)
	w("exit $rc")
	return b.String()
}

// buildInitramfs writes the initramfs: busybox, /init (with the output's
// end marker), the modules in
// load order (lib/modules/NAME.ko, lib/modules/load.order) and
// /dev/console, so that init's messages reach the console.
func buildInitramfs(busybox, modDir string, order []string, marker string) ([]byte, error) {
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	for _, d := range []string{"bin", "dev", "proc", "sys", "mnt", "mnt/root", "lib", "lib/modules"} {
		c.Dir(d, 0o755)
	}
	c.CharDev("dev/console", 0o600, 5, 1)
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return nil, err
	}
	c.File("bin/busybox", 0o755, bb)
	c.File("init", 0o755, []byte(initScript(marker)))
	for _, m := range order {
		data, err := os.ReadFile(filepath.Join(modDir, m+".ko"))
		if err != nil {
			return nil, err
		}
		c.File("lib/modules/"+m+".ko", 0o644, data)
	}
	c.File("lib/modules/load.order", 0o644, []byte(strings.Join(order, "\n")+"\n"))
	if err := c.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// parseUptime parses a guest uptime written by stage 2 ("12.34\n").
func parseUptime(data []byte) (float64, error) {
	return strconv.ParseFloat(strings.TrimSpace(string(data)), 64)
}
