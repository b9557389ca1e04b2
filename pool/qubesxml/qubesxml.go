// Package qubesxml reads the storage part of a Qubes OS R4 qubes.xml: the
// pools of <pools> and, for every domain of <domains>, the <volume>
// elements of its <volume-config>, with the template relations that give
// snapshot volumes their source. pool.Manager.ImportQubesXML records what
// it reads.
//
// The schema is the one qubesd writes (qubes/app.py Qubes.__xml__ and
// load, qubes/storage/__init__.py Pool.__xml__ and Volume.config,
// qubes/vm/qubesvm.py): a pool is an element whose attributes are its
// configuration,
//
//	<pool dir_path="/var/lib/qubes" driver="file" ephemeral_volatile="False" name="varlibqubes" revisions_to_keep="1"/>
//
// and a domain carries its properties and volumes:
//
//	<domain id="domain-3" class="AppVM">
//	  <properties><property name="name">work</property><property name="template">fedora-40-xfce</property>...</properties>
//	  <volume-config>
//	    <volume name="root" pool="vm-pool" revisions_to_keep="2" rw="True" save_on_stop="False" size="21474836480"
//	            snap_on_start="True" source="qubes_dom0/vm-fedora-40-xfce-root" vid="qubes_dom0/vm-work-root"/>
//	  </volume-config>
//	</domain>
//
// Labels, global properties, features, tags and devices are ignored. The
// input is untrusted: malformed XML and everything Qubes would refuse at
// load are errors wrapping storage.ErrInvalidConfig that name the element
// and its line. A driver this package does not know is not an error: the
// caller decides what to do with the pool.
package qubesxml

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/vmpool/vmpool/storage"
)

// MaxSize is the largest qubes.xml Parse reads, in bytes. A real one, with
// hundreds of qubes, is well below a megabyte.
const MaxSize = 32 << 20

// The domain classes of Qubes R4 (the qubes.vm entry points of
// qubes-core-admin).
const (
	ClassAppVM        = "AppVM"
	ClassTemplateVM   = "TemplateVM"
	ClassDispVM       = "DispVM"
	ClassStandaloneVM = "StandaloneVM"
	ClassAdminVM      = "AdminVM"
	ClassRemoteVM     = "RemoteVM"
)

// Installation is the storage configuration of a Qubes installation.
type Installation struct {
	// Pools are the pools of <pools>, in the file's order.
	Pools []Pool
	// Domains are the domains of <domains>, in the file's order.
	Domains []Domain
}

// Pool is one <pool> element.
type Pool struct {
	// Name is the pool's name attribute.
	Name string
	// Driver is the driver attribute ("file", "file-reflink", "lvm_thin",
	// "linux-kernel", ...), unchecked.
	Driver string
	// Params are all other attributes, as written (dir_path,
	// revisions_to_keep, ephemeral_volatile, volume_group, thin_pool, ...).
	Params map[string]string
	// Line is the element's line in the file (0 when not parsed).
	Line int
}

// Domain is one <domain> element.
type Domain struct {
	// Name is the name property ("dom0" for an AdminVM without one).
	Name string
	// Class is the class attribute: one of the Class constants.
	Class string
	// Template is the template property: the TemplateVM of an AppVM, the
	// disposable template of a DispVM; "" for the other classes.
	Template string
	// TemplateForDispVMs is the template_for_dispvms property (true for a
	// disposable template).
	TemplateForDispVMs bool
	// Volumes are the domain's volumes, in the file's order.
	Volumes []Volume
	// Line is the element's line in the file (0 when not parsed).
	Line int
}

// Volume is one <volume> element of a domain, completed as Qubes
// completes it at load: attributes it lacks come from the defaults of the
// domain's class, and a snap_on_start volume without a recorded source
// gets its source from the template relation.
type Volume struct {
	// Name is the volume's name in its domain (root, private, volatile,
	// kernel).
	Name string
	// Pool is the name of the volume's pool.
	Pool string
	// VID identifies the volume in its pool.
	VID string
	// Size is the size in bytes (0 when not recorded).
	Size int64
	// RW, SnapOnStart and SaveOnStop are the volume's flags.
	RW, SnapOnStart, SaveOnStop bool
	// RevisionsToKeep is nil when not recorded (the pool's default).
	RevisionsToKeep *int
	// Ephemeral is nil when not recorded (the pool's default).
	Ephemeral *bool
	// Source is the vid of the volume a snap_on_start volume starts from,
	// in the same pool: as recorded, else derived from the template.
	Source string
	// SourceRecorded tells whether Source was written in the file.
	SourceRecorded bool
	// Line is the element's line in the file (0 when not parsed).
	Line int
}

