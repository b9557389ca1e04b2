package storage

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ephemeralVolume is a fakeVolume that may be ephemeral and has a name
// and a block device.
type ephemeralVolume struct {
	*fakeVolume
	name      string
	ephemeral bool
}

func (v *ephemeralVolume) Config() VolumeConfig { return VolumeConfig{VID: v.vid, Name: v.name} }
func (v *ephemeralVolume) Ephemeral() bool      { return v.ephemeral }
func (v *ephemeralVolume) BlockDevice() BlockDevice {
	return BlockDevice{Path: "/images/" + v.name, Name: v.name, RW: true, DevType: "disk"}
}

// namedVolume names its own mapping, as lvm_thin does.
type namedVolume struct{ *ephemeralVolume }

func (namedVolume) EncryptedName(vm string) string { return "vg-vm--" + vm + "--volatile@crypt" }

// fakeEncryptor records the mappings it opens and closes.
type fakeEncryptor struct {
	mu      sync.Mutex
	open    map[string]string // name → device
	log     []string
	openErr error
}

func (e *fakeEncryptor) Open(_ context.Context, device, name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, "open "+device+" "+name)
	if e.openErr != nil {
		return e.openErr
	}
	if e.open == nil {
		e.open = map[string]string{}
	}
	e.open[name] = device
	return nil
}

func (e *fakeEncryptor) Close(_ context.Context, name string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.open[name]; ok {
		e.log = append(e.log, "close "+name)
		delete(e.open, name)
	}
	return nil
}

func TestEncryptedName(t *testing.T) {
	v := &ephemeralVolume{fakeVolume: &fakeVolume{vid: "appvms/my_vm-1/volatile"}, name: "volatile"}
	// Qubes' encrypted_volume_path: _ → _u, then - → _d.
	assert.Equal(t, "vm-volatile-my_uvm_d1-crypt@volatile", EncryptedName(v, "my_vm-1"))
	assert.Equal(t, "vg-vm--work--volatile@crypt", EncryptedName(namedVolume{v}, "work"))
}

// TestVMSetEncrypts: an ephemeral volume runs behind a mapping over its
// block device, which is what the VM gets; the others are left alone;
// Stop closes the mapping before stopping the volume.
func TestVMSetEncrypts(t *testing.T) {
	ctx := context.Background()
	vol := &ephemeralVolume{fakeVolume: &fakeVolume{vid: "appvms/work/volatile"}, name: "volatile", ephemeral: true}
	priv := &ephemeralVolume{fakeVolume: &fakeVolume{vid: "appvms/work/private", saveOnStop: true}, name: "private"}
	enc := &fakeEncryptor{}
	s := NewVMSet("work", enc, priv, vol)
	require.NoError(t, s.Start(ctx))
	assert.Equal(t, map[string]string{"vm-volatile-work-crypt@volatile": "/images/volatile"}, enc.open)
	assert.Equal(t, []BlockDevice{
		{Path: "/images/private", Name: "private", RW: true, DevType: "disk"},
		{Path: "/dev/mapper/vm-volatile-work-crypt@volatile", Name: "volatile", RW: true, DevType: "disk"},
	}, s.BlockDevices())

	// The flag changes while it runs: the mapping is closed all the same.
	vol.ephemeral = false
	require.NoError(t, s.Stop(ctx))
	assert.Empty(t, enc.open)
	assert.Equal(t, []string{"open /images/volatile vm-volatile-work-crypt@volatile", "close vm-volatile-work-crypt@volatile"}, enc.log)
	assert.Equal(t, []string{"verify", "start", "stop"}, vol.calls)

	// NewSet encrypts nothing.
	vol.ephemeral = true
	plain := NewSet(vol)
	require.NoError(t, plain.Start(ctx))
	assert.Equal(t, "/images/volatile", plain.BlockDevices()[0].Path)
	require.NoError(t, plain.Stop(ctx))
	assert.Len(t, enc.log, 2)
}

// TestVMSetEncryptFailureRollsBack: a mapping that cannot be made fails
// the start, and every volume the start started is aborted.
func TestVMSetEncryptFailureRollsBack(t *testing.T) {
	ctx := context.Background()
	vol := &ephemeralVolume{fakeVolume: &fakeVolume{vid: "appvms/work/volatile"}, name: "volatile", ephemeral: true}
	priv := &ephemeralVolume{fakeVolume: &fakeVolume{vid: "appvms/work/private", saveOnStop: true}, name: "private"}
	boom := errors.New("no dm-crypt")
	enc := &fakeEncryptor{openErr: boom}
	err := NewVMSet("work", enc, priv, vol).Start(ctx)
	require.ErrorIs(t, err, boom)
	assert.Contains(t, err.Error(), "start appvms/work/volatile: encrypt: no dm-crypt")
	assert.Equal(t, []string{"verify", "start", "abort"}, vol.calls)
	assert.Equal(t, []string{"verify", "start", "abort"}, priv.calls)
	assert.False(t, vol.running || priv.running)
}

func TestVMSetRefusesBadMappingName(t *testing.T) {
	v := &ephemeralVolume{fakeVolume: &fakeVolume{vid: "x"}, name: "volatile", ephemeral: true}
	bad := badName{v}
	err := NewVMSet("work", &fakeEncryptor{}, bad).Start(context.Background())
	require.ErrorIs(t, err, ErrInvalidConfig)
	assert.Equal(t, []string{"verify"}, v.calls, "nothing started")
}

type badName struct{ *ephemeralVolume }

func (badName) EncryptedName(string) string { return "../../etc/x" }
