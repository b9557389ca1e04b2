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
