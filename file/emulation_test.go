package file

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// emuLayer emulates the block layer for the host tests, which have no
// device-mapper. It gives a VM (here: the suite's reads and writes
// through openDevice) what dm-snapshot gives it, and leaves in the cow
// files what the kernel leaves there as far as is_dirty can tell:
//
//   - An exception store (setupOrigin's snapshot-<img>-<cow>, and the one
//     under a snapshot volume) keeps a frozen copy of the image, made when
//     it is set up: the committed state that snapshots of a running origin
//     see. Its cow gets the empty header at activation, as the kernel
//     writes it (emptySnapshot), unless it has one.
//   - An origin device is the image itself: openDevice hands the VM the
//     .img file, so the writes land in it, as with dm-snapshot-origin.
//   - A snapshot volume's device is a throw-away copy of the frozen
//     state of its source, removed at destroy; its own cow gets the
//     header too.
//   - Opening a device for writing records an "exception": a block of
//     data beyond the header in the device's cow, so that is_dirty is
//     true after the first write, as Qubes computes it.
//
// Devices survive a Reopen of the pool (the layer is handed to the new
// pool), as real devices survive the crash of the process.
type emuLayer struct {
	dir string // the frozen and throw-away copies

	mu   sync.Mutex
	devs map[string]*emuDev
	// calls counts setup, destroy and resize calls, for tests.
	calls map[string]int
}

// emuDev is one emulated device-mapper device.
type emuDev struct {
	kind  string // "exceptions", "origin", "snapshot"
	img   string // the image (exceptions, origin)
	cow   string // its exception store (exceptions, snapshot)
	inner string // the exception store device under it (origin, snapshot)
	data  string // the frozen copy (exceptions), the throw-away copy (snapshot)
}

func newEmuLayer(t *testing.T) *emuLayer {
	return &emuLayer{dir: t.TempDir(), devs: make(map[string]*emuDev), calls: make(map[string]int)}
}

// copyOf makes a copy of src in the layer's directory.
func (l *emuLayer) copyOf(ctx context.Context, src string) (string, error) {
	f, err := os.CreateTemp(l.dir, "dev-*")
	if err != nil {
		return "", err
	}
	f.Close()
	_, err = fsutil.CopyFile(ctx, src, f.Name(), fsutil.CopyOptions{Size: -1, NoClone: true})
	return f.Name(), err
}

// activate writes the empty exception store header into a cow without
// one, as the kernel does when it activates a persistent snapshot.
func activate(cow string) error {
	f, err := os.OpenFile(cow, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, 16)
	if _, err := f.ReadAt(head, 0); err != nil {
		return err
	}
	if !bytes.Equal(head, make([]byte, 16)) {
		return nil
	}
	if _, err := f.WriteAt(emptySnapshot, 0); err != nil {
		return err
	}
	return f.Sync()
}

// exceptions makes (or finds) the exception store device of img in cow.
func (l *emuLayer) exceptions(ctx context.Context, img, cow string) (string, error) {
	name, err := exceptionPath(img, cow)
	if err != nil {
		return "", err
	}
	if l.devs[name] != nil {
		return name, nil
	}
	if err := activate(cow); err != nil {
		return "", err
	}
	frozen, err := l.copyOf(ctx, img)
	if err != nil {
		return "", err
	}
	l.devs[name] = &emuDev{kind: "exceptions", img: img, cow: cow, data: frozen}
	return name, nil
}

func (l *emuLayer) setupOrigin(ctx context.Context, img, cow string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls["setupOrigin"]++
	inner, err := l.exceptions(ctx, img, cow)
	if err != nil {
		return "", err
	}
	name, err := originPath(img)
	if err != nil {
		return "", err
	}
	if l.devs[name] == nil {
		l.devs[name] = &emuDev{kind: "origin", img: img, inner: inner}
	}
	return name, nil
}

