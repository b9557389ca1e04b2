package file

import (
	"bytes"
	"context"
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

// dmInfo is what dmsetup reports of one device.
type dmInfo struct {
	open int      // openers
	uses []string // the block devices it uses ("loop0", "dm-3")
	dms  []string // the dm devices among them, by name
}

// dmList returns every dm device by name, with one dmsetup call: the
// driver's decisions (what is unused, what a device stands on) are made
// on one listing, and each command costs much where processes are slow to
// start.
func dmList(ctx context.Context) (map[string]dmInfo, error) {
	out, err := run(ctx, "dmsetup", "info", "-c", "--noheadings", "--separator", ";", "-o", "name,open,blkdevs_used,devs_used")
	if err != nil {
		return nil, err
	}
	return parseDMList(out)
}

// parseDMList parses the output of dmsetup info -c --noheadings
// --separator ';' -o name,open,blkdevs_used,devs_used: one device a line,
// "name;open count;used,block,devices;used,dm,devices". "No devices
// found" is an empty list.
func parseDMList(out string) (map[string]dmInfo, error) {
	devs := make(map[string]dmInfo)
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line == "No devices found" {
			continue
		}
		f := strings.Split(line, ";")
		if len(f) != 4 || f[0] == "" {
			return nil, fmt.Errorf("dmsetup info: unexpected line %q", line)
		}
		n, err := strconv.Atoi(f[1])
		if err != nil || n < 0 {
			return nil, fmt.Errorf("dmsetup info: open count %q of %s", f[1], f[0])
		}
		uses, err := nameList(f[2], f[0])
		if err != nil {
			return nil, err
		}
		dms, err := nameList(f[3], f[0])
		if err != nil {
			return nil, err
		}
		devs[f[0]] = dmInfo{open: n, uses: uses, dms: dms}
	}
	return devs, nil
}

// nameList parses a comma-separated list of device names used by dev.
func nameList(list, dev string) ([]string, error) {
	var out []string
	for _, d := range strings.Split(list, ",") {
		if d = strings.TrimSpace(d); d != "" {
			if !devNameRE.MatchString(d) {
				return nil, fmt.Errorf("dmsetup info: device %q used by %s", d, dev)
			}
			out = append(out, d)
		}
	}
	return out, nil
}

var devNameRE = regexp.MustCompile(`\A[a-z][a-z0-9:-]*\z`)

// dmCreate makes dm device name with table.
func dmCreate(ctx context.Context, name, table string) error {
	_, err := run(ctx, "dmsetup", "create", name, "--table", table)
	return err
}

// syncNodes makes sure the /dev/mapper nodes of devs exist or are gone
// with their devices: dmsetup makes and removes none where udev does not
// run (dmsetup mknodes does it then).
func syncNodes(ctx context.Context, made, removed []string) error {
	for _, name := range made {
		if !isBlock(mapperDir + name) {
			_, err := run(ctx, "dmsetup", "mknodes")
			return err
		}
	}
	for _, name := range removed {
		if exists(mapperDir + name) {
			_, err := run(ctx, "dmsetup", "mknodes")
			return err
		}
	}
	return nil
}

