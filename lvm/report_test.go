package lvm

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

// A report as lvm2 2.03.16 prints it in its shell, with another command's
// message before it.
const sampleReport = `  Logical volume "vm-a-b" created.
  LVM2_VG_NAME='vmtestvg' LVM2_LV_NAME='pool' LVM2_POOL_LV='' LVM2_LV_SIZE='4294967296' LVM2_DATA_PERCENT='0.50' LVM2_LV_ATTR='twi-aotz--' LVM2_ORIGIN='' LVM2_LV_METADATA_SIZE='4194304' LVM2_METADATA_PERCENT='11.23' LVM2_LV_UUID='o81hFC'
  LVM2_VG_NAME='vmtestvg' LVM2_LV_NAME='vm-a-b' LVM2_POOL_LV='pool' LVM2_LV_SIZE='8388608' LVM2_DATA_PERCENT='25.00' LVM2_LV_ATTR='Vwi-a-tz--' LVM2_ORIGIN='' LVM2_LV_METADATA_SIZE='' LVM2_METADATA_PERCENT='' LVM2_LV_UUID='NeJPjW'
  LVM2_VG_NAME='vmtestvg' LVM2_LV_NAME='vm-a-b-snap' LVM2_POOL_LV='pool' LVM2_LV_SIZE='8388608' LVM2_DATA_PERCENT='' LVM2_LV_ATTR='Vwi---tz-k' LVM2_ORIGIN='vm-a-b' LVM2_LV_METADATA_SIZE='' LVM2_METADATA_PERCENT='' LVM2_LV_UUID='x'
  LVM2_VG_NAME='other' LVM2_LV_NAME='lv' LVM2_POOL_LV='' LVM2_LV_SIZE='1' LVM2_DATA_PERCENT='' LVM2_LV_ATTR='-wi-a-----' LVM2_ORIGIN='' LVM2_LV_METADATA_SIZE='' LVM2_METADATA_PERCENT='' LVM2_LV_UUID='y'
`

func TestParseReport(t *testing.T) {
	r, err := parseReport([]byte(sampleReport), "vmtestvg")
	require.NoError(t, err)
	require.Len(t, r, 3, "the other volume group's LV is left out")
	pool := r["pool"]
	assert.True(t, pool.thinPool())
	assert.Equal(t, int64(4294967296), pool.Size)
	assert.Equal(t, int64(21474836), pool.Usage)
	assert.Equal(t, int64(4194304), pool.MetadataSize)
	assert.Equal(t, int64(471020), pool.MetadataUsage)
	b := r["vm-a-b"]
	assert.Equal(t, lvInfo{VG: "vmtestvg", Name: "vm-a-b", PoolLV: "pool", Size: 8388608, Usage: 2097152, Attr: "Vwi-a-tz--", UUID: "NeJPjW"}, b)
	assert.True(t, b.active())
	snap := r["vm-a-b-snap"]
	assert.False(t, snap.active(), "inactive, with the activation-skip flag")
	assert.Equal(t, "vm-a-b", snap.Origin)
	assert.Zero(t, snap.Usage, "inactive: no data_percent")

	for name, bad := range map[string]string{
		"unquoted":     "LVM2_VG_NAME=vg LVM2_LV_NAME='a'",
		"unterminated": "LVM2_VG_NAME='vg' LVM2_LV_NAME='a",
		"size":         "LVM2_VG_NAME='vg' LVM2_LV_NAME='a' LVM2_LV_SIZE='12x'",
		"negative":     "LVM2_VG_NAME='vg' LVM2_LV_NAME='a' LVM2_LV_SIZE='-1'",
		"percent":      "LVM2_VG_NAME='vg' LVM2_LV_NAME='a' LVM2_LV_SIZE='1' LVM2_DATA_PERCENT='101'",
		"twice":        "LVM2_VG_NAME='vg' LVM2_LV_NAME='a' LVM2_LV_NAME='b'",
		"no vg":        "LVM2_LV_NAME='a'",
		"glued":        "LVM2_VG_NAME='vg'LVM2_LV_NAME='a'",
	} {
		_, err := parseReport([]byte(bad+"\n"), "vg")
		assert.Error(t, err, name)
	}
}

func FuzzParseReport(f *testing.F) {
	f.Add([]byte(sampleReport), "vmtestvg")
	f.Add([]byte("LVM2_VG_NAME='vg' LVM2_LV_NAME='a' LVM2_LV_SIZE='1'\n"), "vg")
	f.Fuzz(func(t *testing.T, out []byte, vg string) {
		r, err := parseReport(out, vg)
		if err != nil {
			return
		}
		for name, l := range r {
			require.Equal(t, name, l.Name)
			require.Equal(t, vg, l.VG)
			require.GreaterOrEqual(t, l.Size, int64(0))
			require.GreaterOrEqual(t, l.Usage, int64(0))
			require.LessOrEqual(t, l.Usage, l.Size)
			require.LessOrEqual(t, l.MetadataUsage, l.MetadataSize)
		}
	})
}

func TestNames(t *testing.T) {
	assert.Equal(t, "/dev/mapper/qubes_dom0-vm--sys--net--private--snap", mapperPath("qubes_dom0", "vm-sys-net-private-snap"))
	assert.Equal(t, "/dev/mapper/my--vg-vm--a--b", mapperPath("my-vg", "vm-a-b"))
	rev, ok := parseRevision("vm-a-b", "vm-a-b-1521065904-back")
	require.True(t, ok)
	assert.Equal(t, revision{id: "1521065904-back", epoch: 1521065904, lv: "vm-a-b-1521065904-back"}, rev)
	assert.Equal(t, "2018-03-14T22:18:24", storage.Revision{Time: rev.time()}.Timestamp())
	for _, name := range []string{"vm-a-b", "vm-a-b-snap", "vm-a-b-import", "vm-a-b-c-1521065904-back", "vm-a-b--back", "vm-a-b-+1-back", "vm-a-b-12a-back", "vm-a-bc-1-back"} {
		_, ok := parseRevision("vm-a-b", name)
		assert.False(t, ok, name)
	}
	r := report{"vm-a-b-5-back": {}, "vm-a-b-10-back": {}, "vm-a-b-snap": {}}
	assert.Equal(t, "vm-a-b-10-back", currentLV(r, "vm-a-b"), "no committed LV: the newest revision, by number")
	r["vm-a-b"] = lvInfo{}
	assert.Equal(t, "vm-a-b", currentLV(r, "vm-a-b"))
	assert.Equal(t, "vm-a-b-11-back", revisionName(r, "vm-a-b", timeUnix(3)), "never older than the newest revision")
	assert.Equal(t, "vm-a-b-100-back", revisionName(r, "vm-a-b", timeUnix(100)))
}

func timeUnix(s int64) time.Time { return time.Unix(s, 0) }

func TestParseThinStatus(t *testing.T) {
	n, ok := parseThinStatus([]byte("0 2097152 thin 8192 2097151\n"))
	assert.True(t, ok)
	assert.Equal(t, int64(8192*512), n)
	for _, bad := range []string{"", "0 2097152 thin-pool 1 2", "0 1 thin x 2", "0 1 thin -1 2"} {
		_, ok := parseThinStatus([]byte(bad))
		assert.False(t, ok, bad)
	}
}
