package storage

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeVolume records what Set does to it.
type fakeVolume struct {
	Volume // panics on anything Set must not call
	vid    string

	mu                  sync.Mutex
	running             bool
	saveOnStop          bool
	startErr, verifyErr error
	calls               []string
}

func (f *fakeVolume) Config() VolumeConfig { return VolumeConfig{VID: f.vid} }
func (f *fakeVolume) record(op string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, op)
}
func (f *fakeVolume) Verify(context.Context) error { f.record("verify"); return f.verifyErr }
func (f *fakeVolume) IsRunning(context.Context) (bool, error) {
	return f.running, nil
}
func (f *fakeVolume) IsDirty(context.Context) (bool, error) {
	return f.saveOnStop && f.running, nil
}
func (f *fakeVolume) Start(context.Context) error {
	f.record("start")
	if f.startErr != nil {
		return f.startErr
	}
	f.running = true
	return nil
}
func (f *fakeVolume) Stop(context.Context) error  { f.record("stop"); f.running = false; return nil }
func (f *fakeVolume) Abort(context.Context) error { f.record("abort"); f.running = false; return nil }

func TestSetStart(t *testing.T) {
	a, b := &fakeVolume{vid: "a"}, &fakeVolume{vid: "b"}
	s := NewSet(a, b)
	require.NoError(t, s.Start(context.Background()))
	assert.Equal(t, []string{"verify", "start"}, a.calls)
	assert.True(t, a.running && b.running)
	require.NoError(t, s.Stop(context.Background()))
	assert.Equal(t, []string{"verify", "start", "stop"}, b.calls)
}

func TestSetStartFailureAbortsWithoutCommit(t *testing.T) {
	boom := errors.New("boom")
	ok := &fakeVolume{vid: "ok"}
	resumed := &fakeVolume{vid: "resumed", running: true, saveOnStop: true}
	restarted := &fakeVolume{vid: "restarted", running: true} // a snapshot: started fresh
	failing := &fakeVolume{vid: "failing", startErr: boom}
	err := NewSet(ok, resumed, restarted, failing).Start(context.Background())
	require.ErrorIs(t, err, boom)
	assert.Equal(t, []string{"verify", "start", "abort"}, ok.calls, "a volume this start began is aborted, not stopped")
	assert.Equal(t, []string{"verify", "start"}, resumed.calls, "a resumed origin keeps its running image")
	assert.True(t, resumed.running)
	assert.Equal(t, []string{"verify", "start", "abort"}, restarted.calls, "a snapshot that ran before started fresh and is aborted")
	assert.False(t, restarted.running)
	assert.Equal(t, []string{"verify", "start"}, failing.calls)
}

func TestSetVerifyFailureStartsNothing(t *testing.T) {
	a := &fakeVolume{vid: "a", verifyErr: ErrNotFound}
	b := &fakeVolume{vid: "b"}
	require.ErrorIs(t, NewSet(a, b).Start(context.Background()), ErrNotFound)
	assert.Equal(t, []string{"verify"}, b.calls)
}

// fakeBatch starts and stops batchVolumes together and records the calls.
type fakeBatch struct {
	calls []string
	fail  string // vid whose start fails
}

func (b *fakeBatch) Start(ctx context.Context, vols []Volume) []error {
	errs := make([]error, len(vols))
	call := "start"
	for i, v := range vols {
		call += " " + v.Config().VID
		if v.Config().VID == b.fail {
			errs[i] = errors.New("boom")
		}
	}
	b.calls = append(b.calls, call)
	return errs
}

func (b *fakeBatch) Stop(ctx context.Context, vols []Volume, abort bool) []error {
	call := "stop"
	if abort {
		call = "abort"
	}
	for _, v := range vols {
		call += " " + v.Config().VID
	}
	b.calls = append(b.calls, call)
	return make([]error, len(vols))
}

type batchVolume struct {
	*fakeVolume
	b Batch
}

func (v batchVolume) Batch() Batch { return v.b }

func TestSetBatch(t *testing.T) {
	ctx := context.Background()
	b := &fakeBatch{}
	x, y := batchVolume{&fakeVolume{vid: "x"}, b}, batchVolume{&fakeVolume{vid: "y"}, b}
	s := NewSet(x, y)
	require.NoError(t, s.Start(ctx))
	require.NoError(t, s.Stop(ctx))
	assert.Equal(t, []string{"start x y", "stop x y"}, b.calls, "one batch for all the volumes")
	assert.Equal(t, []string{"verify"}, x.calls, "the volumes' own Start and Stop are not called")

	b.calls, b.fail = nil, "y"
	require.Error(t, s.Start(ctx))
	assert.Equal(t, []string{"start x y", "abort x"}, b.calls, "the volumes that started are aborted through the batch")

	other := &fakeBatch{}
	z := batchVolume{&fakeVolume{vid: "z"}, other}
	b.calls, b.fail = nil, ""
	require.NoError(t, NewSet(x, z).Start(ctx))
	assert.Empty(t, b.calls, "volumes of two batches start one by one")
	assert.Equal(t, []string{"verify", "start"}, z.calls)
}