// Config returns the volume as a storage.VolumeConfig.
func (v Volume) Config() storage.VolumeConfig {
	cfg := storage.VolumeConfig{Name: v.Name, Pool: v.Pool, VID: v.VID, Size: v.Size, RW: v.RW,
		SnapOnStart: v.SnapOnStart, SaveOnStop: v.SaveOnStop, Source: v.Source}
	if v.RevisionsToKeep != nil {
		n := *v.RevisionsToKeep
		cfg.RevisionsToKeep = &n
	}
	if v.Ephemeral != nil {
		b := *v.Ephemeral
		cfg.Ephemeral = &b
	}
	return cfg
}

// Pool returns the pool named name, or false.
func (inst *Installation) Pool(name string) (Pool, bool) {
	for _, p := range inst.Pools {
		if p.Name == name {
			return p, true
		}
	}
	return Pool{}, false
}

// Domain returns the domain named name, or false.
func (inst *Installation) Domain(name string) (Domain, bool) {
	for _, d := range inst.Domains {
		if d.Name == name {
			return d, true
		}
	}
	return Domain{}, false
}

// Volume returns the volume named name of d, or false.
func (d Domain) Volume(name string) (Volume, bool) {
	for _, v := range d.Volumes {
		if v.Name == name {
			return v, true
		}
	}
	return Volume{}, false
}

// Parse reads a qubes.xml from r (at most MaxSize bytes). Errors wrap
// storage.ErrInvalidConfig, but for a failing r.
func Parse(r io.Reader) (*Installation, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read qubes.xml: %w", err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: qubes.xml is larger than %d bytes", storage.ErrInvalidConfig, MaxSize)
	}
	raw, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("%w: qubes.xml: %w", storage.ErrInvalidConfig, err)
	}
	inst, err := raw.complete()
	if err != nil {
		return nil, fmt.Errorf("%w: qubes.xml: %w", storage.ErrInvalidConfig, err)
	}
	if err := inst.Validate(); err != nil {
		return nil, err
	}
	return inst, nil
}

// rawDomain is a <domain> as read, before its volumes are completed.
type rawDomain struct {
	class, id  string
	line       int
	properties map[string]string
	propLines  map[string]int
	volumes    []rawVolume
}

// rawVolume is a <volume> as read: its attributes.
type rawVolume struct {
	attrs map[string]string
	line  int
}

type rawFile struct {
	pools   []Pool
	domains []*rawDomain
}

