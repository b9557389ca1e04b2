package pool

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

type nopDriver struct{ params []storage.Parameter }

func (d nopDriver) Parameters() []storage.Parameter { return d.params }
func (nopDriver) Open(context.Context, storage.PoolConfig) (storage.Pool, error) {
	return nil, storage.ErrUnsupported
}

// withDrivers runs the test on a registry of its own and restores the
// global one afterwards.
func withDrivers(t *testing.T) {
	t.Helper()
	driversMu.Lock()
	saved := drivers
	drivers = make(map[string]storage.Driver)
	driversMu.Unlock()
	t.Cleanup(func() {
		driversMu.Lock()
		drivers = saved
		driversMu.Unlock()
	})
}

func TestRegister(t *testing.T) {
	withDrivers(t)
	Register("zz", nopDriver{})
	Register("aa", nopDriver{params: []storage.Parameter{{Name: "dir_path", Required: true}, {Name: "b"}}})
	assert.Equal(t, []string{"aa", "zz"}, Drivers())

	ps, err := Parameters("aa")
	require.NoError(t, err)
	assert.Equal(t, []string{"dir_path", "b"}, []string{ps[0].Name, ps[1].Name}, "order is the driver's")
	assert.True(t, ps[0].Required)

	_, err = Parameters("nope")
	assert.ErrorIs(t, err, storage.ErrNotFound)
	_, err = Open(context.Background(), "nope", storage.PoolConfig{Name: "x"})
	assert.ErrorIs(t, err, storage.ErrNotFound)
	_, err = Open(context.Background(), "zz", storage.PoolConfig{Name: "x"})
	assert.ErrorIs(t, err, storage.ErrUnsupported, "Open is the driver's")

	names := Drivers()
	names[0] = "mutated"
	assert.Equal(t, []string{"aa", "zz"}, Drivers(), "Drivers returns a copy")
}

func TestRegisterPanics(t *testing.T) {
	withDrivers(t)
	assert.PanicsWithValue(t, "pool: Register driver is nil", func() { Register("x", nil) })
	Register("x", nopDriver{})
	assert.PanicsWithValue(t, "pool: Register called twice for driver x", func() { Register("x", nopDriver{}) })
}
