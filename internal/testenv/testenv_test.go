package testenv

import "testing"

func TestRequired(t *testing.T) {
	for _, tc := range []struct {
		env, what string
		want      bool
	}{
		{"", "root", false},
		{"all", "root", true},
		{"root,mkfs.xfs", "mkfs.xfs", true},
		{"root, mkfs.xfs", "mkfs.xfs", true},
		{"root", "mkfs.xfs", false},
		{"allx", "root", false},
	} {
		t.Setenv(EnvRequire, tc.env)
		if got := Required(tc.what); got != tc.want {
			t.Errorf("VMPOOL_REQUIRE=%q Required(%q) = %v, want %v", tc.env, tc.what, got, tc.want)
		}
	}
}
