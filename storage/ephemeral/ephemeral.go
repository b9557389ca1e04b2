// Package ephemeral runs the dm-crypt mappings that Qubes puts in front of
// ephemeral volumes (storage.Set made by storage.NewVMSet): a plain
// mapping, cipher aes-xts-plain64, whose key is read from /dev/urandom by
// cryptsetup and kept nowhere, so what the VM wrote is unreadable once the
// mapping is closed, whatever the driver does with the image.
//
// It runs cryptsetup(8) exactly as Qubes' Volume.start_encrypted does:
//
//	cryptsetup --key-file=/dev/urandom --cipher=aes-xts-plain64 --type=plain -- open DEVICE NAME
//	cryptsetup -- close NAME
//
// with LC_ALL=C, stdin /dev/null and "/" as the working directory, then
// zeroes the first 64 KiB of /dev/mapper/NAME. It needs root and the
// kernel's dm-crypt.
package ephemeral

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/vmpool/vmpool/storage"
)

// ZeroBytes is how much of a fresh mapping Open zeroes (Qubes'
// BYTES_TO_ZERO).
const ZeroBytes = 64 << 10

// mapperDir is where device-mapper nodes live.
const mapperDir = "/dev/mapper"

// Cryptsetup is a storage.Encryptor that runs cryptsetup.
type Cryptsetup struct {
	// Command is the cryptsetup binary; "" means "cryptsetup" found in
	// PATH (then /usr/sbin and /sbin).
	Command string
}

var _ storage.Encryptor = Cryptsetup{}

// CommandError is a cryptsetup run that failed: its arguments, what it
// printed on stderr and how it ended.
type CommandError struct {
	Args   []string
	Stderr string
	Err    error
}

func (e *CommandError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("cryptsetup %s: %s", strings.Join(e.Args, " "), msg)
}

func (e *CommandError) Unwrap() error { return e.Err }

// Open implements storage.Encryptor.
func (c Cryptsetup) Open(ctx context.Context, device, name string) error {
	path, err := mapperPath(name)
	if err != nil {
		return err
	}
	if exists(path) {
		if err := c.run(ctx, "--", "close", name); err != nil {
			return err
		}
	}
	if err := c.run(ctx, "--key-file=/dev/urandom", "--cipher=aes-xts-plain64", "--type=plain", "--", "open", device, name); err != nil {
		return err
	}
	if err := zero(path); err != nil {
		if cerr := c.run(context.WithoutCancel(ctx), "--", "close", name); cerr != nil {
			err = errors.Join(err, cerr)
		}
		return fmt.Errorf("zero the start of %s: %w", path, err)
	}
	return nil
}

// Close implements storage.Encryptor.
func (c Cryptsetup) Close(ctx context.Context, name string) error {
	path, err := mapperPath(name)
	if err != nil {
		return err
	}
	if !exists(path) {
		return nil
	}
	return c.run(ctx, "--", "close", name)
}

// mapperPath returns /dev/mapper/name, refusing a name that is not one
// path element.
func mapperPath(name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return "", fmt.Errorf("%w: %q is not a device-mapper name", storage.ErrInvalidConfig, name)
	}
	return filepath.Join(mapperDir, name), nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return !errors.Is(err, fs.ErrNotExist)
}

// zero writes ZeroBytes zeros at the start of the device at path and
// flushes them.
func zero(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(make([]byte, ZeroBytes)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// run runs cryptsetup with args as Qubes' utils.cryptsetup does.
func (c Cryptsetup) run(ctx context.Context, args ...string) error {
	bin, err := c.binary()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C") // else cryptsetup tries to mlock the whole locale archive
	cmd.Dir = "/"
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return &CommandError{Args: args, Stderr: stderr.String(), Err: err}
	}
	return nil
}

// binary finds cryptsetup.
func (c Cryptsetup) binary() (string, error) {
	if c.Command != "" {
		return c.Command, nil
	}
	if p, err := exec.LookPath("cryptsetup"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/cryptsetup", "/sbin/cryptsetup"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("cryptsetup not found (install the cryptsetup package): %w", exec.ErrNotFound)
}
