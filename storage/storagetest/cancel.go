package storagetest

import (
	"context"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

// cancelled is an operation run with an already-cancelled context; prep
// runs before the pool's state is taken, after, if set, once the state was
// compared.
type cancelled struct {
	name  string
	prep  func(e *env, fx badFixture)
	op    func(ctx context.Context, e *env, fx badFixture) error
	after func(e *env, fx badFixture)
}

func startPrivate(e *env, fx badFixture) {
	e.start(fx.private)
	e.writeBlocks(fx.private, fx.privData, 0x81, mib)
}

func cancelCases(cfg Config) []testCase {
	ops := []cancelled{
		{name: "start", op: func(ctx context.Context, _ *env, fx badFixture) error { return fx.private.Start(ctx) }},
		{name: "start_snapshot", op: func(ctx context.Context, _ *env, fx badFixture) error { return fx.root.Start(ctx) }},
		{name: "start_volatile", op: func(ctx context.Context, _ *env, fx badFixture) error { return fx.volatile.Start(ctx) }},
		{name: "stop", prep: startPrivate, op: func(ctx context.Context, _ *env, fx badFixture) error { return fx.private.Stop(ctx) }},
		{name: "abort", prep: startPrivate, op: func(ctx context.Context, _ *env, fx badFixture) error { return fx.private.Abort(ctx) }},
		{name: "resize", op: func(ctx context.Context, _ *env, fx badFixture) error {
			return fx.private.Resize(ctx, 2*volSize, storage.ResizeOptions{})
		}},
		{name: "resize_running", prep: startPrivate, op: func(ctx context.Context, _ *env, fx badFixture) error {
			return fx.private.Resize(ctx, 2*volSize, storage.ResizeOptions{})
		}},
		{name: "import_data", op: func(ctx context.Context, _ *env, fx badFixture) error {
			_, err := fx.private.ImportData(ctx, volSize)
			return err
		}},
		{
			name: "import_data_end",
			prep: func(e *env, fx badFixture) {
				path, err := fx.private.ImportData(e.ctx, volSize)
				require.NoError(e.t, err)
				e.writeFile(path, zeros(volSize).with(0, 0x82))
			},
			op: func(ctx context.Context, _ *env, fx badFixture) error { return fx.private.ImportDataEnd(ctx, true) },
			after: func(e *env, fx badFixture) {
				assert.NoError(e.t, fx.private.ImportDataEnd(e.ctx, false), "the import is still in progress")
			},
		},
		{name: "import_volume", op: func(ctx context.Context, _ *env, fx badFixture) error {
			return fx.private.ImportVolume(ctx, fx.tplRoot)
		}},
		{name: "create", op: func(ctx context.Context, _ *env, fx badFixture) error { return fx.private.Create(ctx) }},
		{name: "remove", op: func(ctx context.Context, _ *env, fx badFixture) error { return fx.private.Remove(ctx) }},
	}
	if cfg.Caps.Revert && allows(cfg, 1) {
		ops = append(ops, cancelled{name: "revert", op: func(ctx context.Context, _ *env, fx badFixture) error {
			return fx.private.Revert(ctx, "")
		}})
	}
	var cases []testCase
	for _, c := range ops {
		cases = append(cases, testCase{c.name, func(e *env) {
			fx := e.badFixture()
			if c.prep != nil {
				c.prep(e, fx)
			}
			before := e.state()
			ctx, cancel := context.WithCancel(e.ctx)
			cancel()
			assert.ErrorIs(e.t, c.op(ctx, e, fx), context.Canceled)
			e.assertUnchanged(before, c.name+" with a cancelled context")
			if c.after != nil {
				c.after(e, fx)
			}
		}})
	}
	return cases
}
