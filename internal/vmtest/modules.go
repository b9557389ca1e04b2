package vmtest

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultModules are the kernel modules every VM loads (with what they
// depend on): virtio for the disk, the consoles and 9p, the 9p and overlay
// filesystems of the root and /tmp, loop devices, and the device-mapper
// targets the storage drivers use (thin-pool, snapshot, zero). A module
// built into the kernel is skipped. Options.Modules adds more.
var DefaultModules = []string{
	"virtio_pci", "virtio_mmio", "virtio_blk", "virtio_console",
	"9pnet_virtio", "9p", "overlay", "loop",
	"dm_mod", "dm_bufio", "dm_bio_prison", "dm_persistent_data",
	"dm_thin_pool", "dm_snapshot", "dm_zero",
}

// modinfo is what the .modinfo section of a kernel module says about
// loading it.
type modinfo struct {
	name    string   // name=, if the module records it
	depends []string // depends=: must be loaded first
	softPre []string // softdep=pre:: loaded first when they exist
	aliases []string // alias=
}

// normModule is the canonical form of a module name: the kernel treats
// '-' and '_' alike.
func normModule(name string) string { return strings.ReplaceAll(name, "-", "_") }

// validModule reports whether name can be a module name (and so a file
// name in the initramfs).
func validModule(name string) bool {
	if name == "" || len(name) > 64 {
		return false
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// parseModinfo parses the contents of a module's .modinfo section: NUL
// separated key=value strings (runs of NULs pad it). It refuses an entry
// without '=' and module names in depends, softdep or name that are not
// module names; it keeps aliases as they are (they are patterns, and only
// compared).
func parseModinfo(sec []byte) (modinfo, error) {
	var mi modinfo
	for _, entry := range bytes.Split(sec, []byte{0}) {
		if len(entry) == 0 {
			continue
		}
		key, value, ok := strings.Cut(string(entry), "=")
		if !ok || key == "" {
			return modinfo{}, fmt.Errorf("modinfo: entry %q is not key=value", entry)
		}
		switch key {
		case "name":
			if !validModule(value) {
				return modinfo{}, fmt.Errorf("modinfo: bad module name %q", value)
			}
			mi.name = normModule(value)
		case "depends":
			for _, d := range strings.Split(value, ",") {
				if d == "" {
					continue
				}
				if !validModule(d) {
					return modinfo{}, fmt.Errorf("modinfo: bad module name %q in depends", d)
				}
				mi.depends = append(mi.depends, normModule(d))
			}
		case "softdep":
			// "pre: a b post: c"; only the pre: part matters here.
			pre := false
			for _, f := range strings.Fields(value) {
				switch {
				case f == "pre:":
					pre = true
				case f == "post:":
					pre = false
				case strings.HasSuffix(f, ":"):
					return modinfo{}, fmt.Errorf("modinfo: unknown softdep part %q", f)
				case pre:
					if !validModule(f) {
						return modinfo{}, fmt.Errorf("modinfo: bad module name %q in softdep", f)
					}
					mi.softPre = append(mi.softPre, normModule(f))
				}
			}
		case "alias":
			mi.aliases = append(mi.aliases, value)
		}
	}
	return mi, nil
}

// readModinfo reads and parses the .modinfo section of the module file at
// path (an uncompressed ELF object).
func readModinfo(path string) (modinfo, error) {
	f, err := elf.Open(path)
	if err != nil {
		return modinfo{}, fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return modinfo{}, fmt.Errorf("module %s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return modinfo{}, fmt.Errorf("module %s: .modinfo: %w", path, err)
	}
	mi, err := parseModinfo(data)
	if err != nil {
		return modinfo{}, fmt.Errorf("module %s: %w", path, err)
	}
	return mi, nil
}

// moduleSource is where moduleOrder finds modules: the modules of one
// kernel, by canonical name.
type moduleSource interface {
	// info returns the modinfo of module name; ok is false if there is no
	// such module file.
	info(name string) (mi modinfo, ok bool, err error)
	// builtin reports whether name is built into the kernel.
	builtin(name string) bool
	// alias returns the module that provides alias a, if any.
	alias(a string) (name string, ok bool, err error)
}

// moduleOrder returns the modules to load for want, each after what it
// depends on (depends=, then the softdep pre: ones, which come first), and
// each once. A wanted module or a dependency that is neither a module file
// nor built in is an error; a soft dependency that cannot be found is
// skipped, as modprobe does, after trying it as an alias (softdeps such
// as "crc32c" name an alias of crc32c_generic). Cycles cannot occur in a
// real kernel; a module already on the way is not visited again.
func moduleOrder(src moduleSource, want []string) ([]string, error) {
	var order []string
	seen := map[string]bool{}
	var add func(name string, soft bool, path []string) error
	add = func(name string, soft bool, path []string) error {
		name = normModule(name)
		if !validModule(name) {
			return fmt.Errorf("bad kernel module name %q", name)
		}
		if seen[name] {
			return nil
		}
		seen[name] = true
		mi, ok, err := src.info(name)
		if err != nil {
			return err
		}
		if !ok && soft {
			if real, found, err := src.alias(name); err != nil {
				return err
			} else if found {
				return add(real, soft, path)
			}
		}
		if !ok {
			if src.builtin(name) || soft {
				return nil
			}
			if len(path) > 0 {
				return fmt.Errorf("kernel module %s (needed by %s) not found", name, strings.Join(path, " <- "))
			}
			return fmt.Errorf("kernel module %s not found", name)
		}
		path = append([]string{name}, path...)
		for _, d := range mi.softPre {
			if err := add(d, true, path); err != nil {
				return err
			}
		}
		for _, d := range mi.depends {
			if err := add(d, false, path); err != nil {
				return err
			}
		}
		order = append(order, name)
		return nil
	}
	for _, m := range want {
		if err := add(m, false, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleDir is a moduleSource over a kernel's cached module directory:
// flat NAME.ko files (uncompressed) plus the kernel's modules.builtin.
type moduleDir struct {
	dir      string
	builtins map[string]bool
	infos    map[string]modinfo
	aliases  map[string][]string // alias -> modules, read on first use
}

func openModuleDir(dir, builtinFile string) (*moduleDir, error) {
	md := &moduleDir{dir: dir, builtins: map[string]bool{}, infos: map[string]modinfo{}}
	f, err := os.Open(builtinFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// kernel/drivers/virtio/virtio.ko
			base := filepath.Base(strings.TrimSpace(sc.Text()))
			if base, ok := strings.CutSuffix(base, ".ko"); ok {
				md.builtins[normModule(base)] = true
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w", builtinFile, err)
		}
	}
	return md, nil
}

func (md *moduleDir) path(name string) string { return filepath.Join(md.dir, name+".ko") }

func (md *moduleDir) info(name string) (modinfo, bool, error) {
	if mi, ok := md.infos[name]; ok {
		return mi, true, nil
	}
	p := md.path(name)
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return modinfo{}, false, nil
	}
	mi, err := readModinfo(p)
	if err != nil {
		return modinfo{}, false, err
	}
	md.infos[name] = mi
	return mi, true, nil
}

func (md *moduleDir) builtin(name string) bool { return md.builtins[name] }

func (md *moduleDir) alias(a string) (string, bool, error) {
	if md.aliases == nil {
		md.aliases = map[string][]string{}
		files, err := filepath.Glob(filepath.Join(md.dir, "*.ko"))
		if err != nil {
			return "", false, err
		}
		for _, f := range files {
			name := strings.TrimSuffix(filepath.Base(f), ".ko")
			mi, ok, err := md.info(name)
			if err != nil || !ok {
				continue // an unreadable module cannot provide an alias we load
			}
			for _, al := range mi.aliases {
				md.aliases[normModule(al)] = append(md.aliases[normModule(al)], name)
			}
		}
	}
	mods := md.aliases[normModule(a)]
	if len(mods) == 0 {
		return "", false, nil
	}
	// Prefer the generic implementation (crc32c -> crc32c_generic), else
	// the first by name, so the choice is stable.
	sort.Strings(mods)
	for _, m := range mods {
		if m == normModule(a)+"_generic" {
			return m, true, nil
		}
	}
	return mods[0], true, nil
}
