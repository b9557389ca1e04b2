package reflink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vmpool/vmpool/internal/filepool"
	"github.com/vmpool/vmpool/internal/fsutil"
	"github.com/vmpool/vmpool/storage"
)

// revision is a revision file of a volume.
type revision struct {
	storage.Revision
	path string
	num  string // the number of a current-style revision: decimal, no leading zeros
	seed bool   // a seed-era "x.img@<ts>Z" revision, id = "<ts>Z"
}

// maxRevisionDigits bounds the numbers of revisions: a longer one is not
// read as a revision (its id would be too long for Revert). Numbers are
// compared and incremented as decimal strings, as Qubes' unbounded Python
// integers are, so no number overflows: after revision
// 9223372036854775807 comes 9223372036854775808.
const maxRevisionDigits = 60

// revisionPath names revision num of clean: "x.img.<num>@<ts>Z", ts being
// when its data was last modified.
func revisionPath(clean, num string, t time.Time) string {
	return clean + "." + num + "@" + t.UTC().Format(storage.TimestampLayout) + "Z"
}

// cmpNum compares two decimal numbers without leading zeros.
func cmpNum(a, b string) int {
	if len(a) != len(b) {
		return cmp.Compare(len(a), len(b))
	}
	return strings.Compare(a, b)
}

// incNum returns the decimal number num plus one.
func incNum(num string) string {
	b := []byte(num)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < '9' {
			b[i]++
			return string(b)
		}
		b[i] = '0'
	}
	return "1" + string(b)
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
		id, stamp, ok := strings.Cut(rest[1:], "@")
		if !ok || id == "" || strings.TrimLeft(id, "0123456789") != "" {
			return revision{}, false
		}
		num := strings.TrimLeft(id, "0")
		if num == "" {
			num = "0"
		}
		if len(num) > maxRevisionDigits {
			return revision{}, false
		}
		t, ok := parseStamp(stamp)
		if !ok {
			return revision{}, false
		}
		return revision{Revision: storage.Revision{ID: id, Time: t}, num: num}, true
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
			if !e.Type().IsRegular() {
				return nil, fmt.Errorf("revision %s is a %s, not a regular file: %w", r.path, filepool.FileKind(e.Type()), storage.ErrUnsafePath)
			}
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
		return cmpNum(a.num, b.num) < 0
	})
	return revs, nil
}

