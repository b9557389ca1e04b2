package block

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/devices"
)

// fakeSysfs writes a sysfs tree with the given loop devices; a loop with
// an empty backing file is unbound (no loop/ directory).
func fakeSysfs(t *testing.T, loops ...Loop) string {
	t.Helper()
	root := t.TempDir()
	for _, l := range loops {
		dir := filepath.Join(root, "block", l.Name)
		require.NoError(t, os.MkdirAll(dir, 0o755))
		ro := "0\n"
		if l.ReadOnly {
			ro = "1\n"
		}
		require.NoError(t, os.WriteFile(filepath.Join(dir, "ro"), []byte(ro), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "size"), []byte(strconv.FormatInt(l.Size/512, 10)+"\n"), 0o644))
		if l.BackingFile != "" {
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "loop"), 0o755))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "loop", "backing_file"), []byte(l.BackingFile+"\n"), 0o644))
		}
	}
	return root
}

type domain struct {
	name    string
	running bool
}

func (d *domain) Name() string { return d.name }
func (d *domain) Halted() bool { return !d.running }

type domainList map[string]*domain

func (l domainList) Domain(name string) (devices.Domain, bool) {
	d, ok := l[name]
	return d, ok
}

// recordingHV records the disks it is asked to attach and can fail.
type recordingHV struct {
	attached map[string]Disk
	fail     error
}

func (h *recordingHV) AttachDisk(_ context.Context, frontend string, d Disk) error {
	if h.fail != nil {
		return h.fail
	}
	h.attached[frontend+"/"+d.Name] = d
	return nil
}

func (h *recordingHV) DetachDisk(_ context.Context, frontend string, d Disk) error {
	delete(h.attached, frontend+"/"+d.Name)
	return nil
}

// newManager returns a Manager with dom0, a running "work" and a halted
// "tmp", and the block bus b.
func newManager(t *testing.T, b *Bus) *devices.Manager {
	t.Helper()
	m := devices.NewManager(domainList{
		"dom0":  {name: "dom0", running: true},
		"work":  {name: "work", running: true},
		"other": {name: "other", running: true},
		"tmp":   {name: "tmp"},
	}, devices.Options{})
	require.NoError(t, m.AddBus(b))
	return m
}

func loopAssignment(name string, opts map[string]string) devices.Assignment {
	return devices.Assignment{Device: devices.VirtualDevice{Port: devices.Port{Backend: "dom0", ID: name, Class: Class}}, Options: opts}
}

func TestReadLoop(t *testing.T) {
	sys := fakeSysfs(t,
		Loop{Name: "loop0", BackingFile: "/var/lib/a.img", Size: 1 << 20},
		Loop{Name: "loop1"},
		Loop{Name: "loop7", BackingFile: "/var/lib/b\x01.img (deleted)", Size: 4096, ReadOnly: true},
	)
	l, err := ReadLoop(sys, "loop0")
	require.NoError(t, err)
	assert.Equal(t, Loop{Name: "loop0", BackingFile: "/var/lib/a.img", Size: 1 << 20}, l)
	assert.Equal(t, "/dev/loop0", l.Node())

	_, err = ReadLoop(sys, "loop1")
	assert.ErrorIs(t, err, os.ErrNotExist, "unbound")
	for _, bad := range []string{"../../etc", "loop", "loopx", "sda", "loop1/../loop0"} {
		_, err = ReadLoop(sys, bad)
		assert.ErrorIs(t, err, os.ErrNotExist, bad)
	}

	b := New(Options{SysFS: sys})
	names := []string{}
	for _, l := range b.Loops() {
		names = append(names, l.Name)
	}
	assert.Equal(t, []string{"loop0", "loop7"}, names)

	m := newManager(t, b)
	exposed, err := m.Exposed("dom0", Class)
	require.NoError(t, err)
	require.Len(t, exposed, 2)
	d := exposed[1]
	assert.Equal(t, "/var/lib/b_.img (deleted)", d.Name(), "non-printable bytes are replaced")
	assert.Equal(t, map[string]string{"backing_file": "/var/lib/b_.img (deleted)", "size": "4096", "mode": "r"}, d.Data())
	assert.Equal(t, ":7", d.DeviceID())
	assert.Equal(t, "Block_Storage: hosted by dom0 /var/lib/b_.img (deleted)", d.Description())
	_, err = d.Serialize()
	assert.NoError(t, err)

	other, err := m.Exposed("work", Class)
	require.NoError(t, err)
	assert.Empty(t, other, "only the backend exposes loop devices")
}

