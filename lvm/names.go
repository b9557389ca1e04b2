package lvm

import (
	"slices"
	"strconv"
	"strings"
	"time"
)

// The suffixes of a volume's logical volumes, as Qubes' lvm.py names them:
// vm-NAME-VOL is the committed state (and a volatile volume's running
// one), vm-NAME-VOL-snap a running snapshot or origin, vm-NAME-VOL-import
// an import in progress and vm-NAME-VOL-<epoch>-back a revision.
const (
	snapSuffix   = "-snap"
	importSuffix = "-import"
	backSuffix   = "-back"
)

// mapperPath returns the device-mapper node of LV lv of volume group vg,
// as Qubes' ThinVolume.path names it: "/dev/mapper/" + VG and LV with
// each '-' doubled, joined by '-'.
func mapperPath(vg, lv string) string {
	return "/dev/mapper/" + strings.ReplaceAll(vg, "-", "--") + "-" + strings.ReplaceAll(lv, "-", "--")
}

// devPath returns /dev/VG/LV, the link lvm makes to an active LV.
func devPath(vg, lv string) string { return "/dev/" + vg + "/" + lv }

// revision is a revision LV of a volume.
type revision struct {
	id    string // "<epoch>-back"
	epoch int64
	lv    string
}

func (r revision) time() time.Time { return time.Unix(r.epoch, 0).UTC() }

// parseRevision tells whether LV name is a revision of the volume whose
// committed LV is base, as Qubes' ThinVolume.revisions reads them: base,
// '-', decimal seconds since the epoch, "-back", and no other '-' (an LV
// of a VM whose name extends base's is not one, Qubes #4680).
func parseRevision(base, name string) (revision, bool) {
	rest, ok := strings.CutPrefix(name, base+"-")
	if !ok {
		return revision{}, false
	}
	num, ok := strings.CutSuffix(rest, backSuffix)
	if !ok || num == "" || len(num) > 18 || strings.Trim(num, "0123456789") != "" {
		return revision{}, false
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return revision{}, false
	}
	return revision{id: rest, epoch: n, lv: name}, true
}

// revisionsOf returns the revisions of base in r, oldest first (by epoch,
// then name, as Qubes' _revision_sort_key).
func revisionsOf(r report, base string) []revision {
	var revs []revision
	for name := range r {
		if rev, ok := parseRevision(base, name); ok {
			revs = append(revs, rev)
		}
	}
	slices.SortFunc(revs, func(a, b revision) int {
		if a.epoch != b.epoch {
			if a.epoch < b.epoch {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	return revs
}

// currentLV returns the LV that holds base's committed state, as Qubes'
// _vid_current: base itself if it exists, else its newest revision (a
// commit interrupted between its two renames), else base.
func currentLV(r report, base string) string {
	if _, ok := r[base]; ok {
		return base
	}
	if revs := revisionsOf(r, base); len(revs) > 0 {
		return revs[len(revs)-1].lv
	}
	return base
}

// revisionName returns the LV name of a new revision of base made at now:
// base-<epoch>-back, where epoch is now's, or one more than the newest
// existing revision's when that is not older (two commits within a
// second), so that revisions stay unique and in order.
func revisionName(r report, base string, now time.Time) string {
	epoch := now.Unix()
	if revs := revisionsOf(r, base); len(revs) > 0 && revs[len(revs)-1].epoch >= epoch {
		epoch = revs[len(revs)-1].epoch + 1
	}
	return base + "-" + strconv.FormatInt(epoch, 10) + backSuffix
}
