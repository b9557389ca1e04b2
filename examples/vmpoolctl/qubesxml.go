package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/vmpool/vmpool/pool"
	"github.com/vmpool/vmpool/pool/qubesxml"
)

// The JSON document of pool import-qubes-xml.
type (
	importDoc struct {
		Pools   []importPoolDoc    `json:"pools"`
		VMs     []importVMDoc      `json:"vms"`
		Skipped []importSkippedDoc `json:"skipped"`
	}
	importPoolDoc struct {
		Name   string            `json:"name"`
		Driver string            `json:"driver"`
		Params map[string]string `json:"params"`
		Reused bool              `json:"reused"`
		// Unavailable says why the pool is unavailable; omitted for a
		// pool that was opened.
		Unavailable string `json:"unavailable,omitempty"`
	}
	importVMDoc struct {
		Name    string            `json:"name"`
		Class   string            `json:"class"`
		Volumes []importVolumeDoc `json:"volumes"`
	}
	importVolumeDoc struct {
		Name   string `json:"name"`
		Pool   string `json:"pool"`
		VID    string `json:"vid"`
		Source string `json:"source,omitempty"`
		Reused bool   `json:"reused"`
		// Problem is what verifying the volume found (a missing image).
		Problem string `json:"problem,omitempty"`
	}
	importSkippedDoc struct {
		Pool   string `json:"pool"`
		VM     string `json:"vm,omitempty"`
		Volume string `json:"volume,omitempty"`
		Reason string `json:"reason"`
	}
)

func poolImportQubesXML(fs *flag.FlagSet) runFunc {
	var root string
	fs.StringVar(&root, "root", "", "where the installation's root filesystem is mounted: every dir_path of FILE is taken below it (default /)")
	return func(e *env, args []string) error {
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		// Parsed before the state is opened: a malformed file changes
		// nothing, not even the state directory.
		inst, err := qubesxml.Parse(f)
		if err != nil {
			return fmt.Errorf("%s: %w", args[0], err)
		}
		return e.withManager(func(m *pool.Manager) error {
			rep, err := m.ImportQubesXML(e.ctx, inst, pool.QubesXMLOptions{Root: root})
			if err != nil {
				return err
			}
			doc := importDocOf(rep)
			return e.emit(doc, func() error { return printImport(e.stdout, doc) })
		})
	}
}

func importDocOf(rep *pool.QubesXMLReport) importDoc {
	doc := importDoc{Pools: []importPoolDoc{}, VMs: []importVMDoc{}, Skipped: []importSkippedDoc{}}
	for _, p := range rep.Pools {
		pd := importPoolDoc{Name: p.Name, Driver: p.Driver, Params: p.Params, Reused: p.Reused}
		if p.Unavailable != nil {
			pd.Unavailable = p.Unavailable.Error()
		}
		doc.Pools = append(doc.Pools, pd)
	}
	for _, vm := range rep.VMs {
		vd := importVMDoc{Name: vm.Name, Class: vm.Class, Volumes: []importVolumeDoc{}}
		for _, v := range vm.Volumes {
			d := importVolumeDoc{Name: v.Name, Pool: v.Pool, VID: v.VID, Source: v.Source, Reused: v.Reused}
			if v.Problem != nil {
				d.Problem = v.Problem.Error()
			}
			vd.Volumes = append(vd.Volumes, d)
		}
		doc.VMs = append(doc.VMs, vd)
	}
	for _, s := range rep.Skipped {
		doc.Skipped = append(doc.Skipped, importSkippedDoc(s))
	}
	return doc
}

// printImport prints the pools, then every VM's volumes with their pool
// and vid, then what was skipped.
func printImport(w io.Writer, doc importDoc) error {
	var pools [][]string
	for _, p := range doc.Pools {
		status := "imported"
		switch {
		case p.Unavailable != "":
			status = "unavailable: " + unavailableReason(errors.New(p.Unavailable))
		case p.Reused:
			status = "known already"
		}
		pools = append(pools, []string{p.Name, p.Driver, status})
	}
	if err := table(w, "POOL\tDRIVER\tSTATUS", pools); err != nil {
		return err
	}
	var vols [][]string
	for _, vm := range doc.VMs {
		for _, v := range vm.Volumes {
			note := ""
			switch {
			case v.Problem != "":
				note = v.Problem
			case v.Reused:
				note = "known already"
			}
			vols = append(vols, []string{vm.Name, v.Name, v.Pool, v.VID, note})
		}
	}
	fmt.Fprintln(w)
	if err := table(w, "VM\tVOLUME\tPOOL\tVID\tNOTE", vols); err != nil {
		return err
	}
	var b strings.Builder
	for i, s := range doc.Skipped {
		if i == 0 {
			b.WriteString("\n")
		}
		if s.VM == "" {
			fmt.Fprintf(&b, "skipped pool %s: %s\n", s.Pool, s.Reason)
		} else {
			fmt.Fprintf(&b, "skipped volume %s of VM %s: %s\n", s.Volume, s.VM, s.Reason)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// unavailableReason returns why p is unavailable, without the sentinel's
// text, or "" for a pool the Manager opened.
func unavailableReason(err error) string {
	if err == nil {
		return ""
	}
	return strings.TrimPrefix(err.Error(), pool.ErrUnavailable.Error()+": ")
}

// isUnavailable reports whether err is an operation refused on an
// unavailable pool or its volumes.
func isUnavailable(err error) bool { return errors.Is(err, pool.ErrUnavailable) }
