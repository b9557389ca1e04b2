package ephemeral

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/vmpool/vmpool/storage"
)

// fakeCryptsetup writes a script that appends its arguments to a log
// and exits with status code.
func fakeCryptsetup(t *testing.T, code string) (bin, log string) {
	t.Helper()
	dir := t.TempDir()
	bin, log = filepath.Join(dir, "cryptsetup"), filepath.Join(dir, "log")
	script := "#!/bin/sh\necho \"$LC_ALL|$PWD|$*\" >> " + log + "\necho 'device busy' >&2\nexit " + code + "\n"
	require.NoError(t, os.WriteFile(bin, []byte(script), 0o755))
	return bin, log
}

func readLog(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// TestOpenRunsQubesCommand: Open runs cryptsetup as Qubes'
// start_encrypted does (arguments, LC_ALL=C, working directory /); when
// the mapping's start cannot be zeroed (here: no /dev/mapper node, as
// the fake made none), the mapping is closed again and Open fails.
func TestOpenRunsQubesCommand(t *testing.T) {
	bin, log := fakeCryptsetup(t, "0")
	name := "vm-volatile-vmpooltest_d" + filepath.Base(t.TempDir()) + "-crypt@volatile"
	err := Cryptsetup{Command: bin}.Open(context.Background(), "/images/volatile.img", name)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "zero the start of /dev/mapper/"+name)
	assert.Equal(t, []string{
		"C|/|--key-file=/dev/urandom --cipher=aes-xts-plain64 --type=plain -- open /images/volatile.img " + name,
		"C|/|-- close " + name,
	}, readLog(t, log))
}

func TestCommandError(t *testing.T) {
	bin, _ := fakeCryptsetup(t, "5")
	err := Cryptsetup{Command: bin}.Open(context.Background(), "/images/x", "vm-volatile-x-crypt@volatile")
	var ce *CommandError
	require.True(t, errors.As(err, &ce), "%v", err)
	assert.Equal(t, "cryptsetup --key-file=/dev/urandom --cipher=aes-xts-plain64 --type=plain -- open /images/x vm-volatile-x-crypt@volatile: device busy", err.Error())
	var exit *exec.ExitError
	assert.True(t, errors.As(err, &exit), "the exit status is kept")
}

// TestCloseMissingIsNoop: closing a mapping that does not exist runs
// nothing.
func TestCloseMissingIsNoop(t *testing.T) {
	bin, log := fakeCryptsetup(t, "1")
	require.NoError(t, Cryptsetup{Command: bin}.Close(context.Background(), "vm-volatile-none-crypt@volatile"))
	assert.Empty(t, readLog(t, log))
}

func TestBadNames(t *testing.T) {
	bin, log := fakeCryptsetup(t, "0")
	c := Cryptsetup{Command: bin}
	for _, name := range []string{"", ".", "..", "a/b", "../../etc/passwd", "a\x00b"} {
		assert.ErrorIs(t, c.Open(context.Background(), "/images/x", name), storage.ErrInvalidConfig, "%q", name)
		assert.ErrorIs(t, c.Close(context.Background(), name), storage.ErrInvalidConfig, "%q", name)
	}
	assert.Empty(t, readLog(t, log), "nothing ran")
}

func TestMissingBinary(t *testing.T) {
	err := Cryptsetup{Command: filepath.Join(t.TempDir(), "nope")}.Open(context.Background(), "/images/x", "n")
	require.Error(t, err)
	t.Setenv("PATH", t.TempDir())
	if _, err := os.Stat("/usr/sbin/cryptsetup"); err != nil {
		_, err := Cryptsetup{}.binary()
		assert.ErrorIs(t, err, exec.ErrNotFound)
		assert.Contains(t, err.Error(), "install the cryptsetup package")
	}
}