// nextRevision is the number of the next revision: the newest number plus
// one, or 1.
func nextRevision(revs []revision) string {
	n := "0"
	for _, r := range revs {
		if !r.seed && cmpNum(r.num, n) > 0 {
			n = r.num
		}
	}
	return incNum(n)
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

// commit makes the image at path the clean image: path is fsynced, the old
// clean image is kept as a revision by a durable hard link (unless
// revisions_to_keep is 0), revisions beyond revisions_to_keep are
// discarded, and path replaces the clean image. Needs sem.
func (v *volume) commit(path string) error {
	if err := fsutil.SyncFile(path); err != nil {
		return err
	}
	v.p.crashPoint("commit-synced")
	revs, err := listRevisions(v.clean)
	if err != nil {
		return err
	}
	if revs, err = v.addRevision(revs); err != nil {
		return err
	}
	if err := v.pruneRevisions(revs, v.keep()); err != nil {
		return err
	}
	v.p.crashPoint("commit-pruned")
	return v.replaceClean(path)
}

// replaceClean renames the image at path over the clean image: the
// precache of the old one is discarded, the directory fsynced once, the
// configured size follows the new image, and a new precache is queued.
// Needs sem.
func (v *volume) replaceClean(path string) error {
	v.cancelPrecache()
	if err := v.p.discard(v.precache); err != nil {
		return err
	}
	v.p.crashPoint("precache-discarded")
	if err := v.p.renameNoSync(path, v.clean); err != nil {
		return err
	}
	v.p.crashPoint("clean-replaced")
	if err := fsutil.SyncDir(filepath.Dir(v.clean)); err != nil {
		return err
	}
	if st, err := os.Stat(v.clean); err == nil {
		v.setSize(st.Size())
	}
	v.schedulePrecache()
	return nil
}

// addRevision keeps the current clean image as the next revision, by hard
// link, unless revisions_to_keep is 0 or there is no clean image. If the
// newest revision already is the clean image's inode (a commit repeated
// after a crash), none is added. The link is made durable before the
// caller replaces the clean image, so a crash never loses the old state.
// revs are the current revisions; it returns them with the new one.
func (v *volume) addRevision(revs []revision) ([]revision, error) {
	if v.keep() == 0 {
		return revs, nil
	}
	st, err := os.Stat(v.clean)
	if errors.Is(err, fs.ErrNotExist) {
		return revs, nil
	}
	if err != nil {
		return revs, err
	}
	if n := len(revs); n > 0 {
		if rst, err := os.Stat(revs[n-1].path); err == nil && os.SameFile(st, rst) {
			return revs, nil
		}
	}
	n, t := nextRevision(revs), st.ModTime().Truncate(time.Second)
	if len(n) > maxRevisionDigits {
		// A name listRevisions would not read: such a revision would never
		// be listed or pruned. The commit goes on without one.
		v.p.log.Warn().Str("vid", v.cfg.VID).Str("revision", n).Msg("revision numbers are exhausted; committing without keeping a revision")
		return revs, nil
	}
	dst := revisionPath(v.clean, n, t)
	// A name that exists without being a revision (a number beyond
	// maxRevisionDigits beside it, planted by hand) must not stop every
	// commit: take the next number.
	for err := v.p.linkNoSync(v.clean, dst); err != nil; err = v.p.linkNoSync(v.clean, dst) {
		if !errors.Is(err, fs.ErrExist) || len(incNum(n)) > maxRevisionDigits {
			return revs, err
		}
		n = incNum(n)
		dst = revisionPath(v.clean, n, t)
	}
	v.p.crashPoint("revision-linked")
	if err := fsutil.SyncDir(filepath.Dir(v.clean)); err != nil {
		return revs, err
	}
	r := revision{Revision: storage.Revision{ID: n, Time: t.UTC()}, path: dst, num: n}
	return append(revs, r), nil
}

// pruneRevisions discards those of revs that Qubes'
// _prune_revisions(keep) deletes. Needs sem.
func (v *volume) pruneRevisions(revs []revision, keep int) error {
	for _, r := range toPrune(revs, keep) {
		if err := v.p.discard(r.path); err != nil {
			return err
		}
	}
	return nil
}

// Revisions lists the revisions, seed-era ones first, then by number.
func (v *volume) Revisions(ctx context.Context) ([]storage.Revision, error) {
	if err := v.checkPaths(); err != nil {
		return nil, v.wrap("revisions", err)
	}
	revs, err := listRevisions(v.clean)
	if err != nil {
		return nil, v.wrap("revisions", err)
	}
	out := make([]storage.Revision, len(revs))
	for i, r := range revs {
		out[i] = r.Revision
	}
	return out, nil
}

// Revert makes revision id (the newest for "") the clean image; the
// current clean image is kept as a new revision first (no pruning). The
// newest revision is the newest that is not the clean image itself, so a
// revert retried after a crash between its hard link and its rename
// restores its target.
func (v *volume) Revert(ctx context.Context, id string) error {
	if id != "" {
		if err := storage.ValidateRevisionID(id); err != nil {
			return v.wrap("revert", err)
		}
	}
	return v.do(ctx, "revert", func() error {
		if v.cfg.SaveOnStop && exists(v.dirty) {
			return storage.ErrDirty
		}
		revs, err := listRevisions(v.clean)
		if err != nil {
			return err
		}
		// A revision that is a second name of the clean image (a revert,
		// commit or import cut short after its hard link) holds the current
		// state, not an older one: the newest older one is the target.
		clean, err := os.Stat(v.clean)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		var target *revision
		for i := range revs {
			if id != "" && revs[i].ID != id {
				continue
			}
			if clean != nil && id == "" {
				if st, err := os.Stat(revs[i].path); err == nil && os.SameFile(clean, st) {
					continue
				}
			}
			target = &revs[i]
		}
		if target == nil {
			if id == "" {
				return fmt.Errorf("no revision to revert to: %w", storage.ErrNotFound)
			}
			return fmt.Errorf("revision %q: %w", id, storage.ErrNotFound)
		}
		if _, err := v.addRevision(revs); err != nil {
			return err
		}
		return v.replaceClean(target.path)
	})
}