// decode reads the elements Parse needs, with their lines.
func decode(data []byte) (*rawFile, error) {
	d := xml.NewDecoder(strings.NewReader(string(data)))
	d.Strict = true
	var (
		f     rawFile
		stack []string
		dom   *rawDomain
		prop  *strings.Builder
		pname string
		pline int
		root  bool
	)
	path := func() string { return strings.Join(stack, "/") }
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		line, _ := d.InputPos()
		switch t := tok.(type) {
		case xml.StartElement:
			if len(stack) == 0 {
				if root {
					return nil, fmt.Errorf("line %d: a second root element <%s>", line, t.Name.Local)
				}
				if t.Name.Local != "qubes" {
					return nil, fmt.Errorf("line %d: the root element is <%s>, not <qubes>", line, t.Name.Local)
				}
				root = true
			}
			stack = append(stack, t.Name.Local)
			attrs, err := attrMap(t, line)
			if err != nil {
				return nil, err
			}
			switch path() {
			case "qubes/pools/pool":
				p := Pool{Name: attrs["name"], Driver: attrs["driver"], Line: line}
				_, hasName := attrs["name"]
				_, hasDriver := attrs["driver"]
				if !hasName {
					return nil, fmt.Errorf("line %d: <pool> has no name attribute", line)
				}
				if !hasDriver {
					return nil, fmt.Errorf("line %d: <pool name=%q> has no driver attribute (no driver specified for pool %s)", line, p.Name, p.Name)
				}
				delete(attrs, "name")
				delete(attrs, "driver")
				p.Params = attrs
				f.pools = append(f.pools, p)
			case "qubes/domains/domain":
				dom = &rawDomain{class: attrs["class"], id: attrs["id"], line: line,
					properties: make(map[string]string), propLines: make(map[string]int)}
				f.domains = append(f.domains, dom)
			case "qubes/domains/domain/properties/property":
				pname, pline = attrs["name"], line
				if pname == "" {
					return nil, fmt.Errorf("line %d: <property> has no name attribute", line)
				}
				if _, dup := dom.properties[pname]; dup {
					return nil, fmt.Errorf("line %d: property %s is given twice (first at line %d)", line, pname, dom.propLines[pname])
				}
				if ref, ok := attrs["ref"]; ok { // as Qubes: the ref, else the text
					dom.properties[pname] = ref
					dom.propLines[pname] = line
					prop = nil
					break
				}
				prop = new(strings.Builder)
			case "qubes/domains/domain/volume-config/volume":
				dom.volumes = append(dom.volumes, rawVolume{attrs: attrs, line: line})
			}
		case xml.CharData:
			if prop != nil && path() == "qubes/domains/domain/properties/property" {
				prop.Write(t)
			}
		case xml.EndElement:
			if path() == "qubes/domains/domain/properties/property" && prop != nil {
				dom.properties[pname] = prop.String()
				dom.propLines[pname] = pline
				prop = nil
			}
			stack = stack[:len(stack)-1]
		}
	}
	if !root {
		return nil, errors.New("no <qubes> element")
	}
	return &f, nil
}

// attrMap returns the attributes of t by name; one given twice is an error
// (encoding/xml does not refuse it).
func attrMap(t xml.StartElement, line int) (map[string]string, error) {
	m := make(map[string]string, len(t.Attr))
	for _, a := range t.Attr {
		if a.Name.Space != "" {
			continue // xmlns and namespaced attributes are not Qubes'
		}
		if _, dup := m[a.Name.Local]; dup {
			return nil, fmt.Errorf("line %d: <%s> has the attribute %s twice", line, t.Name.Local, a.Name.Local)
		}
		m[a.Name.Local] = a.Value
	}
	return m, nil
}

// Sizes of Qubes' defaults (qubes/config.py).
const (
	privateImgSize = 2 << 30
	rootImgSize    = 10 << 30
)

// defaultVolume is the default configuration of a volume of a domain
// class (default_volume_config of qubes/vm/*.py).
type defaultVolume struct {
	snap, save, rw bool
	size           int64
}

// classDefaults are the default volumes of each class that has volumes.
var classDefaults = map[string]map[string]defaultVolume{
	ClassAppVM: {
		"root":     {snap: true, rw: true},
		"private":  {save: true, rw: true, size: privateImgSize},
		"volatile": {rw: true, size: rootImgSize},
		"kernel":   {},
	},
	ClassTemplateVM: {
		"root":     {save: true, rw: true, size: rootImgSize},
		"private":  {save: true, rw: true, size: privateImgSize},
		"volatile": {rw: true, size: rootImgSize},
		"kernel":   {},
	},
	ClassStandaloneVM: {
		"root":     {save: true, rw: true, size: rootImgSize},
		"private":  {save: true, rw: true, size: privateImgSize},
		"volatile": {rw: true, size: rootImgSize},
		"kernel":   {},
	},
	ClassDispVM: {
		"root":     {snap: true, rw: true},
		"private":  {snap: true, rw: true},
		"volatile": {rw: true, size: rootImgSize + privateImgSize},
		"kernel":   {},
	},
}

// volumeAttrs are the attributes of <volume> (Volume.config), plus
// "internal", which Qubes drops at load.
var volumeAttrs = map[string]bool{
	"name": true, "pool": true, "vid": true, "size": true, "rw": true, "snap_on_start": true,
	"save_on_stop": true, "revisions_to_keep": true, "ephemeral": true, "source": true, "internal": true,
}

