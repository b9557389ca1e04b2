package vmtest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/google/renameio/v2"

	"github.com/vmpool/vmpool/internal/fsutil"
)

// Environment variables of the kernel cache.
const (
	// EnvCache names the cache directory of the kernel and busybox.
	EnvCache = "VMPOOL_VMTEST_CACHE"
	// EnvRefresh, set to 1, asks apt for the current kernel and busybox
	// again instead of using the cached ones (and fetches them if new).
	EnvRefresh = "VMPOOL_VMTEST_REFRESH"
	// EnvKernelPackage pins the kernel package (for example
	// linux-image-6.12.57+deb13-amd64-unsigned) instead of the one
	// linux-image-amd64 depends on.
	EnvKernelPackage = "VMPOOL_VMTEST_KERNEL_PKG"
)

// kernelFlavour is the Debian kernel flavour. The generic amd64 one: the
// cloud-amd64 kernel is built without 9p.
const kernelFlavour = "amd64"

// moduleDirs are the parts of a kernel package's module tree that are
// kept in the cache: what DefaultModules need, and what callers may add
// (dm-crypt, dm-flakey, their crypto dependencies, the filesystems the
// drivers' tests make: ext4, btrfs, XFS).
var moduleDirs = []string{
	"drivers/md/", "drivers/virtio/", "drivers/block/", "drivers/char/hw_random/",
	"drivers/char/virtio_console.ko",
	"fs/9p/", "net/9p/", "fs/netfs/", "fs/fscache/", "fs/overlayfs/",
	"fs/ext4/", "fs/jbd2/", "fs/mbcache.ko", "fs/btrfs/", "fs/xfs/",
	"lib/", "crypto/", "arch/x86/crypto/",
}

// CacheDir returns the cache directory of the kernel and busybox:
// $VMPOOL_VMTEST_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/vmpool/vmtest.
func CacheDir() (string, error) {
	if d := os.Getenv(EnvCache); d != "" {
		return filepath.Abs(d)
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("vmtest cache: %w (set %s)", err, EnvCache)
	}
	return filepath.Join(d, "vmpool", "vmtest"), nil
}

// assets are the cached files one VM boots from.
type assets struct {
	KernelDir string `json:"kernel"`  // base name of the kernel's directory in the cache
	Busybox   string `json:"busybox"` // base name of busybox' directory in the cache

	cache string
}

// image is the kernel file QEMU boots: the uncompressed ELF vmlinux when
// there is one (it boots through PVH, ~2.4 s faster under TCG than
// decompressing the bzImage), else the bzImage.
func (a *assets) image() string {
	p := filepath.Join(a.cache, a.KernelDir, "vmlinux")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return filepath.Join(a.cache, a.KernelDir, "vmlinuz")
}

func (a *assets) modules() string     { return filepath.Join(a.cache, a.KernelDir, "modules") }
func (a *assets) builtinFile() string { return filepath.Join(a.cache, a.KernelDir, "modules.builtin") }
func (a *assets) busyboxPath() string { return filepath.Join(a.cache, a.Busybox, "busybox") }

const (
	completeFile = ".complete" // written last into a finished cache entry
	currentFile  = "current.json"
	// cacheLayout is the first line of a finished entry's .complete: it
	// changes when an entry holds other files (say, more module
	// directories), and an entry of another layout is fetched again.
	cacheLayout = "vmtest cache layout 2"
)

// entryComplete reports whether the cache entry dir is finished, in the
// current layout.
func entryComplete(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, completeFile))
	if err != nil {
		return false
	}
	first, _, _ := strings.Cut(string(data), "\n")
	return first == cacheLayout
}

func (a *assets) complete() bool {
	return entryComplete(filepath.Join(a.cache, a.KernelDir)) && entryComplete(filepath.Join(a.cache, a.Busybox))
}

// prepareMu serialises preparation within this process; the flock on the
// cache directory serialises it between processes.
var prepareMu sync.Mutex

