package vmtest

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestEndFilter(t *testing.T) {
	const marker = "<end-123>"
	for _, tc := range []struct {
		name   string
		chunks []string
		out    string
		ended  bool
	}{
		{"marker alone", []string{marker}, "", true},
		{"output then marker", []string{"hello\n", marker}, "hello\n", true},
		{"marker split", []string{"abc<en", "d-1", "23>"}, "abc", true},
		{"byte by byte", strings.Split("xy"+marker, ""), "xy", true},
		{"one chunk", []string{"data" + marker}, "data", true},
		{"marker's start is output", []string{"<end-12", "x>", marker}, "<end-12x>", true},
		{"no marker", []string{"abc", "<end-12"}, "abc<end-12", false},
		{"nothing", nil, "", false},
		{"after the marker", []string{"a" + marker, "b"}, "ab", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			calls := 0
			f := newEndFilter(&out, marker, func() { calls++ })
			for _, c := range tc.chunks {
				n, err := f.Write([]byte(c))
				assert.NoError(t, err)
				assert.Equal(t, len(c), n)
			}
			assert.Equal(t, tc.ended, f.Close())
			assert.Equal(t, tc.out, out.String())
			if tc.ended {
				assert.Equal(t, 1, calls)
			} else {
				assert.Zero(t, calls)
			}
		})
	}
}

type errWriter struct{ n int }

func (w *errWriter) Write(p []byte) (int, error) {
	w.n++
	return 0, assert.AnError
}

// TestEndFilterWriteError checks that a failing writer does not stop the
// filter from finding the marker.
func TestEndFilterWriteError(t *testing.T) {
	w := &errWriter{}
	ended := false
	f := newEndFilter(w, "END", func() { ended = true })
	_, err := f.Write([]byte(strings.Repeat("x", 100)))
	assert.NoError(t, err)
	_, err = f.Write([]byte("moreEND"))
	assert.NoError(t, err)
	assert.True(t, ended)
	assert.True(t, f.Close())
	assert.Equal(t, 1, w.n, "no writes after the first error")
	assert.ErrorIs(t, f.err, assert.AnError)
}
