package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/vmpool/vmpool/storage"
)

// blockLayer makes and removes the device-mapper devices that running
// volumes are given. dmLayer is the real one; the host tests, which have
// no device-mapper, use an emulation.
type blockLayer interface {
	// setupOrigin makes, unless they exist, the dm-snapshot device that
	// keeps img's old chunks in cow (/dev/mapper/snapshot-<img>-<cow>)
	// and the dm-snapshot-origin device over img
	// (/dev/mapper/origin-<img>), whose path it returns: the VM's writes
	// land in img.
	setupOrigin(ctx context.Context, img, cow string) (string, error)
	// setupSnapshot makes, unless they exist, the snapshot of img with
	// srcCow as its exception store (the one its origin uses) and a
	// snapshot of that one with cow as its exception store,
	// /dev/mapper/snapshot-<img>-<srcCow>-<cow>, whose path it returns.
	setupSnapshot(ctx context.Context, img, srcCow, cow string) (string, error)
	// destroy removes dev (an origin or a snapshot device of setupOrigin
	// or setupSnapshot) and what it alone used, as Qubes'
	// destroy-snapshot does; a missing dev is no error.
	destroy(ctx context.Context, dev string) error
	// resize tells the loop devices of img (truncated already) and, for
	// an origin device dev, its table the new size.
	resize(ctx context.Context, dev, img string, size int64) error
}

// CommandError is a failed losetup, dmsetup or blockdev run by the file
// driver's device-mapper layer: the command line and what it printed on
// stderr.
type CommandError struct {
	Args   []string
	Stderr string
	Err    error
}

// Error names the command, its error and its stderr.
func (e *CommandError) Error() string {
	msg := strings.Join(e.Args, " ") + ": " + e.Err.Error()
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

// Unwrap returns the cause (an *exec.ExitError, or why it did not run).
func (e *CommandError) Unwrap() error { return e.Err }

// dmLayer runs losetup, dmsetup and blockdev, doing what Qubes'
// create-snapshot and destroy-snapshot scripts do. Its operations are
// serialised process-wide (dmMu), as Qubes' file.py serialises its
// scripts: finding a free loop device and checking which devices exist
// must not interleave.
type dmLayer struct{}

var dmMu sync.Mutex

// run runs a command with LC_ALL=C and returns its stdout.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", &CommandError{Args: append([]string{name}, args...), Stderr: stderr.String(), Err: err}
	}
	return stdout.String(), nil
}

var loopRE = regexp.MustCompile(`\A/dev/loop[0-9]+\z`)

// loop attaches file to a loop device, or finds the one it is attached to
// (--nooverlap), as create-snapshot's get_dev: an origin and the
// snapshots of its image must share one block device.
func loop(ctx context.Context, file string) (string, error) {
	out, err := run(ctx, "losetup", "--find", "--nooverlap", "--show", "--", file)
	if err != nil {
		return "", err
	}
	dev := strings.TrimSpace(out)
	if !loopRE.MatchString(dev) {
		return "", fmt.Errorf("losetup gave %q for %s, not a loop device", dev, file)
	}
	return dev, nil
}

// sectors returns the size of a block device in 512-byte sectors.
func sectors(ctx context.Context, dev string) (string, error) {
	out, err := run(ctx, "blockdev", "--getsz", dev)
	if err != nil {
		return "", err
	}
	n := strings.TrimSpace(out)
	if _, err := strconv.ParseUint(n, 10, 64); err != nil {
		return "", fmt.Errorf("blockdev --getsz %s gave %q", dev, out)
	}
	return n, nil
}

// isBlock reports whether path is a block device.
func isBlock(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
}

// createSnapshot makes the dm-snapshot dev over base with cow as its
// persistent exception store, unless it exists.
func createSnapshot(ctx context.Context, dev, base, cow string) error {
	if isBlock(dev) {
		return nil
	}
	sz, err := sectors(ctx, base)
	if err != nil {
		return err
	}
	return dmCreate(ctx, strings.TrimPrefix(dev, mapperDir), fmt.Sprintf("0 %s snapshot %s %s P %d", sz, base, cow, chunkSectors))
}

// dmCreate makes dm device name with table. The node in /dev/mapper is
// made sure of with dmsetup mknodes, for a system without udev (where
// dmsetup makes none).
func dmCreate(ctx context.Context, name, table string) error {
	if _, err := run(ctx, "dmsetup", "create", name, "--table", table); err != nil {
		return err
	}
	if isBlock(mapperDir + name) {
		return nil
	}
	_, err := run(ctx, "dmsetup", "mknodes", "--", name)
	return err
}

