package lvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"

	"github.com/vmpool/vmpool/storage"
)

// Runner runs the lvm binary and the few other programs the driver needs
// (blkdiscard). The pool's Runner is ExecRunner unless a test supplies
// another (see Options): the driver's command sequences are tested with a
// fake one.
type Runner interface {
	// LVM runs cmds, each the arguments of one lvm command ("lvcreate",
	// ...), in one lvm process: lvm's shell, reading them on stdin, when
	// there is more than one. It returns everything the process wrote on
	// stdout and, for each command, what it wrote on stderr. A command
	// that fails inside the shell does not make LVM fail: the caller
	// checks each command's effect (lvm_thin reads the report that ends
	// every batch). LVM fails when the process cannot run or exits with a
	// failure; for a single command that is the command's failure, as a
	// *CommandError.
	LVM(ctx context.Context, cmds [][]string) (LVMOutput, error)
	// Run runs another program (blkdiscard, dmsetup) and returns its
	// stdout, or a *CommandError when it fails.
	Run(ctx context.Context, name string, args ...string) ([]byte, error)
}

// LVMOutput is what one lvm process wrote.
type LVMOutput struct {
	Stdout []byte
	// Stderr holds what each command wrote on stderr, in the order of the
	// commands.
	Stderr [][]byte
}

// CommandError is a failed command: an lvm command (Args[0] is the lvm
// subcommand, e.g. "lvcreate") or another program (Program is set). It
// wraps a storage sentinel where one fits (ErrNotFound, ErrExists), so
// callers test it with errors.Is, and is found with errors.As.
type CommandError struct {
	Program string   // "lvm", "blkdiscard", ...
	Args    []string // the arguments
	Stderr  string   // what the command wrote on stderr, trimmed
	Err     error    // a storage sentinel, an *exec.ExitError, or nil
}

// Error formats the error as "PROGRAM ARGS...: STDERR".
func (e *CommandError) Error() string {
	var b strings.Builder
	b.WriteString(e.Program)
	for _, a := range e.Args {
		b.WriteByte(' ')
		b.WriteString(a)
	}
	b.WriteString(" failed")
	if e.Stderr != "" {
		b.WriteString(": ")
		b.WriteString(e.Stderr)
	}
	if e.Err != nil && !strings.Contains(e.Stderr, e.Err.Error()) {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the sentinel or the exit error.
func (e *CommandError) Unwrap() error { return e.Err }

// classify returns the storage sentinel that lvm's stderr names, or nil.
func classify(stderr string) error {
	switch {
	case strings.Contains(stderr, "already exists"):
		return storage.ErrExists
	case strings.Contains(stderr, "not found"), strings.Contains(stderr, "Failed to find logical volume"):
		return storage.ErrNotFound
	}
	return nil
}

// newLVMError makes the error of a failed lvm command.
func newLVMError(args []string, stderr []byte, cause error) *CommandError {
	s := cleanStderr(stderr)
	err := classify(s)
	if err == nil {
		err = cause
	}
	return &CommandError{Program: "lvm", Args: args, Stderr: s, Err: err}
}

// cleanStderr drops the warnings lvm prints on every thin operation of an
// overprovisioned pool or one without monitoring (Qubes filters the
// first as well) and trims the rest.
func cleanStderr(b []byte) string {
	var keep []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "",
			strings.Contains(line, "exceeds the size of thin pool"),
			strings.Contains(line, "thin_pool_autoextend_threshold"),
			strings.Contains(line, "Set activation/thin_pool_autoextend"),
			strings.HasPrefix(line, "WARNING: You have not turned on protection against thin pools running out of space"):
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "; ")
}

// ExecRunner runs the real programs, found in PATH ("lvm" or LVMPath),
// with LC_ALL=C so that their messages are the ones the driver knows.
type ExecRunner struct {
	// LVMPath is the lvm binary; empty means "lvm" from PATH.
	LVMPath string
}

// marker is the line written after each command in lvm's shell: an
// unknown command, which lvm answers on stderr with "No such command
// 'vmpool-end-N'", so that each command's stderr can be told apart.
const markerPrefix = "vmpool-end-"

func (r ExecRunner) lvmPath() string {
	if r.LVMPath != "" {
		return r.LVMPath
	}
	return "lvm"
}

// LVM implements Runner.
func (r ExecRunner) LVM(ctx context.Context, cmds [][]string) (LVMOutput, error) {
	if len(cmds) == 0 {
		return LVMOutput{}, nil
	}
	var stdout, stderr bytes.Buffer
	var cmd *exec.Cmd
	if len(cmds) == 1 {
		cmd = exec.CommandContext(ctx, r.lvmPath(), cmds[0]...)
	} else {
		var script strings.Builder
		for i, c := range cmds {
			for _, a := range c {
				if a == "" || strings.ContainsAny(a, " \t\n\"'\\#") {
					return LVMOutput{}, fmt.Errorf("%w: lvm argument %q cannot go through lvm's shell", storage.ErrInvalidConfig, a)
				}
			}
			script.WriteString(strings.Join(c, " "))
			script.WriteString("\n" + markerPrefix + strconv.Itoa(i) + "\n")
		}
		cmd = exec.CommandContext(ctx, r.lvmPath())
		cmd.Stdin = strings.NewReader(script.String())
	}
	cmd.Env = append(cmd.Environ(), "LC_ALL=C")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := LVMOutput{Stdout: stdout.Bytes()}
	if len(cmds) == 1 {
		out.Stderr = [][]byte{stderr.Bytes()}
		if err != nil {
			return out, newLVMError(cmds[0], stderr.Bytes(), err)
		}
		return out, nil
	}
	out.Stderr = splitStderr(stderr.Bytes(), len(cmds))
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return out, &CommandError{Program: "lvm", Args: []string{"(shell)"}, Stderr: cleanStderr(stderr.Bytes()), Err: err}
	}
	return out, nil
}

// splitStderr splits the stderr of lvm's shell at the markers into n
// parts.
func splitStderr(b []byte, n int) [][]byte {
	parts := make([][]byte, n)
	i := 0
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if j := bytes.Index(line, []byte("No such command '"+markerPrefix)); j >= 0 {
			rest := line[j+len("No such command '"+markerPrefix):]
			if k := bytes.IndexByte(rest, '\''); k > 0 {
				if m, err := strconv.Atoi(string(rest[:k])); err == nil && m >= i && m < n {
					i = m + 1
					continue
				}
			}
		}
		if i < n {
			parts[i] = append(parts[i], line...)
		}
	}
	return parts
}

// Run implements Runner.
func (r ExecRunner) Run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(cmd.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) && ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, &CommandError{Program: name, Args: args, Stderr: strings.TrimSpace(stderr.String()), Err: err}
	}
	return stdout.Bytes(), nil
}