func (l *emuLayer) setupSnapshot(ctx context.Context, img, srcCow, cow string) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls["setupSnapshot"]++
	inner, err := l.exceptions(ctx, img, srcCow)
	if err != nil {
		return "", err
	}
	name, err := snapshotPath(img, srcCow, cow)
	if err != nil {
		return "", err
	}
	if l.devs[name] != nil {
		return name, nil
	}
	if err := activate(cow); err != nil {
		return "", err
	}
	data, err := l.copyOf(ctx, l.devs[inner].data)
	if err != nil {
		return "", err
	}
	l.devs[name] = &emuDev{kind: "snapshot", cow: cow, inner: inner, data: data}
	return name, nil
}

// usedBy reports whether a device stands on inner.
func (l *emuLayer) usedBy(inner string) bool {
	for _, d := range l.devs {
		if d.inner == inner && d.kind == "snapshot" {
			return true
		}
	}
	return false
}

func (l *emuLayer) remove(name string) {
	if d := l.devs[name]; d != nil && d.data != "" {
		os.Remove(d.data)
	}
	delete(l.devs, name)
}

// destroy follows dmLayer.destroy: an origin takes its unused exception
// stores with it and stays while one is used; a snapshot volume's device
// takes the exception store under it when nothing else uses it and its
// image has no origin.
func (l *emuLayer) destroy(ctx context.Context, dev string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls["destroy"]++
	d := l.devs[dev]
	if d == nil {
		return nil
	}
	switch d.kind {
	case "origin":
		id := strings.TrimPrefix(dev, mapperDir+"origin-")
		keep := false
		for name, e := range l.devs {
			if e.kind == "exceptions" && strings.HasPrefix(name, mapperDir+"snapshot-"+id+"-") {
				if l.usedBy(name) {
					keep = true
				} else {
					l.remove(name)
				}
			}
		}
		if !keep {
			l.remove(dev)
		}
	case "snapshot":
		l.remove(dev)
		inner := l.devs[d.inner]
		if inner != nil && !l.usedBy(d.inner) {
			if o, err := originPath(inner.img); err != nil || l.devs[o] == nil {
				l.remove(d.inner)
			}
		}
	default:
		return fmt.Errorf("emulation: %s is no device of the file driver", dev)
	}
	return nil
}

func (l *emuLayer) resize(ctx context.Context, dev, img string, size int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls["resize"]++
	if d := l.devs[dev]; d == nil || d.kind != "origin" || d.img != img {
		return fmt.Errorf("emulation: resize of %s (%s): no such origin", dev, img)
	}
	return nil
}

// exception records a write in cow: a block of data beyond the header.
func exception(cow string) error {
	f, err := os.OpenFile(cow, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xe5}, 4096), int64(len(emptySnapshot))); err != nil {
		return err
	}
	return f.Sync()
}

// open opens what a running volume's VM sees at dev with flag; a path
// that is no emulated device (a volatile volume's image) is opened as it
// is.
func (l *emuLayer) open(dev string, flag int) (*os.File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.devs[dev]
	if d == nil {
		if strings.HasPrefix(dev, mapperDir) {
			return nil, fmt.Errorf("emulation: no device %s", dev)
		}
		return os.OpenFile(dev, flag, 0)
	}
	write := flag&(os.O_WRONLY|os.O_RDWR) != 0
	switch d.kind {
	case "origin":
		if write {
			if err := exception(l.devs[d.inner].cow); err != nil {
				return nil, err
			}
		}
		return os.OpenFile(d.img, flag, 0)
	case "snapshot":
		if write {
			if err := exception(d.cow); err != nil {
				return nil, err
			}
		}
		return os.OpenFile(d.data, flag, 0)
	}
	return nil, fmt.Errorf("emulation: %s is not a VM's device", dev)
}

// openDevice is storagetest.Config.OpenDevice for a pool on l.
func (l *emuLayer) openDevice(t *testing.T, v storage.Volume, flag int) (*os.File, error) {
	return l.open(v.BlockDevice().Path, flag)
}

// names returns the emulated devices, for tests.
func (l *emuLayer) names() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for name := range l.devs {
		out = append(out, filepath.Base(name))
	}
	return out
}