func (dmLayer) setupOrigin(ctx context.Context, img, cow string) (string, error) {
	dmMu.Lock()
	defer dmMu.Unlock()
	snap, err := exceptionPath(img, cow)
	if err != nil {
		return "", err
	}
	origin, err := originPath(img)
	if err != nil {
		return "", err
	}
	imgLoop, err := loop(ctx, img)
	if err != nil {
		return "", err
	}
	if !isBlock(snap) {
		cowLoop, err := loop(ctx, cow)
		if err != nil {
			return "", err
		}
		if err := createSnapshot(ctx, snap, imgLoop, cowLoop); err != nil {
			return "", err
		}
	}
	if !isBlock(origin) {
		sz, err := sectors(ctx, imgLoop)
		if err != nil {
			return "", err
		}
		if err := dmCreate(ctx, strings.TrimPrefix(origin, mapperDir), fmt.Sprintf("0 %s snapshot-origin %s", sz, imgLoop)); err != nil {
			return "", err
		}
	}
	return origin, nil
}

func (dmLayer) setupSnapshot(ctx context.Context, img, srcCow, cow string) (string, error) {
	dmMu.Lock()
	defer dmMu.Unlock()
	inner, err := exceptionPath(img, srcCow)
	if err != nil {
		return "", err
	}
	final, err := snapshotPath(img, srcCow, cow)
	if err != nil {
		return "", err
	}
	if !isBlock(inner) {
		imgLoop, err := loop(ctx, img)
		if err != nil {
			return "", err
		}
		srcCowLoop, err := loop(ctx, srcCow)
		if err != nil {
			return "", err
		}
		if err := createSnapshot(ctx, inner, imgLoop, srcCowLoop); err != nil {
			return "", err
		}
	}
	if !isBlock(final) {
		cowLoop, err := loop(ctx, cow)
		if err != nil {
			return "", err
		}
		if err := createSnapshot(ctx, final, inner, cowLoop); err != nil {
			return "", err
		}
	}
	return final, nil
}

// openCount returns how many openers dm device name has.
func openCount(ctx context.Context, name string) (int, error) {
	out, err := run(ctx, "dmsetup", "info", "-c", "--noheadings", "-o", "open", "--", name)
	if err != nil {
		return 0, err
	}
	n, err := parseOpenCount(out)
	if err != nil {
		return 0, fmt.Errorf("dmsetup info %s: %w", name, err)
	}
	return n, nil
}

// parseOpenCount parses the output of dmsetup info -c --noheadings -o
// open: a non-negative decimal number.
func parseOpenCount(out string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("open count %q is not a number", out)
	}
	return n, nil
}

var depRE = regexp.MustCompile(`\(([a-z0-9-]+)\)`)

// deps returns the block devices dm device name uses, as /dev/NAME.
func deps(ctx context.Context, name string) ([]string, error) {
	out, err := run(ctx, "dmsetup", "deps", "-o", "blkdevname", "--", name)
	if err != nil {
		return nil, err
	}
	return parseDeps(out), nil
}

// parseDeps parses the output of dmsetup deps -o blkdevname ("2
// dependencies : (loop1) (loop0)") into /dev paths.
func parseDeps(out string) []string {
	var devs []string
	for _, m := range depRE.FindAllStringSubmatch(out, -1) {
		devs = append(devs, "/dev/"+m[1])
	}
	return devs
}

// dmRemove removes dm device name and, on a system without udev, its
// node (dmsetup mknodes removes the nodes of devices that are gone).
func dmRemove(ctx context.Context, name string) error {
	if _, err := run(ctx, "dmsetup", "remove", "--retry", "--", name); err != nil {
		return err
	}
	if !exists(mapperDir + name) {
		return nil
	}
	_, err := run(ctx, "dmsetup", "mknodes", "--", name)
	return err
}

// destroy removes dev as destroy-snapshot does: a device still open is
// refused (storage.ErrInUse); removing an origin removes the unused
// snapshots that keep its image's old chunks (a used one keeps the
// origin too); removing a snapshot volume's device removes the snapshot
// of its source under it when nothing else uses it and its source's
// origin is gone (destroy-snapshot removes it even while the source runs,
// which leaves the source without its exception store); the loop devices
// they used are detached where unused. Snapshot devices of other volumes
// (three device ids) are never removed.
func (dmLayer) destroy(ctx context.Context, dev string) error {
	dmMu.Lock()
	defer dmMu.Unlock()
	if !isBlock(dev) {
		return nil
	}
	name := strings.TrimPrefix(dev, mapperDir)
	if n, err := openCount(ctx, name); err != nil {
		return err
	} else if n > 0 {
		return fmt.Errorf("cannot remove device %s that is still in use (%d openers): %w", dev, n, storage.ErrInUse)
	}
	used, err := deps(ctx, name)
	if err != nil {
		return err
	}
	keep := false
	switch {
	case strings.HasPrefix(name, "origin-"):
		id := strings.TrimPrefix(name, "origin-")
		snaps, _ := filepath.Glob(mapperDir + "snapshot-" + id + "-*")
		for _, s := range snaps {
			sname := filepath.Base(s)
			if strings.Count(sname, "-") != 2 {
				continue // another volume's snapshot device
			}
			n, err := openCount(ctx, sname)
			if err != nil {
				return err
			}
			if n > 0 {
				keep = true
				continue
			}
			sd, err := deps(ctx, sname)
			if err != nil {
				return err
			}
			if err := dmRemove(ctx, sname); err != nil {
				return err
			}
			used = append(used, sd...)
		}
	case strings.HasPrefix(name, "snapshot-"):
	default:
		return fmt.Errorf("%w: %s is no device of the file driver", storage.ErrInvalidConfig, dev)
	}
	if !keep {
		if err := dmRemove(ctx, name); err != nil {
			return err
		}
	}
	var errs []error
	for _, d := range used {
		errs = append(errs, freeDep(ctx, d))
	}
	return errors.Join(errs...)
}