func snapshotTable(sectors, base, cow string) string {
	return fmt.Sprintf("0 %s snapshot %s %s P %d", sectors, base, cow, chunkSectors)
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
	devs, err := dmList(ctx)
	if err != nil {
		return "", err
	}
	snapName, originName := strings.TrimPrefix(snap, mapperDir), strings.TrimPrefix(origin, mapperDir)
	_, haveSnap := devs[snapName]
	_, haveOrigin := devs[originName]
	if haveSnap && haveOrigin {
		return origin, syncNodes(ctx, []string{snapName, originName}, nil)
	}
	imgLoop, err := loop(ctx, img)
	if err != nil {
		return "", err
	}
	sz, err := sectors(ctx, imgLoop)
	if err != nil {
		return "", err
	}
	if !haveSnap {
		cowLoop, err := loop(ctx, cow)
		if err != nil {
			return "", err
		}
		if err := dmCreate(ctx, snapName, snapshotTable(sz, imgLoop, cowLoop)); err != nil {
			return "", err
		}
	}
	if !haveOrigin {
		if err := dmCreate(ctx, originName, fmt.Sprintf("0 %s snapshot-origin %s", sz, imgLoop)); err != nil {
			return "", err
		}
	}
	return origin, syncNodes(ctx, []string{snapName, originName}, nil)
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
	devs, err := dmList(ctx)
	if err != nil {
		return "", err
	}
	innerName, finalName := strings.TrimPrefix(inner, mapperDir), strings.TrimPrefix(final, mapperDir)
	_, haveInner := devs[innerName]
	if _, ok := devs[finalName]; ok && haveInner {
		return final, syncNodes(ctx, []string{innerName, finalName}, nil)
	}
	var sz string
	if !haveInner {
		imgLoop, err := loop(ctx, img)
		if err != nil {
			return "", err
		}
		srcCowLoop, err := loop(ctx, srcCow)
		if err != nil {
			return "", err
		}
		if sz, err = sectors(ctx, imgLoop); err != nil {
			return "", err
		}
		if err := dmCreate(ctx, innerName, snapshotTable(sz, imgLoop, srcCowLoop)); err != nil {
			return "", err
		}
	}
	if err := syncNodes(ctx, []string{innerName}, nil); err != nil {
		return "", err
	}
	if sz == "" {
		if sz, err = sectors(ctx, inner); err != nil {
			return "", err
		}
	}
	cowLoop, err := loop(ctx, cow)
	if err != nil {
		return "", err
	}
	if err := dmCreate(ctx, finalName, snapshotTable(sz, inner, cowLoop)); err != nil {
		return "", err
	}
	return final, syncNodes(ctx, []string{finalName}, nil)
}

func dmRemove(ctx context.Context, name string) error {
	_, err := run(ctx, "dmsetup", "remove", "--retry", "--", name)
	return err
}

// destroy removes dev as destroy-snapshot does: a device still open is
// refused (storage.ErrInUse); removing an origin removes the unused
// snapshots that keep its image's old chunks (a used one keeps the
// origin too); removing a snapshot volume's device removes the snapshot
// of its source under it when nothing else uses it and its source's
// origin is gone (destroy-snapshot removes it even while the source runs,
// which leaves the source without its exception store); the loop devices
// they used are detached (one still used is detached by the kernel when
// its last user goes). Snapshot devices of other volumes (three device
// ids) are never removed.
func (dmLayer) destroy(ctx context.Context, dev string) error {
	dmMu.Lock()
	defer dmMu.Unlock()
	name := strings.TrimPrefix(dev, mapperDir)
	if !strings.HasPrefix(dev, mapperDir) || !strings.HasPrefix(name, "origin-") && !strings.HasPrefix(name, "snapshot-") {
		return fmt.Errorf("%w: %s is no device of the file driver", storage.ErrInvalidConfig, dev)
	}
	devs, err := dmList(ctx)
	if err != nil {
		return err
	}
	d, ok := devs[name]
	if !ok {
		return syncNodes(ctx, nil, []string{name})
	}
	if d.open > 0 {
		return fmt.Errorf("cannot remove device %s that is still in use (%d openers): %w", dev, d.open, storage.ErrInUse)
	}
	var remove []string // in order
	keep := false
	if id, ok := strings.CutPrefix(name, "origin-"); ok {
		for sname, s := range devs {
			if !strings.HasPrefix(sname, "snapshot-"+id+"-") || strings.Count(sname, "-") != 2 {
				continue // another image's, or another volume's snapshot device
			}
			if s.open > 0 {
				keep = true
			} else {
				remove = append(remove, sname)
			}
		}
		if !keep {
			remove = append(remove, name)
		}
	} else {
		remove = append(remove, name)
		// The snapshot of the source under it, unless another snapshot
		// or the source's origin uses it.
		for _, iname := range d.dms {
			inner, ok := devs[iname]
			if !ok || !strings.HasPrefix(iname, "snapshot-") || strings.Count(iname, "-") != 2 {
				continue
			}
			id := strings.Split(iname, "-")[1]
			if _, origin := devs["origin-"+id]; inner.open <= 1 && !origin {
				remove = append(remove, iname)
			}
		}
	}
	var loops []string
	for _, r := range remove {
		if err := dmRemove(ctx, r); err != nil {
			return err
		}
		for _, u := range devs[r].uses {
			if strings.HasPrefix(u, "loop") {
				loops = append(loops, "/dev/"+u)
			}
		}
	}
	if len(loops) > 0 {
		// An error (a loop device another device still uses: it is marked
		// to be detached by its last user) changes nothing to do here.
		_, _ = run(ctx, "losetup", append([]string{"-d"}, loops...)...)
	}
	return syncNodes(ctx, nil, remove)
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
