package lvm

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// reportFields are the lvs columns the driver reads: Qubes' cache columns
// (vg_name, pool_lv, name, lv_size, data_percent, lv_attr, origin,
// lv_metadata_size, metadata_percent) and the LV's uuid.
const reportFields = "vg_name,lv_name,pool_lv,lv_size,data_percent,lv_attr,origin,lv_metadata_size,metadata_percent,lv_uuid"

// reportArgs returns the lvs command of the report of volume group vg. The
// lvm shell ignores --reportformat json, so the report uses the name=value
// form (--nameprefixes), which it honours, with sizes in bytes.
func reportArgs(vg string) []string {
	return []string{"lvs", "--nameprefixes", "--noheadings", "--units", "b", "--nosuffix", "-o", reportFields, "--", vg}
}

// lvInfo is one logical volume of the report.
type lvInfo struct {
	VG, Name string
	PoolLV   string
	Size     int64
	// Usage is the bytes the thin LV (or the pool's data) has allocated:
	// Size × data_percent, as Qubes computes it; 0 when inactive.
	Usage        int64
	Attr         string
	Origin       string
	MetadataSize int64
	// MetadataUsage is MetadataSize × metadata_percent.
	MetadataUsage int64
	UUID          string
}

// active tells whether the LV is active (lv_attr's fifth character).
func (l lvInfo) active() bool { return len(l.Attr) > 4 && l.Attr[4] == 'a' }

// thinPool tells whether the LV is a thin pool (lv_attr starts with 't').
func (l lvInfo) thinPool() bool { return len(l.Attr) > 0 && l.Attr[0] == 't' }

// report is the parsed output of lvs for one volume group: LV name → info.
type report map[string]lvInfo

// parseReport parses the output of the report command (reportArgs): lines
// of LVM2_NAME='VALUE' pairs. Lines without LVM2_LV_NAME (other commands'
// messages in the same stdout) are skipped; a malformed report line is an
// error. Only the LVs of volume group vg are kept.
func parseReport(out []byte, vg string) (report, error) {
	r := make(report)
	for n, raw := range bytes.Split(out, []byte("\n")) {
		line := strings.TrimSpace(string(raw))
		if !strings.HasPrefix(line, "LVM2_") || !strings.Contains(line, "LVM2_LV_NAME=") {
			continue
		}
		kv, err := parsePairs(line)
		if err != nil {
			return nil, fmt.Errorf("lvs output line %d: %w", n+1, err)
		}
		l := lvInfo{VG: kv["VG_NAME"], Name: kv["LV_NAME"], PoolLV: kv["POOL_LV"], Attr: kv["LV_ATTR"], Origin: kv["ORIGIN"], UUID: kv["LV_UUID"]}
		if l.VG == "" || l.Name == "" {
			return nil, fmt.Errorf("lvs output line %d: no vg_name or lv_name", n+1)
		}
		if l.VG != vg {
			continue
		}
		if l.Size, err = parseBytes(kv["LV_SIZE"]); err != nil {
			return nil, fmt.Errorf("lvs output line %d: lv_size: %w", n+1, err)
		}
		if l.Usage, err = percentOf(l.Size, kv["DATA_PERCENT"]); err != nil {
			return nil, fmt.Errorf("lvs output line %d: data_percent: %w", n+1, err)
		}
		if l.MetadataSize, err = parseBytes(kv["LV_METADATA_SIZE"]); err != nil {
			return nil, fmt.Errorf("lvs output line %d: lv_metadata_size: %w", n+1, err)
		}
		if l.MetadataUsage, err = percentOf(l.MetadataSize, kv["METADATA_PERCENT"]); err != nil {
			return nil, fmt.Errorf("lvs output line %d: metadata_percent: %w", n+1, err)
		}
		r[l.Name] = l
	}
	return r, nil
}

// parsePairs parses KEY='VALUE' pairs separated by blanks; the LVM2_
// prefix is dropped from the keys. lvm quotes values with ' and never
// puts one inside (names cannot hold it).
func parsePairs(line string) (map[string]string, error) {
	kv := make(map[string]string)
	for s := line; ; {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return kv, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 || !strings.HasPrefix(s, "LVM2_") {
			return nil, fmt.Errorf("malformed field %q", trunc(s))
		}
		key := s[len("LVM2_"):eq]
		s = s[eq+1:]
		if !strings.HasPrefix(s, "'") {
			return nil, fmt.Errorf("unquoted value of %s", key)
		}
		end := strings.IndexByte(s[1:], '\'')
		if end < 0 {
			return nil, fmt.Errorf("unterminated value of %s", key)
		}
		if _, dup := kv[key]; dup {
			return nil, fmt.Errorf("field %s twice", key)
		}
		kv[key] = s[1 : 1+end]
		s = s[2+end:]
		if s != "" && s[0] != ' ' && s[0] != '\t' {
			return nil, fmt.Errorf("no blank after the value of %s", key)
		}
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// parseBytes parses a size in bytes; empty is 0.
func parseBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size in bytes", s)
	}
	return n, nil
}

// percentOf returns size × percent / 100 as Qubes computes usage
// (int(size / 100 * float(percent))); an empty percent is 0.
func percentOf(size int64, percent string) (int64, error) {
	if percent == "" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(percent, 64)
	if err != nil || f < 0 || f > 100 || f != f {
		return 0, fmt.Errorf("%q is not a percentage", percent)
	}
	return int64(float64(size) / 100 * f), nil
}
