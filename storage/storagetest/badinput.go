package storagetest

import (
	"context"
	"strings"

	"github.com/stretchr/testify/assert"

	"github.com/vmpool/vmpool/storage"
)

// badFixture is a pool with an AppVM's volumes (vmFixture) and a running
// origin with uncommitted data, so that "nothing changed" covers stopped
// and running volumes.
type badFixture struct {
	*vmFixture
	busy storage.Volume
}

func (e *env) badFixture() badFixture {
	e.t.Helper()
	fx := badFixture{vmFixture: e.vm(true)}
	fx.busy = e.create(e.originConf(e.vid("busy", "private"), volSize, e.keep(1)))
	e.start(fx.busy)
	e.writeBlocks(fx.busy, zeros(volSize), 0x71, 0)
	return fx
}

// change is one operation of the bad-input or cancellation cases.
type change struct {
	name string
	op   func(ctx context.Context, e *env, fx badFixture) error
}

// initWith returns an operation that registers a new origin changed by
// mod.
func initWith(mod func(e *env, c *storage.VolumeConfig)) func(context.Context, *env, badFixture) error {
	return func(_ context.Context, e *env, _ badFixture) error {
		c := e.originConf(e.vid("fresh", "private"), volSize, e.keep(1))
		mod(e, &c)
		v, err := e.pool.InitVolume(c)
		if err == nil {
			// A driver may check later, but must refuse before it changes
			// anything on disk.
			err = v.Create(e.ctx)
		}
		return err
	}
}

// initVID registers an origin with the given vid.
func initVID(vid func(e *env) string) func(context.Context, *env, badFixture) error {
	return initWith(func(e *env, c *storage.VolumeConfig) {
		c.VID = vid(e)
		if n := nameOf(strings.TrimRight(c.VID, "\x00")); n != "" {
			c.Name = n
		}
	})
}

func literal(vid string) func(*env) string { return func(*env) string { return vid } }

// vmNamed returns the vid of the private volume of a VM called vm.
func vmNamed(vm string) func(*env) string {
	return func(e *env) string { return e.vid(vm, "private") }
}

// volumeNamed registers a volume called name.
func volumeNamed(name string) func(context.Context, *env, badFixture) error {
	return initWith(func(e *env, c *storage.VolumeConfig) {
		c.VID = e.vid("fresh", name)
		c.Name = name
	})
}

func goodVID(e *env) string { return e.vid("fresh", "private") }

func badInputCases(cfg Config) []testCase {
	changes := []change{
		{"vid_dotdot", initVID(literal("../x"))},
		{"vid_absolute", initVID(literal("/appvms/a/b"))},
		{"vid_empty_part", initVID(literal("appvms//b"))},
		{"vid_nul", initVID(literal("appvms/a/b\x00"))},
		{"vid_empty", initVID(literal(""))},
		{"vid_valid_absolute", initVID(func(e *env) string { return "/" + goodVID(e) })},
		{"vid_valid_nul", initVID(func(e *env) string { return goodVID(e) + "\x00" })},
		{"vid_valid_dotdot", initVID(func(e *env) string { return "../" + goodVID(e) })},
		{"vid_valid_dotdot_inside", initVID(func(e *env) string { return goodVID(e) + "/../../../x" })},
		{"vm_name_digit", initVID(vmNamed("1abc"))},
		{"vm_name_32_chars", initVID(vmNamed(strings.Repeat("a", 32)))},
		{"vm_name_space", initVID(vmNamed("a b"))},
		{"volume_name_hyphen", volumeNamed("bad-name")},
		{"volume_name_digit", volumeNamed("1root")},
		{"volume_name_space", volumeNamed("a b")},
		{"negative_size", initWith(func(_ *env, c *storage.VolumeConfig) { c.Size = -1 })},
		{"snap_on_start_without_source", initWith(func(_ *env, c *storage.VolumeConfig) {
			c.SnapOnStart, c.SaveOnStop, c.RevisionsToKeep = true, false, nil
		})},
		{"source_without_snap_on_start", initWith(func(e *env, c *storage.VolumeConfig) { c.Source = e.vidT("tpl", true, "root") })},
		{"source_malformed", initWith(func(_ *env, c *storage.VolumeConfig) {
			c.SnapOnStart, c.SaveOnStop, c.RevisionsToKeep, c.Source = true, false, nil, "../x"
		})},
		{"revisions_to_keep_below_minus_one", initWith(func(_ *env, c *storage.VolumeConfig) { k := -2; c.RevisionsToKeep = &k })},
		{"ephemeral_origin", initWith(func(_ *env, c *storage.VolumeConfig) { y := true; c.Ephemeral = &y })},
		{"resize_negative", func(ctx context.Context, _ *env, fx badFixture) error {
			return fx.private.Resize(ctx, -1, storage.ResizeOptions{Force: true})
		}},
		{"resize_negative_running", func(ctx context.Context, _ *env, fx badFixture) error {
			return fx.busy.Resize(ctx, -1, storage.ResizeOptions{Force: true})
		}},
		{"import_data_negative", func(ctx context.Context, _ *env, fx badFixture) error {
			_, err := fx.private.ImportData(ctx, -1)
			return err
		}},
	}
	if cfg.Caps.Revert {
		changes = append(changes, change{"revert_malformed_id", func(ctx context.Context, _ *env, fx badFixture) error {
			return fx.private.Revert(ctx, "../1")
		}})
	}
	var cases []testCase
	for _, c := range changes {
		cases = append(cases, testCase{c.name, func(e *env) {
			fx := e.badFixture()
			before := e.state()
			err := c.op(e.ctx, e, fx)
			assert.ErrorIs(e.t, err, storage.ErrInvalidConfig)
			e.assertUnchanged(before, c.name)
		}})
	}
	return cases
}
