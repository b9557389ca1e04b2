package lvm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// A plan is what one volume's operation does with lvm: the commands, run
// with those of the other plans of a batch in one lvm process, and how to
// tell from the report that ends the process whether they worked. lvm's
// shell does not stop at a failing command, so each plan is built such
// that its later commands fail harmlessly when an earlier one failed (a
// rename onto a name that still exists, a create of an LV that was not
// removed); undo then removes whatever half of the plan did happen.
type plan struct {
	v   *volume
	err error // the operation is refused before any command runs
	// discard lists LVs whose data is thrown away (stale running images,
	// pruned revisions): blkdiscard runs on them before the lvm process,
	// as Qubes does before each lvremove.
	discard []string
	cmds    [][]string
	// check returns nil when the report shows the plan's effect.
	check func(r report) error
	// undo returns the commands that take back what a failed plan did.
	undo func(r report) [][]string
	// retry tells that undo finishes the plan rather than take it back
	// (a retried rename): the plan worked if check passes afterwards.
	retry bool
	// done runs after the plan worked (sizes, flags).
	done func(r report)
	// then returns the plan that follows a plan that worked (pruning
	// after a commit), or nil. Its failures are logged, not returned, as
	// Qubes ignores a failed removal of an old revision.
	then func(r report) *plan
}

// cached returns the pool's report, reading it first if the pool has none.
func (p *thinPool) cached(ctx context.Context) (report, error) {
	p.repMu.Lock()
	r := p.rep
	p.repMu.Unlock()
	if r != nil {
		return r, nil
	}
	return p.refresh(ctx)
}

// refresh reads the report.
func (p *thinPool) refresh(ctx context.Context) (report, error) {
	r, _, err := p.runLVM(ctx, nil)
	return r, err
}

// runLVM runs cmds followed by the report in one lvm process, stores the
// report and returns it with each command's stderr. The error is the
// process's failure or the report's; a failing command is the caller's
// to see in the report.
func (p *thinPool) runLVM(ctx context.Context, cmds [][]string) (report, [][]byte, error) {
	p.lvmMu.Lock()
	defer p.lvmMu.Unlock()
	all := append(slices.Clip(cmds), reportArgs(p.vg))
	p.lvmProcs.Add(1)
	out, err := p.run.LVM(ctx, all)
	for i, c := range cmds {
		ev := p.log.Debug().Str("op", "lvm").Strs("args", c)
		if i < len(out.Stderr) && len(out.Stderr[i]) > 0 {
			ev = ev.Str("stderr", cleanStderr(out.Stderr[i]))
		}
		ev.Msg("lvm")
	}
	stderrs := out.Stderr
	if len(stderrs) < len(all) {
		stderrs = append(stderrs, make([][]byte, len(all)-len(stderrs))...)
	}
	if err != nil && len(cmds) > 0 {
		// The shell itself failed: what ran is unknown; read the report
		// alone so that the plans can see what happened.
		p.log.Warn().Err(err).Msg("lvm shell failed; reading the report again")
		out, err = p.run.LVM(ctx, [][]string{reportArgs(p.vg)})
		p.lvmProcs.Add(1)
		if err != nil {
			return nil, stderrs, err
		}
		stderrs[len(all)-1] = nil
		if len(out.Stderr) > 0 {
			stderrs[len(all)-1] = out.Stderr[0]
		}
	} else if err != nil {
		return nil, stderrs, err
	}
	r, perr := parseReport(out.Stdout, p.vg)
	if perr != nil {
		return nil, stderrs, fmt.Errorf("read the report of %s: %w", p.vg, perr)
	}
	if len(r) == 0 {
		// A volume group with a thin pool has at least that LV: the report
		// failed (no such volume group).
		return nil, stderrs, newLVMError(reportArgs(p.vg), stderrs[len(all)-1], errors.New("empty report"))
	}
	p.repMu.Lock()
	p.rep = r
	p.repMu.Unlock()
	return r, stderrs[:len(cmds)], nil
}

// discard runs blkdiscard on the active LVs of names, concurrently, as
// Qubes' remove does before lvremove (so that the thin pool frees the
// blocks at once); failures are logged only.
func (p *thinPool) discard(ctx context.Context, r report, names []string) {
	var wg sync.WaitGroup
	for _, name := range names {
		if l, ok := r[name]; !ok || !l.active() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := p.run.Run(ctx, "blkdiscard", "-p", "1G", devPath(p.vg, name)); err != nil {
				p.log.Debug().Err(err).Str("lv", name).Msg("blkdiscard")
			}
		}()
	}
	wg.Wait()
}