// prepare returns the cached kernel and busybox, fetching them with apt
// first if the cache has none (or EnvRefresh is set). The fast path reads
// only current.json: no apt, no network.
func prepare(ctx context.Context) (*assets, error) {
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	refresh := os.Getenv(EnvRefresh) == "1" || os.Getenv(EnvKernelPackage) != ""
	if !refresh {
		if a, err := readCurrent(cache); err == nil && a.complete() {
			return a, nil
		}
	}
	prepareMu.Lock()
	defer prepareMu.Unlock()
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("vmtest cache: %w", err)
	}
	lock, err := fsutil.LockPath(ctx, cache)
	if err != nil {
		return nil, fmt.Errorf("vmtest cache: %w", err)
	}
	defer lock.Unlock()
	// Leftovers of a preparation that was killed: nobody else prepares
	// while we hold the lock.
	if tmps, err := filepath.Glob(filepath.Join(cache, ".tmp-*")); err == nil {
		for _, tmp := range tmps {
			_ = os.RemoveAll(tmp)
		}
	}
	if !refresh { // another process may have finished it while we waited
		if a, err := readCurrent(cache); err == nil && a.complete() {
			return a, nil
		}
	}
	return fetchAssets(ctx, cache)
}

func readCurrent(cache string) (*assets, error) {
	data, err := os.ReadFile(filepath.Join(cache, currentFile))
	if err != nil {
		return nil, err
	}
	a := &assets{cache: cache}
	if err := json.Unmarshal(data, a); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(cache, currentFile), err)
	}
	if a.KernelDir == "" || a.Busybox == "" || filepath.Base(a.KernelDir) != a.KernelDir || filepath.Base(a.Busybox) != a.Busybox {
		return nil, fmt.Errorf("%s: bad entry", filepath.Join(cache, currentFile))
	}
	return a, nil
}

