package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/sys/unix"

	"github.com/vmpool/vmpool/storage"
	"github.com/vmpool/vmpool/storage/ephemeral"
)

// The JSON documents the commands print with --json.
type (
	poolRow struct {
		Name   string `json:"name"`
		Driver string `json:"driver"`
		// Unavailable says why the pool is unavailable
		// (pool.ErrUnavailable), omitted for a pool that was opened.
		Unavailable string `json:"unavailable,omitempty"`
	}
	poolDoc struct {
		Name   string            `json:"name"`
		Driver string            `json:"driver"`
		Config map[string]string `json:"config"`
		Size   *int64            `json:"size,omitempty"`
		Usage  *int64            `json:"usage,omitempty"`
		// IncludedIn is the pool whose directory holds this pool's
		// dir_path (pool.Manager.IncludedIn), omitted when none does.
		IncludedIn string `json:"included_in,omitempty"`
		// Unavailable says why the pool is unavailable, as in poolRow.
		Unavailable string `json:"unavailable,omitempty"`
	}
	driverDoc struct {
		Driver     string     `json:"driver"`
		Parameters []paramDoc `json:"parameters"`
	}
	paramDoc struct {
		Name     string `json:"name"`
		Required bool   `json:"required"`
		Doc      string `json:"doc,omitempty"`
	}
	// volumeDoc has the keys of admin.vm.volume.Info, plus vm, name and
	// running.
	volumeDoc struct {
		VM              string `json:"vm"`
		Name            string `json:"name"`
		Pool            string `json:"pool"`
		VID             string `json:"vid"`
		Size            int64  `json:"size"`
		Usage           int64  `json:"usage"`
		RW              bool   `json:"rw"`
		Source          string `json:"source"`
		Path            string `json:"path"`
		SaveOnStop      bool   `json:"save_on_stop"`
		SnapOnStart     bool   `json:"snap_on_start"`
		RevisionsToKeep int    `json:"revisions_to_keep"`
		Ephemeral       bool   `json:"ephemeral"`
		IsOutdated      bool   `json:"is_outdated"`
		Running         bool   `json:"running"`
		// BlockDevice is what a running volume gives its VM (libvirt's
		// <disk>), omitted while it is stopped.
		BlockDevice *blockDeviceDoc `json:"block_device,omitempty"`
	}
	blockDeviceDoc struct {
		Path    string `json:"path"`
		Name    string `json:"name"`
		RW      bool   `json:"rw"`
		DevType string `json:"devtype"`
		Domain  string `json:"domain,omitempty"`
		Script  string `json:"script,omitempty"`
	}
	revisionDoc struct {
		ID        string `json:"id"`
		Timestamp string `json:"timestamp"`
	}
	vmDoc struct {
		Name    string        `json:"name"`
		State   string        `json:"state"` // Running, Halted, or Unknown when a volume's pool is unavailable
		Volumes []vmVolumeDoc `json:"volumes"`
	}
	vmVolumeDoc struct {
		Name string `json:"name"`
		Pool string `json:"pool"`
		VID  string `json:"vid"`
	}
)

// emit prints doc as JSON with --json; otherwise it runs human, which may
// be nil for commands that print nothing when they succeed.
func (e *env) emit(doc any, human func() error) error {
	if e.json {
		return writeJSON(e.stdout, doc)
	}
	if human != nil {
		return human()
	}
	return nil
}

func writeJSON(w io.Writer, doc any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(doc)
}

// emitVolume prints the volume's properties: with --json always, as
// key=value lines only if human is set.
func (e *env) emitVolume(vm string, v storage.Volume, human bool) error {
	if !e.json && !human {
		return nil
	}
	doc, err := volumeDocOf(e.ctx, vm, v)
	if err != nil {
		return err
	}
	return e.emit(doc, func() error { return printVolumeInfo(e.stdout, doc) })
}

func volumeDocOf(ctx context.Context, vm string, v storage.Volume) (volumeDoc, error) {
	cfg := v.Config()
	doc := volumeDoc{VM: vm, Name: cfg.Name, Pool: cfg.Pool, VID: cfg.VID, RW: cfg.RW, Source: cfg.Source,
		Path: v.BlockDevice().Path, SaveOnStop: cfg.SaveOnStop, SnapOnStart: cfg.SnapOnStart,
		RevisionsToKeep: cfg.Keep(0), Ephemeral: v.Ephemeral()}
	var err error
	if doc.Size, err = v.Size(ctx); err != nil {
		return doc, err
	}
	if doc.Usage, err = v.Usage(ctx); err != nil {
		return doc, err
	}
	if doc.IsOutdated, err = v.IsOutdated(ctx); err != nil {
		return doc, err
	}
	if doc.Running, err = v.IsRunning(ctx); err != nil || !doc.Running {
		return doc, err
	}
	bd := storage.NewVMSet(vm, ephemeral.Cryptsetup{}, v).BlockDevices()[0] // an ephemeral volume's mapping
	doc.BlockDevice = &blockDeviceDoc{Path: bd.Path, Name: bd.Name, RW: bd.RW, DevType: bd.DevType, Domain: bd.Domain, Script: bd.Script}
	return doc, nil
}