// freeDep detaches an unused loop device, or removes an unused snapshot
// (by its dm-N node) whose image has no origin device any more.
func freeDep(ctx context.Context, dev string) error {
	if !isBlock(dev) {
		return nil
	}
	base := filepath.Base(dev)
	switch {
	case strings.HasPrefix(base, "loop"):
		// A loop device still used by another device is marked to be
		// detached when its last user goes (the kernel's autoclear).
		_, _ = run(ctx, "losetup", "-d", dev)
		return nil
	case strings.HasPrefix(base, "dm-"):
		b, err := os.ReadFile(filepath.Join("/sys/block", base, "dm", "name"))
		if err != nil {
			return nil
		}
		name := strings.TrimSpace(string(b))
		id, _, ok := strings.Cut(strings.TrimPrefix(name, "snapshot-"), "-")
		if !ok || !strings.HasPrefix(name, "snapshot-") || isBlock(mapperDir+"origin-"+id) {
			return nil
		}
		if n, err := openCount(ctx, name); err != nil || n > 0 {
			return err
		}
		sd, err := deps(ctx, name)
		if err != nil {
			return err
		}
		if err := dmRemove(ctx, name); err != nil {
			return err
		}
		var errs []error
		for _, d := range sd {
			errs = append(errs, freeDep(ctx, d))
		}
		return errors.Join(errs...)
	}
	return nil
}

var associatedRE = regexp.MustCompile(`(?m)^(/dev/loop[0-9]+):\s`)

func (dmLayer) resize(ctx context.Context, dev, img string, size int64) error {
	dmMu.Lock()
	defer dmMu.Unlock()
	out, err := run(ctx, "losetup", "--associated", img)
	if err != nil {
		return err
	}
	for _, l := range parseAssociated(out) {
		if _, err := run(ctx, "losetup", "--set-capacity", l); err != nil {
			return err
		}
	}
	if !strings.HasPrefix(filepath.Base(dev), "origin-") || !isBlock(dev) {
		return nil
	}
	name := strings.TrimPrefix(dev, mapperDir)
	table, err := run(ctx, "dmsetup", "table", "--", name)
	if err != nil {
		return err
	}
	next, err := resizedOriginTable(table, size)
	if err != nil {
		return fmt.Errorf("dmsetup table %s: %w", name, err)
	}
	if _, err := run(ctx, "dmsetup", "load", "--table", next, "--", name); err != nil {
		return err
	}
	_, err = run(ctx, "dmsetup", "resume", "--", name)
	return err
}

// parseAssociated parses the output of losetup --associated FILE into the
// loop devices it names.
func parseAssociated(out string) []string {
	var loops []string
	for _, m := range associatedRE.FindAllStringSubmatch(out, -1) {
		loops = append(loops, m[1])
	}
	return loops
}

// resizedOriginTable returns the table of a snapshot-origin device
// ("0 <sectors> snapshot-origin <dev>", one line, as dmsetup table prints
// it) with the length of size bytes.
func resizedOriginTable(table string, size int64) (string, error) {
	if strings.Count(strings.TrimSuffix(table, "\n"), "\n") != 0 {
		return "", fmt.Errorf("table %q has more than one line", table)
	}
	parts := strings.Fields(table)
	if len(parts) != 4 || parts[0] != "0" || parts[2] != "snapshot-origin" {
		return "", fmt.Errorf("table %q is not one snapshot-origin target", table)
	}
	if _, err := strconv.ParseUint(parts[1], 10, 64); err != nil {
		return "", fmt.Errorf("table %q: length %q", table, parts[1])
	}
	parts[1] = strconv.FormatInt(size/512, 10)
	return strings.Join(parts, " "), nil
}
