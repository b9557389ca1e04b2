package storage

import "context"

// ProgressFunc receives the progress of a long copy: done of total bytes.
// total is -1 while it is unknown (a copy from a FIFO, whose length is
// what it gives until its end); the last call has done == total. It is
// called from the copying goroutine and must return quickly.
type ProgressFunc func(done, total int64)

type progressKey struct{}

// WithProgress returns a context that makes the long copies of the
// operations it is passed to (imports, copies when reflinks are not
// available) report their progress to fn.
func WithProgress(ctx context.Context, fn ProgressFunc) context.Context {
	return context.WithValue(ctx, progressKey{}, fn)
}

// ProgressFrom returns the ProgressFunc of ctx, or a function that does
// nothing.
func ProgressFrom(ctx context.Context) ProgressFunc {
	if fn, ok := ctx.Value(progressKey{}).(ProgressFunc); ok && fn != nil {
		return fn
	}
	return func(int64, int64) {}
}