// pyBool formats a boolean as the Admin API does.
func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

// printVolumeInfo prints the key=value lines of admin.vm.volume.Info, in
// its order.
func printVolumeInfo(w io.Writer, d volumeDoc) error {
	_, err := fmt.Fprintf(w, "pool=%s\nvid=%s\nsize=%d\nusage=%d\nrw=%s\nsource=%s\npath=%s\nsave_on_stop=%s\nsnap_on_start=%s\nrevisions_to_keep=%d\nephemeral=%s\nis_outdated=%s\n",
		d.Pool, d.VID, d.Size, d.Usage, pyBool(d.RW), d.Source, d.Path, pyBool(d.SaveOnStop),
		pyBool(d.SnapOnStart), d.RevisionsToKeep, pyBool(d.Ephemeral), pyBool(d.IsOutdated))
	if err != nil || d.BlockDevice == nil {
		return err
	}
	// Not in the Admin API's answer: the device the running VM has.
	bd := d.BlockDevice
	_, err = fmt.Fprintf(w, "block_device.path=%s\nblock_device.name=%s\nblock_device.rw=%s\nblock_device.devtype=%s\n",
		bd.Path, bd.Name, pyBool(bd.RW), bd.DevType)
	if err == nil && bd.Domain != "" {
		_, err = fmt.Fprintf(w, "block_device.domain=%s\n", bd.Domain)
	}
	if err == nil && bd.Script != "" {
		_, err = fmt.Fprintf(w, "block_device.script=%s\n", bd.Script)
	}
	return err
}

// printPoolInfo prints name first, then the other configuration keys
// sorted, then size and usage when known, then included_in when a pool
// includes it, as qvm-pool info does, and last, for an unavailable pool,
// unavailable= and why.
func printPoolInfo(w io.Writer, d poolDoc) error {
	var b strings.Builder
	fmt.Fprintf(&b, "name=%s\n", d.Name)
	for _, k := range sortedKeys(d.Config) {
		if k != "name" {
			fmt.Fprintf(&b, "%s=%s\n", k, d.Config[k])
		}
	}
	if d.Size != nil {
		fmt.Fprintf(&b, "size=%d\nusage=%d\n", *d.Size, *d.Usage)
	}
	if d.IncludedIn != "" {
		fmt.Fprintf(&b, "included_in=%s\n", d.IncludedIn)
	}
	if d.Unavailable != "" {
		fmt.Fprintf(&b, "unavailable=%s\n", d.Unavailable)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// table writes rows as aligned columns.
func table(w io.Writer, header string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// printPoolList prints the pools; when one is unavailable, a STATUS
// column says which and why.
func printPoolList(w io.Writer, rows []poolRow) error {
	var cells [][]string
	header := "NAME\tDRIVER"
	for _, r := range rows {
		if r.Unavailable != "" {
			header = "NAME\tDRIVER\tSTATUS"
		}
	}
	for _, r := range rows {
		row := []string{r.Name, r.Driver}
		if strings.Contains(header, "STATUS") {
			status := "available"
			if r.Unavailable != "" {
				status = "unavailable: " + r.Unavailable
			}
			row = append(row, status)
		}
		cells = append(cells, row)
	}
	return table(w, header, cells)
}

func printVMs(w io.Writer, vms []vmDoc) error {
	var cells [][]string
	for _, vm := range vms {
		var vols []string
		for _, v := range vm.Volumes {
			vols = append(vols, v.Pool+":"+v.VID)
		}
		cells = append(cells, []string{vm.Name, vm.State, strings.Join(vols, " ")})
	}
	return table(w, "NAME\tSTATE\tVOLUMES", cells)
}

// printDrivers prints each driver and its parameters in order, the
// required ones marked.
func printDrivers(w io.Writer, drivers []driverDoc) error {
	var b strings.Builder
	for _, d := range drivers {
		fmt.Fprintln(&b, d.Driver)
		for _, p := range d.Parameters {
			name := p.Name
			if p.Required {
				name += " (required)"
			}
			fmt.Fprintf(&b, "  %-30s %s\n", name, p.Doc)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// printRevisions prints "ID TIMESTAMP" lines, oldest first.
func printRevisions(w io.Writer, revs []revisionDoc) error {
	var b strings.Builder
	for _, r := range revs {
		fmt.Fprintf(&b, "%s %s\n", r.ID, r.Timestamp)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// progress returns a context whose storage.ProgressFunc draws a progress
// bar of total bytes on stderr when stderr is a terminal, and a function
// to call when the work is over.
func (e *env) progress(what string, total int64) (context.Context, func(ok bool)) {
	if !isTerminal(e.stderr) {
		return e.ctx, func(bool) {}
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(e.stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(e.stderr) }),
	)
	ctx := storage.WithProgress(e.ctx, func(done, _ int64) { _ = bar.Set64(done) })
	return ctx, func(ok bool) {
		if ok {
			_ = bar.Finish()
		} else {
			_ = bar.Exit()
			fmt.Fprintln(e.stderr)
		}
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
