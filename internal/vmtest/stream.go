package vmtest

import (
	"bytes"
	"io"
	"sync"
)

// endFilter passes a stream on to w except for its end marker, which the
// guest writes after the command's last byte: seeing it proves that all
// of the output arrived. QEMU may still hold the guest's last writes
// when the guest powers off (it stops writing a FIFO that is full and
// goes on later), so the guest waits, before it powers off, until the
// host has seen the marker (onEnd makes the file it waits for).
//
// It holds back the last len(marker) bytes, which may be the marker's
// start, and passes them on when more follows or at close. Write errors
// of w are remembered (Err) and later writes dropped, so that the relay
// keeps draining the FIFO and the guest never blocks on it.
type endFilter struct {
	mu     sync.Mutex
	w      io.Writer
	marker []byte
	hold   []byte
	ended  bool
	onEnd  func()
	err    error
}

func newEndFilter(w io.Writer, marker string, onEnd func()) *endFilter {
	if w == nil {
		w = io.Discard
	}
	return &endFilter{w: w, marker: []byte(marker), onEnd: onEnd}
}

func (f *endFilter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ended {
		// Nothing comes after the marker; if something does, it is
		// output all the same.
		f.pass(p)
		return len(p), nil
	}
	f.hold = append(f.hold, p...)
	if bytes.HasSuffix(f.hold, f.marker) {
		f.pass(f.hold[:len(f.hold)-len(f.marker)])
		f.hold = nil
		f.ended = true
		if f.onEnd != nil {
			f.onEnd()
		}
		return len(p), nil
	}
	if n := len(f.hold) - len(f.marker); n > 0 {
		f.pass(f.hold[:n])
		f.hold = append(f.hold[:0], f.hold[n:]...)
	}
	return len(p), nil
}

func (f *endFilter) pass(p []byte) {
	if f.err != nil || len(p) == 0 {
		return
	}
	if _, err := f.w.Write(p); err != nil {
		f.err = err
	}
}

// Close passes on what is held back; it reports whether the marker came.
func (f *endFilter) Close() (ended bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pass(f.hold)
	f.hold = nil
	return f.ended
}