// fetchAssets resolves the kernel and busybox packages with apt, fetches
// what the cache lacks, and records them in current.json. The caller holds
// the cache lock.
func fetchAssets(ctx context.Context, cache string) (*assets, error) {
	if err := ensureAptLists(ctx); err != nil {
		return nil, err
	}
	kpkg := os.Getenv(EnvKernelPackage)
	if kpkg == "" {
		var err error
		if kpkg, err = kernelPackage(ctx); err != nil {
			return nil, err
		}
	}
	kver, err := aptVersion(ctx, kpkg)
	if err != nil {
		return nil, err
	}
	bver, err := aptVersion(ctx, "busybox-static")
	if err != nil {
		return nil, err
	}
	a := &assets{
		cache:     cache,
		KernelDir: cacheName(kpkg, kver),
		Busybox:   cacheName("busybox-static", bver),
	}
	if !entryComplete(filepath.Join(cache, a.KernelDir)) {
		if err := fetchEntry(ctx, cache, a.KernelDir, kpkg, extractKernel); err != nil {
			return nil, err
		}
	}
	if !entryComplete(filepath.Join(cache, a.Busybox)) {
		if err := fetchEntry(ctx, cache, a.Busybox, "busybox-static", extractBusybox); err != nil {
			return nil, err
		}
	}
	data, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := renameio.WriteFile(filepath.Join(cache, currentFile), append(data, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("vmtest cache: %w", err)
	}
	return a, nil
}

// cacheName is the directory name of a package version in the cache
// (epochs' ':' become '_').
func cacheName(pkg, version string) string {
	return pkg + "_" + strings.ReplaceAll(version, ":", "_")
}

// fetchEntry downloads pkg into a temporary directory of the cache,
// extracts it with extract into a new directory and renames that to
// name once it is complete. The .deb is removed.
func fetchEntry(ctx context.Context, cache, name, pkg string, extract func(ctx context.Context, deb, dst string) error) error {
	tmp, err := os.MkdirTemp(cache, ".tmp-")
	if err != nil {
		return fmt.Errorf("vmtest cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	if _, err := command(ctx, tmp, "apt-get", "download", "-q", pkg); err != nil {
		return fmt.Errorf("download %s: %w", pkg, err)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("download %s: apt-get download left %d .deb files", pkg, len(debs))
	}
	dst := filepath.Join(tmp, "entry")
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	if err := extract(ctx, debs[0], dst); err != nil {
		return fmt.Errorf("unpack %s: %w", filepath.Base(debs[0]), err)
	}
	if err := os.WriteFile(filepath.Join(dst, completeFile), []byte(cacheLayout+"\n"+filepath.Base(debs[0])+"\n"), 0o644); err != nil {
		return err
	}
	final := filepath.Join(cache, name)
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	if err := os.Rename(dst, final); err != nil {
		return fmt.Errorf("vmtest cache: %w", err)
	}
	return nil
}

// command runs name with args in dir and returns its stdout; a failure's
// error holds its stderr.
func command(ctx context.Context, dir, name string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// ensureAptLists runs apt-get update when apt knows no busybox-static,
// which means it has no package lists (a fresh container).
func ensureAptLists(ctx context.Context) error {
	if _, err := aptVersion(ctx, "busybox-static"); err == nil {
		return nil
	}
	if _, err := command(ctx, "", "apt-get", "update", "-qq"); err != nil {
		return fmt.Errorf("vmtest: apt has no package lists: %w", err)
	}
	return nil
}

// aptVersion returns the candidate version of pkg.
func aptVersion(ctx context.Context, pkg string) (string, error) {
	out, err := command(ctx, "", "apt-cache", "show", "--no-all-versions", pkg)
	if err != nil {
		return "", err
	}
	if v := debField(out, "Version"); v != "" {
		return v, nil
	}
	return "", fmt.Errorf("apt-cache show %s: no Version", pkg)
}

// debField returns the first value of field in a control-file stanza.
func debField(stanza []byte, field string) string {
	sc := bufio.NewScanner(bytes.NewReader(stanza))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+": "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

var kernelDependsRE = regexp.MustCompile(`(?m)^\s*Depends: (linux-image-[0-9][^ ]*-` + kernelFlavour + `)$`)

// kernelPackage resolves the kernel package as apt would install it: the
// package linux-image-amd64 depends on (linux-image-6.1.0-NN-amd64), else
// the newest versioned linux-image-*-amd64 apt knows, and its -unsigned
// twin when apt knows that (the same kernel and modules).
func kernelPackage(ctx context.Context) (string, error) {
	base := ""
	if out, err := command(ctx, "", "apt-cache", "depends", "linux-image-"+kernelFlavour); err == nil {
		if m := kernelDependsRE.FindSubmatch(out); m != nil {
			base = string(m[1])
		}
	}
	if base == "" {
		out, err := command(ctx, "", "apt-cache", "search", "--names-only", `^linux-image-[0-9].*-`+kernelFlavour+`(-unsigned)?$`)
		if err != nil {
			return "", err
		}
		for _, line := range strings.Split(string(out), "\n") {
			name, _, _ := strings.Cut(line, " ")
			name = strings.TrimSuffix(name, "-unsigned")
			if name != "" && (base == "" || naturalLess(base, name)) {
				base = name
			}
		}
	}
	if base == "" {
		return "", fmt.Errorf("vmtest: apt knows no linux-image-*-%s package (run apt-get update)", kernelFlavour)
	}
	if _, err := aptVersion(ctx, base+"-unsigned"); err == nil {
		return base + "-unsigned", nil
	}
	return base, nil
}

// naturalLess compares strings with runs of digits compared as numbers,
// so that linux-image-6.1.0-10 sorts after linux-image-6.1.0-9.
func naturalLess(a, b string) bool {
	for a != "" && b != "" {
		da, db := digits(a), digits(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if len(na) != len(nb) {
				return len(na) < len(nb)
			}
			if na != nb {
				return na < nb
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func digits(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

// debTar runs fn over the data tar stream of a .deb (dpkg-deb does the
// decompression, whatever the .deb uses).
func debTar(ctx context.Context, deb string, fn func(hdr *tar.Header, r io.Reader) error) error {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dpkg-deb: %w", err)
	}
	tr := tar.NewReader(out)
	var walkErr error
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			walkErr = fmt.Errorf("read %s: %w", filepath.Base(deb), err)
			break
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		if err := fn(hdr, tr); err != nil {
			walkErr = err
			break
		}
	}
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil && walkErr == nil {
		walkErr = fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", filepath.Base(deb), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return walkErr
}

// extractKernel keeps, of a kernel package, the kernel, its config,
// modules.builtin and the modules under moduleDirs, uncompressed and flat
// (modules/NAME.ko). The kernel is the ELF vmlinux unpacked from the
// bzImage when the kernel can boot that way (CONFIG_PVH) and the
// payload's decompressor is at hand, else the bzImage (vmlinuz; then
// vmlinux.skipped says why).
func extractKernel(ctx context.Context, deb, dst string) error {
	mods := filepath.Join(dst, "modules")
	if err := os.Mkdir(mods, 0o755); err != nil {
		return err
	}
	var haveImage bool
	err := debTar(ctx, deb, func(hdr *tar.Header, r io.Reader) error {
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		switch {
		case strings.HasPrefix(name, "boot/vmlinuz-"):
			haveImage = true
			return writeFrom(filepath.Join(dst, "vmlinuz"), r)
		case strings.HasPrefix(name, "boot/config-"):
			return writeFrom(filepath.Join(dst, "config"), r)
		case path.Base(name) == "modules.builtin":
			return writeFrom(filepath.Join(dst, "modules.builtin"), r)
		}
		_, rel, ok := strings.Cut(name, "/kernel/")
		if !ok || !strings.Contains(name, "modules/") {
			return nil
		}
		keep := false
		for _, d := range moduleDirs {
			if strings.HasPrefix(rel, d) {
				keep = true
			}
		}
		if !keep {
			return nil
		}
		base := path.Base(rel)
		mod, comp, ok := strings.Cut(base, ".ko")
		if !ok || !validModule(mod) {
			return nil
		}
		return writeModule(ctx, filepath.Join(mods, normModule(mod)+".ko"), comp, r)
	})
	if err != nil {
		return err
	}
	if !haveImage {
		return errors.New("no boot/vmlinuz-* in the package")
	}
	if err := unpackVmlinux(ctx, filepath.Join(dst, "vmlinuz"), filepath.Join(dst, "config"), filepath.Join(dst, "vmlinux")); err != nil {
		// Not fatal: the bzImage boots too, only slower.
		return os.WriteFile(filepath.Join(dst, "vmlinux.skipped"), []byte(err.Error()+"\n"), 0o644)
	}
	return os.Remove(filepath.Join(dst, "vmlinuz")) // not needed any more
}

// writeModule writes a module uncompressed: comp is what followed ".ko"
// in its name ("", ".xz", ".gz", ".zst").
func writeModule(ctx context.Context, dst, comp string, r io.Reader) error {
	switch comp {
	case "":
		return writeFrom(dst, r)
	case ".gz":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return fmt.Errorf("%s: %w", dst, err)
		}
		return writeFrom(dst, zr)
	case ".xz", ".zst":
		tool := map[string]string{".xz": "xz", ".zst": "zstd"}[comp]
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("the kernel's modules are %s-compressed and %s is not installed (make deps)", tool, tool)
		}
		return filterTo(ctx, dst, r, tool, "-dc")
	}
	return nil // another kind of file (.ko.sig...)
}

func filterTo(ctx context.Context, dst string, r io.Reader, name string, args ...string) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = r
	cmd.Stdout = f
	cmd.Stderr = &stderr
	err = cmd.Run()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s %s > %s: %w: %s", name, strings.Join(args, " "), dst, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

func writeFrom(dst string, r io.Reader) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return f.Close()
}

// unpackVmlinux writes the ELF kernel inside the bzImage at bz to dst, if
// config says the kernel supports PVH boot. The compressed payload's
// offset and length come from the boot protocol's setup header.
func unpackVmlinux(ctx context.Context, bz, config, dst string) error {
	cfg, err := os.ReadFile(config)
	if err != nil {
		return err
	}
	if !bytes.Contains(cfg, []byte("\nCONFIG_PVH=y\n")) {
		return errors.New("the kernel has no CONFIG_PVH")
	}
	img, err := os.ReadFile(bz)
	if err != nil {
		return err
	}
	payload, err := bzPayload(img)
	if err != nil {
		return err
	}
	tmp := dst + ".tmp"
	defer os.Remove(tmp)
	switch {
	case bytes.HasPrefix(payload, []byte("\xfd7zXZ\x00")):
		if _, err := exec.LookPath("xz"); err != nil {
			return errors.New("xz is not installed")
		}
		// The kernel appends the uncompressed size after the xz stream.
		err = filterTo(ctx, tmp, bytes.NewReader(payload), "xz", "-dc", "--single-stream")
	case bytes.HasPrefix(payload, []byte("\x1f\x8b")):
		var zr *gzip.Reader
		if zr, err = gzip.NewReader(bytes.NewReader(payload)); err == nil {
			zr.Multistream(false)
			err = writeFrom(tmp, zr)
		}
	case bytes.HasPrefix(payload, []byte("\x28\xb5\x2f\xfd")):
		if _, err := exec.LookPath("zstd"); err != nil {
			return errors.New("zstd is not installed")
		}
		err = filterTo(ctx, tmp, bytes.NewReader(payload), "zstd", "-dc")
	default:
		return errors.New("unknown compression of the kernel payload")
	}
	if err != nil {
		return err
	}
	head := make([]byte, 4)
	f, err := os.Open(tmp)
	if err != nil {
		return err
	}
	_, err = io.ReadFull(f, head)
	f.Close()
	if err != nil || string(head) != "\x7fELF" {
		return errors.New("the kernel payload is no ELF file")
	}
	return os.Rename(tmp, dst)
}

// bzPayload returns the compressed kernel inside a bzImage (x86 boot
// protocol ≥ 2.08: setup_sects at 0x1f1, "HdrS" at 0x202, payload_offset
// and payload_length at 0x248 and 0x24c, relative to the protected-mode
// code after the setup sectors).
func bzPayload(img []byte) ([]byte, error) {
	if len(img) < 0x250 || string(img[0x202:0x206]) != "HdrS" {
		return nil, errors.New("not a bzImage")
	}
	if binary.LittleEndian.Uint16(img[0x206:]) < 0x208 {
		return nil, errors.New("boot protocol older than 2.08")
	}
	setup := int(img[0x1f1])
	if setup == 0 {
		setup = 4
	}
	start := (setup + 1) * 512
	off := int(binary.LittleEndian.Uint32(img[0x248:]))
	n := int(binary.LittleEndian.Uint32(img[0x24c:]))
	if start+off < start || start+off+n > len(img) || n <= 0 {
		return nil, errors.New("bzImage payload out of range")
	}
	return img[start+off : start+off+n], nil
}

// extractBusybox keeps the static busybox binary of busybox-static.
func extractBusybox(ctx context.Context, deb, dst string) error {
	found := false
	err := debTar(ctx, deb, func(hdr *tar.Header, r io.Reader) error {
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		if name != "bin/busybox" && name != "usr/bin/busybox" {
			return nil
		}
		found = true
		p := filepath.Join(dst, "busybox")
		if err := writeFrom(p, r); err != nil {
			return err
		}
		return os.Chmod(p, 0o755)
	})
	if err != nil {
		return err
	}
	if !found {
		return errors.New("no bin/busybox in the package")
	}
	return nil
}
