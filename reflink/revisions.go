package reflink

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmpool/vmpool/storage"
)

// revision is a revision file of a volume.
type revision struct {
	storage.Revision
	path string
	n    int  // the number of a current-style revision
	seed bool // a seed-era "x.img@<ts>Z" revision, id = "<ts>Z"
}

// revisionPath names revision n of clean: "x.img.<n>@<ts>Z", ts being
// when its data was last modified.
func revisionPath(clean string, n int, t time.Time) string {
	return clean + "." + strconv.Itoa(n) + "@" + t.UTC().Format(storage.TimestampLayout) + "Z"
}

// parseStamp parses the "<ts>Z" part of a revision name.
func parseStamp(s string) (time.Time, bool) {
	ts, ok := strings.CutSuffix(s, "Z")
	if !ok || len(ts) != len(storage.TimestampLayout) {
		return time.Time{}, false
	}
	t, err := time.Parse(storage.TimestampLayout, ts)
	return t, err == nil
}

// parseRevision reads a directory entry name as a revision of the image
// named base ("private.img"). Numbered revisions have a decimal number;
// Qubes' glob would also match other names and then fail on them, vmpool
// ignores them.
func parseRevision(base, name string) (revision, bool) {
	rest, ok := strings.CutPrefix(name, base)
	if !ok || len(rest) < 2 {
		return revision{}, false
	}
	switch rest[0] {
	case '@': // seed era: base@<ts>Z
		t, ok := parseStamp(rest[1:])
		if !ok {
			return revision{}, false
		}
		return revision{Revision: storage.Revision{ID: rest[1:], Time: t}, seed: true}, true
	case '.': // base.<n>@<ts>Z
		num, stamp, ok := strings.Cut(rest[1:], "@")
		if !ok || num == "" || strings.TrimLeft(num, "0123456789") != "" {
			return revision{}, false
		}
		n, err := strconv.Atoi(num)
		if err != nil {
			return revision{}, false
		}
		t, ok := parseStamp(stamp)
		if !ok {
			return revision{}, false
		}
		return revision{Revision: storage.Revision{ID: num, Time: t}, n: n}, true
	}
	return revision{}, false
}

// listRevisions returns the revisions of the image at clean: seed-era ones
// first, by time, then numbered ones by number, as Qubes sorts them.
func listRevisions(clean string) ([]revision, error) {
	entries, err := os.ReadDir(filepath.Dir(clean))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	base := filepath.Base(clean)
	var revs []revision
	for _, e := range entries {
		if r, ok := parseRevision(base, e.Name()); ok {
			r.path = filepath.Join(filepath.Dir(clean), e.Name())
			revs = append(revs, r)
		}
	}
	sort.Slice(revs, func(i, j int) bool {
		a, b := revs[i], revs[j]
		if a.seed != b.seed {
			return a.seed
		}
		if a.seed {
			return a.Time.Before(b.Time)
		}
		return a.n < b.n
	})
	return revs, nil
}

// nextRevision is the number of the next revision: the newest number plus
// one, or 1.
func nextRevision(revs []revision) int {
	n := 0
	for _, r := range revs {
		if !r.seed && r.n > n {
			n = r.n
		}
	}
	return n + 1
}

// toPrune returns the revisions Qubes' _prune_revisions(keep) deletes:
// all but the newest keep; all for 0; and for -1 (a quirk Qubes really
// has) only the oldest.
func toPrune(revs []revision, keep int) []revision {
	switch {
	case keep == 0:
		return revs
	case keep > 0:
		if len(revs) > keep {
			return revs[:len(revs)-keep]
		}
		return nil
	default:
		return revs[:min(-keep, len(revs))]
	}
}
