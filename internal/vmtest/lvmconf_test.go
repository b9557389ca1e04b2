package vmtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/internal/testenv"
)

func TestFormatLVMConf(t *testing.T) {
	got, err := formatLVMConf([]lvmSection{
		{"devices", []lvmSetting{{"use_devicesfile", 0}, {"filter", `a|"x\y|`}}},
		{"global", nil},
	})
	require.NoError(t, err)
	assert.Equal(t, `# written by vmpool's internal/vmtest: this VM has no udev, lvmpolld or dmeventd
devices {
	use_devicesfile = 0
	filter = "a|\"x\\y|"
}
global {
}
`, got)

	for _, bad := range [][]lvmSection{
		{{"Devices", nil}},
		{{"", nil}},
		{{"devices", []lvmSetting{{"a b", 1}}}},
		{{"devices", []lvmSetting{{"x", "a\nb"}}}},
		{{"devices", []lvmSetting{{"x", 1.5}}}},
	} {
		_, err := formatLVMConf(bad)
		assert.Error(t, err, "%v", bad)
	}
}

// TestGuestLVMConfLVMReadsIt has the host's lvmconfig read the guest's
// lvm.conf back: every setting is there with our value.
func TestGuestLVMConfLVMReadsIt(t *testing.T) {
	testenv.RequireCommand(t, "lvmconfig")
	conf, err := formatLVMConf(guestLVMConf)
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "lvm.conf"), []byte(conf), 0o644))
	var keys, want []string
	for _, s := range guestLVMConf {
		for _, st := range s.settings {
			keys = append(keys, s.name+"/"+st.name)
			v := fmt.Sprint(st.value)
			if _, ok := st.value.(string); ok {
				v = `"` + v + `"`
			}
			want = append(want, st.name+"="+v)
		}
	}
	cmd := exec.Command("lvmconfig", append([]string{"--type", "current"}, keys...)...)
	cmd.Env = append(os.Environ(), "LVM_SYSTEM_DIR="+dir, "LVM_SUPPRESS_FD_WARNINGS=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr // as non-root, lvm warns there
	out, err := cmd.Output()
	require.NoError(t, err, "%s", stderr.String())
	assert.Equal(t, want, strings.Fields(string(out)))
}
