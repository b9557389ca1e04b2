package fsutil_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/internal/testenv"
)

// TestLockHeldBySelf: a lock this process holds is refused at once,
// whatever the context allows: waiting would never end.
func TestLockHeldBySelf(t *testing.T) {
	dir := t.TempDir()
	l, err := fsutil.LockPath(context.Background(), dir)
	require.NoError(t, err)
	start := time.Now()
	_, err = fsutil.LockPath(context.Background(), dir)
	require.ErrorIs(t, err, fsutil.ErrLocked)
	assert.Contains(t, err.Error(), "by this process")
	assert.Less(t, time.Since(start), time.Second)
	require.NoError(t, l.Unlock())
	l, err = fsutil.LockPath(context.Background(), dir)
	require.NoError(t, err)
	require.NoError(t, l.Unlock())
}

// TestLockHeldByAnother: a lock held by another process is waited for
// until the context ends, and the error names the holder; once the holder
// lets go, the waiter gets it.
func TestLockHeldByAnother(t *testing.T) {
	dir := t.TempDir()
	release := testenv.HoldLock(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := fsutil.LockPath(ctx, dir)
	require.ErrorIs(t, err, fsutil.ErrLocked)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Regexp(t, `by pid [0-9]+ \(flock\)`, err.Error())
	assert.NotContains(t, err.Error(), "pid "+strconv.Itoa(os.Getpid()))

	got := make(chan error, 1)
	go func() {
		l, err := fsutil.LockPath(context.Background(), dir)
		if err == nil {
			err = l.Unlock()
		}
		got <- err
	}()
	release()
	require.NoError(t, <-got, "the waiter gets the lock once it is free")
}