// execute runs the plans as one batch: the discards, one lvm process with
// every plan's commands and the report, the undo of the plans that
// failed, and the plans that follow the ones that worked. It returns one
// error per plan.
func (p *thinPool) execute(ctx context.Context, plans []*plan) []error {
	errs := make([]error, len(plans))
	var cmds [][]string
	var owner []int
	var discards []string
	live := false
	for i, pl := range plans {
		if pl == nil {
			continue
		}
		if pl.err != nil {
			errs[i] = pl.err
			continue
		}
		live = true
		discards = append(discards, pl.discard...)
		for _, c := range pl.cmds {
			cmds = append(cmds, c)
			owner = append(owner, i)
		}
	}
	if !live {
		return errs
	}
	if len(discards) > 0 {
		if r, err := p.cached(ctx); err == nil {
			p.discard(ctx, r, discards)
		}
	}
	var r report
	var stderrs [][]byte
	var err error
	if len(cmds) > 0 {
		r, stderrs, err = p.runLVM(ctx, cmds)
	} else {
		r, err = p.cached(ctx)
	}
	if err != nil {
		for i, pl := range plans {
			if pl != nil && pl.err == nil {
				errs[i] = err
			}
		}
		return errs
	}
	var undo [][]string
	var retried []int
	var next []*plan
	for i, pl := range plans {
		if pl == nil || pl.err != nil {
			continue
		}
		cerr := pl.check(r)
		if cerr == nil {
			if pl.done != nil {
				pl.done(r)
			}
			if pl.then != nil {
				if np := pl.then(r); np != nil {
					next = append(next, np)
				}
			}
			continue
		}
		errs[i] = planError(pl, i, cmds, owner, stderrs, cerr)
		if pl.undo != nil {
			undo = append(undo, pl.undo(r)...)
			if pl.retry {
				retried = append(retried, i)
			}
		}
	}
	if len(undo) > 0 {
		ur, ustderr, uerr := p.runLVM(context.WithoutCancel(ctx), undo)
		if uerr != nil {
			p.log.Error().Err(uerr).Msg("undo a failed step")
		} else {
			for i, c := range undo {
				if s := cleanStderr(ustderr[i]); s != "" {
					p.log.Warn().Strs("args", c).Str("stderr", s).Msg("undo a failed step")
				}
			}
			for _, i := range retried {
				if plans[i].check(ur) == nil {
					p.log.Warn().Err(errs[i]).Str("vid", plans[i].v.cfg.VID).Msg("a failed step worked when retried")
					errs[i] = nil
					if plans[i].done != nil {
						plans[i].done(ur)
					}
				}
			}
		}
	}
	if len(next) > 0 {
		for i, nerr := range p.execute(context.WithoutCancel(ctx), next) {
			if nerr != nil {
				p.log.Warn().Err(nerr).Str("vid", next[i].v.cfg.VID).Msg("prune revisions")
			}
		}
	}
	return errs
}

// planError is the error of a plan whose check failed: the first of its
// commands that wrote an error, with that error, or the check's finding.
func planError(pl *plan, i int, cmds [][]string, owner []int, stderrs [][]byte, cerr error) error {
	for j, c := range cmds {
		if owner[j] != i || j >= len(stderrs) {
			continue
		}
		if s := cleanStderr(stderrs[j]); s != "" {
			e := newLVMError(c, stderrs[j], nil)
			if e.Err == nil {
				e.Err = cerr
			}
			return e
		}
	}
	if len(pl.cmds) > 0 {
		return &CommandError{Program: "lvm", Args: pl.cmds[len(pl.cmds)-1], Err: cerr}
	}
	return cerr
}

// The lvm commands, as Qubes' _get_lvm_cmdline builds them. A thin
// snapshot is made with --snapshot alone: lvm2 2.03.12 to 2.03.21 refuse
// --snapshot --type=thin, which Qubes passes.

func (p *thinPool) vgLV(lv string) string { return p.vg + "/" + lv }

func (p *thinPool) cmdCreate(lv string, size int64) []string {
	return []string{"lvcreate", "--thin", "--setactivationskip=n", "--activate=y", "--name=" + lv,
		"--virtualsize=" + strconv.FormatInt(size, 10) + "B", "--", p.vgLV(p.thin)}
}

func (p *thinPool) cmdClone(origin, lv string) []string {
	return []string{"lvcreate", "--setactivationskip=n", "--activate=y", "--snapshot", "--name=" + lv, "--", p.vgLV(origin)}
}

func (p *thinPool) cmdRemove(lv string) []string {
	return []string{"lvremove", "--force", "--", p.vgLV(lv)}
}

func (p *thinPool) cmdRename(from, to string) []string {
	return []string{"lvrename", "--", p.vgLV(from), p.vgLV(to)}
}

func (p *thinPool) cmdResize(lv string, size int64) []string {
	return []string{"lvresize", "--force", "--size=" + strconv.FormatInt(size, 10) + "B", "--", p.vgLV(lv)}
}

// cmdActivate activates lv, ignoring its activation-skip flag (-K): thin
// snapshots made without --setactivationskip=n have it.
func (p *thinPool) cmdActivate(lv string) []string {
	return []string{"lvchange", "--activate=y", "--ignoreactivationskip", "--", p.vgLV(lv)}
}

// missing is the error of a check that did not find lv.
func missing(vg, lv string) error {
	return fmt.Errorf("logical volume %s/%s is missing after the command", vg, lv)
}

// lvList formats LV names for messages.
func lvList(names []string) string { return strings.Join(names, ", ") }