// complete builds the Installation: domains with their names, templates
// and volumes, the volumes' defaults and sources filled in.
func (f *rawFile) complete() (*Installation, error) {
	inst := &Installation{Pools: f.pools}
	for _, rd := range f.domains {
		d, err := rd.domain()
		if err != nil {
			return nil, err
		}
		inst.Domains = append(inst.Domains, d)
	}
	if err := inst.resolveSources(); err != nil {
		return nil, err
	}
	return inst, nil
}

// domain reads a domain's properties and volumes (without derived
// sources).
func (rd *rawDomain) domain() (Domain, error) {
	d := Domain{Class: rd.class, Line: rd.line, Name: rd.properties["name"]}
	where := func() string {
		if d.Name != "" {
			return fmt.Sprintf("line %d: domain %s", rd.line, d.Name)
		}
		return fmt.Sprintf("line %d: domain id=%q", rd.line, rd.id)
	}
	switch d.Class {
	case ClassAppVM, ClassTemplateVM, ClassDispVM, ClassStandaloneVM, ClassRemoteVM:
	case ClassAdminVM:
		if d.Name == "" {
			d.Name = "dom0"
		}
	case "":
		return d, fmt.Errorf("%s has no class attribute", where())
	default:
		return d, fmt.Errorf("%s: no such VM class: %q", where(), d.Class)
	}
	if d.Name == "" {
		return d, fmt.Errorf("%s has no name property", where())
	}
	if err := storage.ValidateVMName(d.Name); err != nil {
		return d, fmt.Errorf("%s: %w", where(), err)
	}
	if d.Class == ClassAppVM || d.Class == ClassDispVM {
		d.Template = rd.properties["template"]
		if d.Template == "" {
			return d, fmt.Errorf("%s (%s) has no template property", where(), d.Class)
		}
	}
	tfd, ok := rd.properties["template_for_dispvms"]
	if !ok {
		// Qubes R4.0 called it dispvm_allowed and renames it at load.
		tfd, ok = rd.properties["dispvm_allowed"]
	}
	if ok {
		b, err := storage.ParsePropertyBool(tfd)
		if err != nil {
			return d, fmt.Errorf("%s: template_for_dispvms: %w", where(), err)
		}
		d.TemplateForDispVMs = b
	}
	defaults, hasVolumes := classDefaults[d.Class]
	if len(rd.volumes) > 0 && !hasVolumes {
		return d, fmt.Errorf("line %d: domain %s is an %s, which has no volumes in Qubes", rd.volumes[0].line, d.Name, d.Class)
	}
	for _, rv := range rd.volumes {
		v, err := rv.volume(d.Name, defaults)
		if err != nil {
			return d, err
		}
		d.Volumes = append(d.Volumes, v)
	}
	return d, nil
}

// volume reads one <volume> of domain vm, whose class has defaults.
func (rv rawVolume) volume(vm string, defaults map[string]defaultVolume) (Volume, error) {
	a := rv.attrs
	v := Volume{Name: a["name"], Pool: a["pool"], VID: a["vid"], Line: rv.line}
	where := fmt.Sprintf("line %d: volume %s of domain %s", rv.line, v.Name, vm)
	if v.Name == "" {
		return v, fmt.Errorf("line %d: a volume of domain %s has no name attribute", rv.line, vm)
	}
	for _, k := range slices.Sorted(maps.Keys(a)) {
		if !volumeAttrs[k] {
			return v, fmt.Errorf("%s: unknown attribute %s=%q", where, k, a[k])
		}
	}
	if _, ok := a["vid"]; !ok {
		return v, fmt.Errorf("%s has no vid attribute", where)
	}
	def := defaults[v.Name]
	v.SnapOnStart, v.SaveOnStop, v.RW, v.Size = def.snap, def.save, def.rw, def.size
	for _, b := range []struct {
		key string
		dst *bool
	}{{"rw", &v.RW}, {"snap_on_start", &v.SnapOnStart}, {"save_on_stop", &v.SaveOnStop}} {
		if s, ok := a[b.key]; ok {
			val, err := parseXMLBool(s)
			if err != nil {
				return v, fmt.Errorf("%s: %s: %w", where, b.key, err)
			}
			*b.dst = val
		}
	}
	if s, ok := a["ephemeral"]; ok {
		val, err := parseXMLBool(s)
		if err != nil {
			return v, fmt.Errorf("%s: ephemeral: %w", where, err)
		}
		v.Ephemeral = &val
	}
	if s, ok := a["size"]; ok {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return v, fmt.Errorf("%s: size %q: want a number of bytes", where, s)
		}
		v.Size = n
	}
	if s, ok := a["revisions_to_keep"]; ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < -1 {
			return v, fmt.Errorf("%s: revisions_to_keep %q: want an integer of at least -1", where, s)
		}
		v.RevisionsToKeep = &n
	}
	if s, ok := a["source"]; ok {
		if s == "" {
			return v, fmt.Errorf("%s: empty source attribute", where)
		}
		v.Source, v.SourceRecorded = s, true
	}
	return v, nil
}

