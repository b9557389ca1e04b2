package qubesxml

import (
	"bytes"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

// fixture is the realistic qubes.xml of an R4 installation.
const fixture = "../../testdata/qubes-r4/qubes.xml"

func readFixture(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(fixture)
	require.NoError(t, err)
	return data
}

func parse(t *testing.T, data []byte) *Installation {
	t.Helper()
	inst, err := Parse(bytes.NewReader(data))
	require.NoError(t, err)
	return inst
}

func intp(n int) *int { return &n }

func TestParseFixture(t *testing.T) {
	inst := parse(t, readFixture(t))

	assert.Equal(t, []Pool{
		{Name: "varlibqubes", Driver: "file", Line: 14, Params: map[string]string{"dir_path": "/var/lib/qubes", "ephemeral_volatile": "False", "revisions_to_keep": "1"}},
		{Name: "linux-kernel", Driver: "linux-kernel", Line: 15, Params: map[string]string{"dir_path": "/var/lib/qubes/vm-kernels"}},
		{Name: "vm-pool", Driver: "lvm_thin", Line: 16, Params: map[string]string{"ephemeral_volatile": "False", "revisions_to_keep": "2", "thin_pool": "vm-pool", "volume_group": "qubes_dom0"}},
		{Name: "ssd", Driver: "file-reflink", Line: 17, Params: map[string]string{"dir_path": "/mnt/ssd/qubes", "ephemeral_volatile": "False", "revisions_to_keep": "2"}},
	}, inst.Pools)

	type dom struct {
		name, class, template string
		dvm                   bool
		volumes               int
	}
	var got []dom
	for _, d := range inst.Domains {
		got = append(got, dom{d.Name, d.Class, d.Template, d.TemplateForDispVMs, len(d.Volumes)})
	}
	assert.Equal(t, []dom{
		{"dom0", ClassAdminVM, "", false, 0},
		{"fedora-40-xfce", ClassTemplateVM, "", false, 4},
		{"debian-12-xfce", ClassTemplateVM, "", false, 4},
		{"sys-net", ClassAppVM, "fedora-40-xfce", false, 4},
		{"personal", ClassAppVM, "fedora-40-xfce", false, 4},
		{"work", ClassAppVM, "debian-12-xfce", false, 4},
		{"default-dvm", ClassAppVM, "debian-12-xfce", true, 4},
		{"disp-web", ClassDispVM, "default-dvm", false, 4},
		{"win10", ClassStandaloneVM, "", false, 4},
	}, got)

	work, ok := inst.Domain("work")
	require.True(t, ok)
	line := work.Volumes[0].Line
	assert.Equal(t, []Volume{
		{Name: "root", Pool: "ssd", VID: "appvms/work/root", Size: 21474836480, RW: true, SnapOnStart: true, RevisionsToKeep: intp(0),
			Source: "vm-templates/debian-12-xfce/root", SourceRecorded: true, Line: line},
		{Name: "private", Pool: "ssd", VID: "appvms/work/private", Size: 10737418240, RW: true, SaveOnStop: true, RevisionsToKeep: intp(2), Line: line + 1},
		{Name: "volatile", Pool: "ssd", VID: "appvms/work/volatile", Size: 10737418240, RW: true, RevisionsToKeep: intp(0), Line: line + 2},
		{Name: "kernel", Pool: "linux-kernel", VID: "6.6.48-1.fc37", RevisionsToKeep: intp(0), Line: line + 3},
	}, work.Volumes)
	assert.True(t, strings.HasPrefix(strings.Split(string(readFixture(t)), "\n")[line-1], `        <volume name="root" pool="ssd"`), "Line is the element's line")

	disp, _ := inst.Domain("disp-web")
	private, ok := disp.Volume("private")
	require.True(t, ok)
	assert.Equal(t, storage.VolumeConfig{Name: "private", Pool: "ssd", VID: "appvms/disp-web/private", Size: 2147483648, RW: true,
		SnapOnStart: true, Source: "appvms/default-dvm/private", RevisionsToKeep: intp(0)}, private.Config())
	win, _ := inst.Domain("win10")
	kernel, _ := win.Volume("kernel")
	assert.Equal(t, "", kernel.VID, "an HVM's kernel volume has an empty vid")
}

// sourceAttr matches a recorded source attribute.
var sourceAttr = regexp.MustCompile(` source="[^"]*"`)

// TestParseDerivesSources: with the source attributes removed, every
// snapshot volume gets the source Qubes derives from the template
// relation, and it is the one Qubes recorded: an AppVM's root is its
// TemplateVM's root, a DispVM's root the TemplateVM's of its disposable
// template, its private the disposable template's private.
func TestParseDerivesSources(t *testing.T) {
	data := readFixture(t)
	recorded := parse(t, data)
	stripped := sourceAttr.ReplaceAll(data, nil)
	require.NotEqual(t, data, stripped)
	derived := parse(t, stripped)
	require.Len(t, derived.Domains, len(recorded.Domains))
	n := 0
	for i, d := range derived.Domains {
		for j, v := range d.Volumes {
			want := recorded.Domains[i].Volumes[j]
			assert.Equal(t, want.Config(), v.Config(), "%s:%s", d.Name, v.Name)
			assert.False(t, v.SourceRecorded)
			if v.SnapOnStart {
				n++
			}
		}
	}
	assert.Equal(t, 6, n, "sys-net, personal, work and default-dvm roots, disp-web's root and private")

	// Sizes and pools follow the source, as Qubes' load sets them.
	small := strings.Replace(string(stripped),
		`<volume name="root" pool="ssd" revisions_to_keep="0" rw="True" save_on_stop="False" size="21474836480" snap_on_start="True" vid="appvms/work/root"/>`,
		`<volume name="root" revisions_to_keep="0" rw="True" save_on_stop="False" snap_on_start="True" vid="appvms/work/root"/>`, 1)
	require.NotEqual(t, string(stripped), small)
	work, _ := parse(t, []byte(small)).Domain("work")
	root, _ := work.Volume("root")
	assert.Equal(t, "ssd", root.Pool)
	assert.Equal(t, int64(21474836480), root.Size)
}

// TestParseClassDefaults: attributes a <volume> lacks come from its
// class's default_volume_config, as in Qubes' test_600_load_volume_config.
func TestParseClassDefaults(t *testing.T) {
	inst := parse(t, []byte(`<qubes><pools><pool name="lvm" driver="lvm_thin" volume_group="qubes_dom0" thin_pool="pool00"/></pools><domains>
<domain class="TemplateVM" id="domain-1"><properties><property name="name">t</property></properties>
  <volume-config><volume name="root" pool="lvm" vid="qubes_dom0/vm-t-root"/><volume name="private" pool="lvm" vid="qubes_dom0/vm-t-private" internal="True"/></volume-config></domain>
<domain class="AppVM" id="domain-2"><properties><property name="name">testvm</property><property name="template">t</property></properties>
  <volume-config>
    <volume name="root" pool="lvm" revisions_to_keep="3" rw="True"
            size="1234" vid="qubes_dom0/vm-testvm-root" />
    <volume name="volatile" pool="lvm" vid="qubes_dom0/vm-testvm-volatile"/>
  </volume-config></domain>
</domains></qubes>`))
	tmpl, _ := inst.Domain("t")
	root, _ := tmpl.Volume("root")
	assert.Equal(t, storage.VolumeConfig{Name: "root", Pool: "lvm", VID: "qubes_dom0/vm-t-root", Size: 10 << 30, RW: true, SaveOnStop: true}, root.Config())
	vm, _ := inst.Domain("testvm")
	root, _ = vm.Volume("root")
	assert.Equal(t, storage.VolumeConfig{Name: "root", Pool: "lvm", VID: "qubes_dom0/vm-testvm-root", Size: 10 << 30, RW: true, SnapOnStart: true,
		Source: "qubes_dom0/vm-t-root", RevisionsToKeep: intp(3)}, root.Config(), "snap_on_start from AppVM's defaults, source, pool and size from the template")
	assert.Equal(t, 7, root.Line, "the line where the element's start tag ends")
	volatile, _ := vm.Volume("volatile")
	assert.Equal(t, storage.VolumeConfig{Name: "volatile", Pool: "lvm", VID: "qubes_dom0/vm-testvm-volatile", Size: 10 << 30, RW: true}, volatile.Config())
}

// TestParseErrors: malformed or inconsistent files are ErrInvalidConfig
// errors that name the element and its line.
func TestParseErrors(t *testing.T) {
	good := string(readFixture(t))
	replace := func(old, new string) string {
		t.Helper()
		require.Contains(t, good, old)
		return strings.Replace(good, old, new, 1)
	}
	for name, tc := range map[string]struct{ xml, msg string }{
		"empty":               {"", "no <qubes> element"},
		"not XML":             {"qubes.xml", "no <qubes> element"},
		"truncated":           {good[:len(good)/2], "unexpected EOF"},
		"unclosed":            {"<qubes><pools>", "unexpected EOF"},
		"mismatched":          {"<qubes><pools></domains></qubes>", "line 1: element <pools> closed by </domains>"},
		"other root":          {"<domains/>", "line 1: the root element is <domains>, not <qubes>"},
		"unknown entity":      {"<qubes>&boom;</qubes>", "invalid character entity &boom;"},
		"pool without driver": {replace(`driver="file-reflink" `, ""), `line 17: <pool name="ssd"> has no driver attribute`},
		"pool without name":   {replace(` name="ssd"`, ""), "line 17: <pool> has no name attribute"},
		"duplicate pool":      {replace(`name="ssd"`, `name="vm-pool"`), "line 17: pool vm-pool is defined twice (first at line 16)"},
		"bad pool name":       {replace(`name="ssd"`, `name="s/d"`), `line 17: <pool>: invalid configuration: pool name "s/d"`},
		"duplicate attribute": {replace(`name="ssd"`, `name="ssd" name="x"`), "line 17: <pool> has the attribute name twice"},
		"unknown volume pool": {replace(`pool="ssd" revisions_to_keep="2" rw="True" save_on_stop="True" size="10737418240"`, `pool="nvme" revisions_to_keep="2" rw="True" save_on_stop="True" size="10737418240"`), "line 164: volume private of domain work is in pool nvme, which <pools> does not define"},
		"unknown attribute":   {replace(`vid="appvms/work/private"`, `vid="appvms/work/private" encrypted="True"`), `line 164: volume private of domain work: unknown attribute encrypted="True"`},
		"lower-case bool":     {replace(`save_on_stop="True" size="10737418240" snap_on_start="False" vid="appvms/work/private"`, `save_on_stop="true" size="10737418240" snap_on_start="False" vid="appvms/work/private"`), `line 164: volume private of domain work: save_on_stop: "true" is not a boolean as Qubes writes them (True or False)`},
		"bad size":            {replace(`size="10737418240" snap_on_start="False" vid="appvms/work/private"`, `size="10G" snap_on_start="False" vid="appvms/work/private"`), `line 164: volume private of domain work: size "10G": want a number of bytes`},
		"negative size":       {replace(`size="10737418240" snap_on_start="False" vid="appvms/work/private"`, `size="-1" snap_on_start="False" vid="appvms/work/private"`), `size "-1"`},
		"bad revisions":       {replace(`revisions_to_keep="2" rw="True" save_on_stop="True" size="10737418240"`, `revisions_to_keep="-2" rw="True" save_on_stop="True" size="10737418240"`), `line 164: volume private of domain work: revisions_to_keep "-2": want an integer of at least -1`},
		"no vid":              {replace(` vid="appvms/work/private"`, ""), "line 164: volume private of domain work has no vid attribute"},
		"no volume name":      {replace(`<volume name="private" pool="ssd" revisions_to_keep="2" rw="True" save_on_stop="True" size="10737418240"`, `<volume pool="ssd" revisions_to_keep="2" rw="True" save_on_stop="True" size="10737418240"`), "line 164: a volume of domain work has no name attribute"},
		"bad volume name":     {replace(`<volume name="private" pool="ssd" revisions_to_keep="2" rw="True" save_on_stop="True" size="10737418240"`, `<volume name="pri-vate" pool="ssd" revisions_to_keep="2" rw="True" save_on_stop="True" size="10737418240"`), `line 164: volume pri-vate of domain work: invalid configuration: volume name "pri-vate"`},
		"duplicate volume":    {replace(`<volume name="volatile" pool="ssd" revisions_to_keep="0" rw="True" save_on_stop="False" size="10737418240" snap_on_start="False" vid="appvms/work/volatile"/>`, `<volume name="private" pool="ssd" revisions_to_keep="0" rw="True" save_on_stop="False" size="10737418240" snap_on_start="False" vid="appvms/work/volatile"/>`), "line 165: volume private of domain work is defined twice (first at line 164)"},
		"duplicate domain":    {replace(`<property name="name">personal</property>`, `<property name="name">work</property>`), "domain work is defined twice (first at line"},
		"missing template": {replace(`<property name="template">debian-12-xfce</property>
        <property name="uuid">9a7c`, `<property name="template">debian-13</property>
        <property name="uuid">9a7c`), "domain work: its template debian-13 is not defined"},
		"no template": {replace(`<property name="template">debian-12-xfce</property>
        <property name="uuid">9a7c`, `<property name="uuid">9a7c`), "domain work (AppVM) has no template property"},
		"template not a TemplateVM": {replace(`<property name="template">debian-12-xfce</property>
        <property name="uuid">9a7c`, `<property name="template">win10</property>
        <property name="uuid">9a7c`), "domain work: its template win10 is an StandaloneVM, not a TemplateVM"},
		"DispVM of a non-dvm":      {replace(`<property name="template">default-dvm</property>`, `<property name="template">work</property>`), "domain disp-web: its template work is not a disposable template (template_for_dispvms=True)"},
		"bad template_for_dispvms": {replace(`<property name="template_for_dispvms">True</property>`, `<property name="template_for_dispvms">maybe</property>`), `domain default-dvm: template_for_dispvms: invalid configuration: "maybe" is not a boolean`},
		"unknown class":            {replace(`class="StandaloneVM"`, `class="HVM"`), `domain win10: no such VM class: "HVM"`},
		"no class":                 {replace(` class="StandaloneVM"`, ""), "domain win10 has no class attribute"},
		"no name":                  {replace(`<property name="name">win10</property>`, ""), `domain id="domain-8" has no name property`},
		"bad VM name":              {replace(`<property name="name">win10</property>`, `<property name="name">10win</property>`), `domain 10win: invalid configuration: VM name "10win" must start with a letter`},
		"duplicate property":       {replace(`<property name="name">win10</property>`, `<property name="name">win10</property><property name="name">win11</property>`), "property name is given twice"},
		"AdminVM with volumes": {replace(`      <tags>
        <tag name="created-by-dom0"/>
      </tags>
    </domain>`, `      <volume-config><volume name="root" pool="ssd" vid="appvms/dom0/root"/></volume-config>
    </domain>`), "domain dom0 is an AdminVM, which has no volumes in Qubes"},
		"unknown source":       {replace(`source="appvms/default-dvm/private"`, `source="appvms/default-dvm/data"`), "volume private of domain disp-web: its source appvms/default-dvm/data is not a volume of pool ssd"},
		"source of a snapshot": {replace(`source="appvms/default-dvm/private"`, `source="appvms/work/root"`), "its source appvms/work/root is a snapshot itself"},
		"empty source":         {replace(`source="appvms/default-dvm/private"`, `source=""`), "empty source attribute"},
		"source without snap":  {replace(`snap_on_start="False" vid="appvms/work/private"`, `snap_on_start="False" source="vm-templates/debian-12-xfce/private" vid="appvms/work/private"`), "source specified on \"private\" but no snap_on_start set"},
		"source in other pool": {sourceAttr.ReplaceAllString(replace(`pool="ssd" revisions_to_keep="0" rw="True" save_on_stop="False" size="21474836480" snap_on_start="True" source="vm-templates/debian-12-xfce/root" vid="appvms/work/root"`, `pool="vm-pool" revisions_to_keep="0" rw="True" save_on_stop="False" size="21474836480" snap_on_start="True" source="vm-templates/debian-12-xfce/root" vid="appvms/work/root"`), ""),
			"volume root of domain work is in pool vm-pool, but its source vm-templates/debian-12-xfce/root (from the template) is in pool ssd"},
		"template lacks volume": {sourceAttr.ReplaceAllString(replace(`<volume name="private" pool="ssd" revisions_to_keep="2" rw="True" save_on_stop="True" size="2147483648" snap_on_start="False" vid="appvms/default-dvm/private"/>`, ""), ""),
			"volume private of domain disp-web is snap_on_start: its template default-dvm has no volume private"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tc.xml))
			require.Error(t, err)
			assert.ErrorIs(t, err, storage.ErrInvalidConfig)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

func TestParseReadError(t *testing.T) {
	boom := errors.New("boom")
	_, err := Parse(iotest.ErrReader(boom))
	require.ErrorIs(t, err, boom)
	assert.NotErrorIs(t, err, storage.ErrInvalidConfig)
	_, err = Parse(bytes.NewReader(make([]byte, MaxSize+1)))
	assert.ErrorIs(t, err, storage.ErrInvalidConfig)
	assert.ErrorContains(t, err, "larger than")
}

// TestValidate: an Installation built by hand is checked as a parsed one.
func TestValidate(t *testing.T) {
	good := func() *Installation {
		return &Installation{
			Pools: []Pool{{Name: "p", Driver: "file-reflink", Params: map[string]string{"dir_path": "/x"}}},
			Domains: []Domain{
				{Name: "t", Class: ClassTemplateVM, Volumes: []Volume{{Name: "root", Pool: "p", VID: "vm-templates/t/root", RW: true, SaveOnStop: true}}},
				{Name: "a", Class: ClassAppVM, Template: "t", Volumes: []Volume{{Name: "root", Pool: "p", VID: "appvms/a/root", SnapOnStart: true, Source: "vm-templates/t/root"}}},
			},
		}
	}
	require.NoError(t, good().Validate())
	for name, tc := range map[string]struct {
		change func(*Installation)
		msg    string
	}{
		"no driver":      {func(i *Installation) { i.Pools[0].Driver = "" }, "pool p has an empty driver"},
		"param driver":   {func(i *Installation) { i.Pools[0].Params["driver"] = "file" }, `pool p: "driver" is not a parameter`},
		"two pools":      {func(i *Installation) { i.Pools = append(i.Pools, i.Pools[0]) }, "pool p is defined twice"},
		"two domains":    {func(i *Installation) { i.Domains[1].Name = "t" }, "domain t is defined twice"},
		"no pool":        {func(i *Installation) { i.Domains[0].Volumes[0].Pool = "" }, "volume root of domain t names no pool"},
		"unknown pool":   {func(i *Installation) { i.Domains[0].Volumes[0].Pool = "q" }, "which <pools> does not define"},
		"no source":      {func(i *Installation) { i.Domains[1].Volumes[0].Source = "" }, "snap_on_start specified on \"root\" but no volume source set"},
		"missing source": {func(i *Installation) { i.Domains[1].Volumes[0].Source = "vm-templates/u/root" }, "its source vm-templates/u/root is not a volume of pool p"},
		"NUL vid":        {func(i *Installation) { i.Domains[0].Volumes[0].VID = "a\x00b" }, "NUL"},
	} {
		inst := good()
		tc.change(inst)
		err := inst.Validate()
		assert.ErrorIs(t, err, storage.ErrInvalidConfig, name)
		assert.ErrorContains(t, err, tc.msg, name)
	}
}

// FuzzParse: no input makes Parse panic, and what it accepts is valid, its
// snapshot volumes have their source, and parsing is deterministic.
func FuzzParse(f *testing.F) {
	// An interesting mutation of the 15 KB fixture takes the fuzzer up to
	// -fuzzminimizetime (60 s) to minimize: make fuzz bounds it by runs.
	f.Add(readFixture(f))
	f.Add(sourceAttr.ReplaceAll(readFixture(f), nil))
	f.Add([]byte(`<qubes><pools><pool name="p" driver="x"/></pools><domains><domain class="TemplateVM"><properties><property name="name">t</property></properties><volume-config><volume name="root" pool="p" vid="v"/></volume-config></domain></domains></qubes>`))
	f.Add([]byte(`<qubes><domains><domain class="AdminVM"/></domains></qubes>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		inst, err := Parse(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, storage.ErrInvalidConfig) {
				t.Fatalf("error does not wrap ErrInvalidConfig: %v", err)
			}
			return
		}
		if err := inst.Validate(); err != nil {
			t.Fatalf("Parse accepted what Validate refuses: %v", err)
		}
		for _, d := range inst.Domains {
			for _, v := range d.Volumes {
				if v.SnapOnStart != (v.Source != "") {
					t.Fatalf("%s:%s: snap_on_start %v with source %q", d.Name, v.Name, v.SnapOnStart, v.Source)
				}
			}
		}
		again, err := Parse(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("second parse: %v", err)
		}
		assert.Equal(t, inst, again)
	})
}