func TestAttachOptions(t *testing.T) {
	sys := fakeSysfs(t,
		Loop{Name: "loop0", BackingFile: "/a.img", Size: 1 << 20},
		Loop{Name: "loop1", BackingFile: "/b.iso", Size: 1 << 20, ReadOnly: true},
	)
	for _, tc := range []struct {
		name string
		port string
		opts map[string]string
		want map[string]string
		err  error
	}{
		{"default", "loop0", nil, map[string]string{"read-only": "no", "frontend-dev": "xvdi"}, nil},
		{"ro_device_defaults_ro", "loop1", nil, map[string]string{"read-only": "yes", "frontend-dev": "xvdi"}, nil},
		{"ro_device_rw_refused", "loop1", map[string]string{"read-only": "no"}, nil, ErrReadOnly},
		{"read_only_true", "loop0", map[string]string{"read-only": "True"}, map[string]string{"read-only": "yes", "frontend-dev": "xvdi"}, nil},
		{"cdrom", "loop1", map[string]string{"devtype": "cdrom"}, map[string]string{"read-only": "yes", "devtype": "cdrom", "frontend-dev": "xvdd"}, nil},
		{"frontend_dev", "loop0", map[string]string{"frontend-dev": "sdb"}, map[string]string{"read-only": "no", "frontend-dev": "sdb"}, nil},
		{"bad_frontend_dev", "loop0", map[string]string{"frontend-dev": "hda"}, nil, ErrInvalidOption},
		{"bad_read_only", "loop0", map[string]string{"read-only": "maybe"}, nil, ErrInvalidOption},
		{"bad_devtype", "loop0", map[string]string{"devtype": "floppy"}, nil, ErrInvalidOption},
		{"unknown_option", "loop0", map[string]string{"speed": "fast"}, nil, ErrInvalidOption},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hv := &recordingHV{attached: map[string]Disk{}}
			m := newManager(t, New(Options{SysFS: sys, Hypervisor: hv}))
			err := m.Attach(context.Background(), "work", loopAssignment(tc.port, tc.opts))
			if tc.err != nil {
				assert.ErrorIs(t, err, tc.err)
				assert.Empty(t, hv.attached)
				return
			}
			require.NoError(t, err)
			at, err := m.Attached("work", Class)
			require.NoError(t, err)
			require.Len(t, at, 1)
			assert.Equal(t, tc.want, at[0].Options)
			disk := hv.attached["work/"+tc.port]
			assert.Equal(t, tc.want["frontend-dev"], disk.FrontendDev)
			assert.Equal(t, tc.want["read-only"] == "yes", disk.ReadOnly)
		})
	}

	t.Run("frontend_devs_allocated_per_frontend", func(t *testing.T) {
		b := New(Options{SysFS: sys})
		m := newManager(t, b)
		ctx := context.Background()
		require.NoError(t, m.Attach(ctx, "work", loopAssignment("loop0", nil)))
		require.NoError(t, m.Attach(ctx, "work", loopAssignment("loop1", nil)))
		at, _ := m.Attached("work", Class)
		require.Len(t, at, 2)
		assert.Equal(t, "xvdi", at[0].Options["frontend-dev"])
		assert.Equal(t, "xvdj", at[1].Options["frontend-dev"])
	})

	t.Run("hypervisor_failure_rolls_back", func(t *testing.T) {
		hv := &recordingHV{attached: map[string]Disk{}, fail: errors.New("libvirt said no")}
		b := New(Options{SysFS: sys, Hypervisor: hv})
		m := newManager(t, b)
		assert.ErrorContains(t, m.Attach(context.Background(), "work", loopAssignment("loop0", nil)), "libvirt said no")
		at, _ := m.Attached("work", Class)
		assert.Empty(t, at)
		d, _ := m.Device("dom0", Class, "loop0")
		assert.Equal(t, "", d.Attachment())
	})
}
