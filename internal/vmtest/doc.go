// Package vmtest runs tests that need device-mapper (dm-thin for the
// lvm_thin driver, dm-snapshot for the file driver, dm-crypt) in a
// throw-away QEMU VM, for hosts whose kernel has no device-mapper and
// whose KVM cannot run a guest: QEMU's TCG emulation boots a Debian kernel
// in a few seconds.
//
// # The VM
//
// The guest's root is the host's root filesystem, shared read-only over
// 9p, so a command sees the host's binaries (lvm, dmsetup, losetup, the
// test binary) at their paths. Writable are /tmp (a guest overlay whose
// lower layer is the host's /tmp: host files there are visible, writes
// stay in the VM), /run, /var/tmp, /dev and /etc/lvm (a guest copy with an
// lvm.conf for a system without udev, lvmpolld, a devices file or
// monitoring), plus the host directories in Options.RW. A fresh sparse
// disk (/dev/vda) is, as Options.Setup says, left empty, made a VG, or a
// VG with a thin pool. The command runs with a minimal environment (PATH,
// HOME, TMPDIR=/tmp, LANG=C.UTF-8, VMPOOL_IN_VM=1, VMTEST_DISK, VMTEST_VG
// and VMTEST_THINPOOL when they exist, DM_DISABLE_UDEV=1 so that dmsetup
// and cryptsetup make their /dev/mapper nodes without udev as lvm does,
// then Options.Env); its stdout and
// stderr come back byte for byte over virtio serial ports, and Run returns
// its exit status. Nothing persists: the disk and the guest's writes are
// gone after the run.
//
// The kernel (Debian's generic amd64 flavour, which has 9p; the package
// linux-image-amd64 depends on, its -unsigned twin if apt knows it) and
// busybox-static are fetched once with apt-get download and cached, with
// only the parts a VM needs (the kernel, unpacked to an ELF vmlinux that
// boots faster; the modules of drivers/md, virtio, 9p, overlayfs, crypto
// and lib; modules.builtin), in CacheDir:
// $VMPOOL_VMTEST_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/vmpool/vmtest.
// A file lock guards the download, so test binaries running at once share
// it; later runs read the cache only and work offline. VMPOOL_VMTEST_REFRESH=1
// asks apt again. The initramfs (busybox, an init script and the modules
// in dependency order, read from their .modinfo) is built for each run.
//
// # The convention for packages
//
// A package whose tests need the VM puts them in files tagged
// //go:build vmtest; each such test starts by failing unless vmtest.InVM().
// One host file tagged //go:build !vmtest runs them:
//
//	func TestInVM(t *testing.T) {
//		vmtest.RunTests(t, vmtest.Options{Modules: []string{"dm-crypt"}})
//	}
//
// RunTests builds the package's test binary with -tags vmtest (which
// leaves TestInVM out, so nothing recurses), boots a VM and runs it there.
// So `go test ./...` on the host runs the VM tests through TestInVM and
// never skips them one by one; without root, QEMU or the kernel download,
// TestInVM skips (fails under VMPOOL_REQUIRE=all). Tests that need no
// device-mapper stay untagged and run on the host. To run one package's
// VM tests by hand:
//
//	go test -v -run TestInVM ./lvm                       # all of them
//	VMPOOL_VMTEST_RUN=TestThin go test -v -run TestInVM ./lvm
//
// Errors of the VM itself (ErrVM, ErrTimeout) come as a *VMError holding
// QEMU's stderr, the console and the setup log; VMPOOL_VMTEST_KEEP=1 keeps
// the run's directory and VMPOOL_VMTEST_APPEND adds to the kernel's
// command line (loglevel=7).
package vmtest