// parseXMLBool parses a boolean attribute as Qubes writes and reads them:
// "True" or "False" (anything else stays a string in Qubes, where a
// non-empty one is true: "false" would turn a flag on).
func parseXMLBool(s string) (bool, error) {
	switch s {
	case "True":
		return true, nil
	case "False":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean as Qubes writes them (True or False)", s)
}

// resolveSources gives every snap_on_start volume without a recorded
// source the source Qubes derives (Storage._update_volume_config_source):
// the same-named volume of the domain's template, and if that one is a
// snapshot too, of the template's template, and so on (a DispVM's root
// comes from its disposable template's TemplateVM, its private from the
// disposable template). The volume takes the source's pool and size, as
// in Qubes.
func (inst *Installation) resolveSources() error {
	byName := make(map[string]*Domain, len(inst.Domains))
	for i := range inst.Domains {
		d := &inst.Domains[i]
		if first, dup := byName[d.Name]; dup {
			return fmt.Errorf("line %d: domain %s is defined twice (first at line %d)", d.Line, d.Name, first.Line)
		}
		byName[d.Name] = d
	}
	for i := range inst.Domains {
		d := &inst.Domains[i]
		if err := checkTemplate(d, byName); err != nil {
			return err
		}
	}
	for i := range inst.Domains {
		d := &inst.Domains[i]
		for j := range d.Volumes {
			v := &d.Volumes[j]
			if !v.SnapOnStart || v.SourceRecorded {
				continue
			}
			where := fmt.Sprintf("line %d: volume %s of domain %s", v.Line, v.Name, d.Name)
			src, err := templateVolume(d, v.Name, byName)
			if err != nil {
				return fmt.Errorf("%s is snap_on_start: %w", where, err)
			}
			if v.Pool != "" && v.Pool != src.Pool {
				return fmt.Errorf("%s is in pool %s, but its source %s (from the template) is in pool %s; a snapshot lives in its source's pool",
					where, v.Pool, src.VID, src.Pool)
			}
			v.Source, v.Pool, v.Size = src.VID, src.Pool, src.Size
		}
	}
	return nil
}

// checkTemplate checks that d's template exists and is of the right kind,
// as Qubes' template properties do.
func checkTemplate(d *Domain, byName map[string]*Domain) error {
	if d.Template == "" {
		return nil
	}
	t, ok := byName[d.Template]
	if !ok {
		return fmt.Errorf("line %d: domain %s: its template %s is not defined", d.Line, d.Name, d.Template)
	}
	switch d.Class {
	case ClassAppVM:
		if t.Class != ClassTemplateVM {
			return fmt.Errorf("line %d: domain %s: its template %s is an %s, not a TemplateVM", d.Line, d.Name, t.Name, t.Class)
		}
	case ClassDispVM:
		if !t.TemplateForDispVMs {
			return fmt.Errorf("line %d: domain %s: its template %s is not a disposable template (template_for_dispvms=True)", d.Line, d.Name, t.Name)
		}
	}
	return nil
}

// templateVolume returns the volume that d's snap_on_start volume name
// snapshots, following the template chain.
func templateVolume(d *Domain, name string, byName map[string]*Domain) (Volume, error) {
	seen := map[string]bool{d.Name: true}
	t := byName[d.Template]
	if t == nil {
		return Volume{}, fmt.Errorf("domain %s has no template to take its source from", d.Name)
	}
	for {
		if seen[t.Name] {
			return Volume{}, fmt.Errorf("the templates of domain %s form a loop at %s", d.Name, t.Name)
		}
		seen[t.Name] = true
		src, ok := t.Volume(name)
		if !ok {
			return Volume{}, fmt.Errorf("its template %s has no volume %s", t.Name, name)
		}
		if !src.SnapOnStart {
			return src, nil
		}
		next := byName[t.Template]
		if next == nil {
			return Volume{}, fmt.Errorf("volume %s of its template %s is a snapshot without a template to take its source from", name, t.Name)
		}
		t = next
	}
}

// Validate checks inst as Parse leaves it, so that a caller that built or
// changed one is checked too: pools named once, validly, each with a
// driver; domains named once, validly; each domain's volumes named once,
// validly, in a pool of inst, with a vid; sizes of at least 0 and
// revisions_to_keep of at least -1; a source exactly on snap_on_start
// volumes, naming a volume of the same pool; a snapshot source that is not
// itself a snapshot. Errors wrap storage.ErrInvalidConfig.
func (inst *Installation) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: qubes.xml: "+format, append([]any{storage.ErrInvalidConfig}, args...)...)
	}
	at := func(line int) string {
		if line > 0 {
			return fmt.Sprintf("line %d: ", line)
		}
		return ""
	}
	pools := make(map[string]int)
	for _, p := range inst.Pools {
		if err := storage.ValidatePoolName(p.Name); err != nil {
			return bad("%s<pool>: %w", at(p.Line), err)
		}
		if first, dup := pools[p.Name]; dup {
			return bad("%spool %s is defined twice (first at line %d)", at(p.Line), p.Name, first)
		}
		pools[p.Name] = p.Line
		if p.Driver == "" {
			return bad("%spool %s has an empty driver", at(p.Line), p.Name)
		}
		for k := range p.Params {
			if k == "" || k == "name" || k == "driver" {
				return bad("%spool %s: %q is not a parameter", at(p.Line), p.Name, k)
			}
		}
	}
	type key struct{ pool, vid string }
	vols := make(map[key]Volume)
	domains := make(map[string]int)
	for _, d := range inst.Domains {
		if err := storage.ValidateVMName(d.Name); err != nil {
			return bad("%sdomain: %w", at(d.Line), err)
		}
		if first, dup := domains[d.Name]; dup {
			return bad("%sdomain %s is defined twice (first at line %d)", at(d.Line), d.Name, first)
		}
		domains[d.Name] = d.Line
		names := make(map[string]int)
		for _, v := range d.Volumes {
			where := fmt.Sprintf("%svolume %s of domain %s", at(v.Line), v.Name, d.Name)
			if err := storage.ValidateVolumeName(v.Name); err != nil {
				return bad("%s: %w", where, err)
			}
			if first, dup := names[v.Name]; dup {
				return bad("%s is defined twice (first at line %d)", where, first)
			}
			names[v.Name] = v.Line
			if v.Pool == "" {
				return bad("%s names no pool", where)
			}
			if _, ok := pools[v.Pool]; !ok {
				return bad("%s is in pool %s, which <pools> does not define", where, v.Pool)
			}
			if strings.ContainsRune(v.VID, 0) {
				return bad("%s: the vid contains a NUL byte", where)
			}
			if err := v.Config().Validate(); err != nil {
				return fmt.Errorf("qubes.xml: %s: %w", where, err)
			}
			vols[key{v.Pool, v.VID}] = v
		}
	}
	for _, d := range inst.Domains {
		for _, v := range d.Volumes {
			if !v.SnapOnStart {
				continue
			}
			where := fmt.Sprintf("%svolume %s of domain %s", at(v.Line), v.Name, d.Name)
			src, ok := vols[key{v.Pool, v.Source}]
			if !ok {
				return bad("%s: its source %s is not a volume of pool %s", where, v.Source, v.Pool)
			}
			if src.SnapOnStart {
				return bad("%s: its source %s is a snapshot itself; a snapshot's source is the volume it snapshots", where, v.Source)
			}
		}
	}
	return nil
}
