package main

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/vmpool/vmpool/storage"
)

// sizeUnits are the units qvm-volume accepts, each with an optional
// trailing "B" (matched without regard to case, as qvm-volume does).
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KI", 1 << 10}, {"MI", 1 << 20}, {"GI", 1 << 30}, {"TI", 1 << 40},
	{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12},
	{"", 1},
}

// parseSize parses a size as qvm-volume does: decimal bytes, optionally
// followed (spaces allowed between) by K, M, G or T (powers of 1000) or
// Ki, Mi, Gi or Ti (powers of 1024), each with an optional B, in any case:
// "1000", "10G", "10GiB", "512mib", "4096B". Empty, negative, fractional,
// overflowing sizes and unknown units are errors wrapping
// storage.ErrInvalidConfig.
func parseSize(s string) (int64, error) {
	bad := func(why string) (int64, error) {
		return 0, fmt.Errorf("%w: size %q %s (examples: 1000, 10G, 10GiB, 512MiB)", storage.ErrInvalidConfig, s, why)
	}
	u := strings.ToUpper(strings.TrimSpace(s))
	u = strings.TrimSuffix(u, "B")
	var mult int64
	for _, unit := range sizeUnits {
		if strings.HasSuffix(u, unit.suffix) {
			u, mult = strings.TrimSpace(strings.TrimSuffix(u, unit.suffix)), unit.mult
			break
		}
	}
	switch {
	case u == "":
		return bad("has no number")
	case strings.HasPrefix(u, "-"):
		return bad("is negative")
	case strings.TrimLeft(u, "0123456789") != "":
		return bad("is not a whole number with a unit of K, M, G, T, Ki, Mi, Gi, Ti")
	}
	n, err := strconv.ParseInt(u, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return bad("is too large")
	}
	return n * mult, nil
}

// parseParams parses pool parameters given as key=value arguments. A
// missing "=", an empty key or a key given twice is an error wrapping
// storage.ErrInvalidConfig (the Admin API's checks).
func parseParams(args []string) (map[string]string, error) {
	params := make(map[string]string, len(args))
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: pool parameter %q: want key=value", storage.ErrInvalidConfig, a)
		}
		if _, dup := params[k]; dup {
			return nil, fmt.Errorf("%w: pool parameter %s given twice", storage.ErrInvalidConfig, k)
		}
		params[k] = v
	}
	return params, nil
}

// volumeConfigKeys are the keys "volume config" takes, as qvm-volume config
// does (and source, for a snapshot volume's new template).
var volumeConfigKeys = []string{"revisions_to_keep", "rw", "ephemeral", "source"}

// parseVolumeChange parses the KEY VALUE of "volume config" as the Admin
// API's admin.vm.volume.Set.* do: revisions_to_keep an integer of at least
// -1, rw and ephemeral booleans (see storage.ParsePropertyBool), source a vid. An
// unknown key or a malformed value is an error wrapping
// storage.ErrInvalidConfig.
func parseVolumeChange(key, value string) (storage.VolumeChange, error) {
	var ch storage.VolumeChange
	switch key {
	case "revisions_to_keep":
		n, err := strconv.Atoi(value)
		if err != nil || n < -1 {
			return ch, fmt.Errorf("%w: revisions_to_keep %q: want an integer of at least -1 (-1 disables snapshots)", storage.ErrInvalidConfig, value)
		}
		ch.RevisionsToKeep = &n
	case "rw", "ephemeral":
		b, err := storage.ParsePropertyBool(value)
		if err != nil {
			return ch, fmt.Errorf("%s: %w", key, err)
		}
		if key == "rw" {
			ch.RW = &b
		} else {
			ch.Ephemeral = &b
		}
	case "source":
		if _, _, err := storage.ParseVID(value); err != nil {
			return ch, fmt.Errorf("source: %w", err)
		}
		ch.Source = &value
	default:
		return ch, fmt.Errorf("%w: unknown volume property %q (valid keys: %s)", storage.ErrInvalidConfig, key, strings.Join(volumeConfigKeys, ", "))
	}
	return ch, nil
}

// parseInterleaved parses fs's flags wherever they appear among args and
// returns the positional arguments in order: "volume create p vid --size
// 1G" and "volume create --size 1G p vid" mean the same. Everything after
// "--" is positional, and so is a negative number where a flag could start,
// as in Qubes' argparse tools: "volume config p vid revisions_to_keep -1"
// needs no "--" (the value of a flag, "--revisions-to-keep -1", stays the
// flag's).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		a := args[0]
		if a == "--" {
			return append(pos, args[1:]...), nil
		}
		if len(a) < 2 || a[0] != '-' || negativeNumber.MatchString(a) {
			pos, args = append(pos, a), args[1:]
			continue
		}
		n := 1 // the flag, and its value when it is the next argument
		if name := strings.TrimLeft(a, "-"); !strings.Contains(name, "=") && len(args) > 1 {
			if f := fs.Lookup(name); f != nil && !isBoolFlag(f) {
				n = 2
			}
		}
		if err := fs.Parse(args[:n]); err != nil {
			return nil, err
		}
		args = args[n:]
	}
	return pos, nil
}

// negativeNumber matches what argparse takes for a negative number rather
// than an option.
var negativeNumber = regexp.MustCompile(`^-(\d+|\d*\.\d+)$`)

// isBoolFlag reports whether f is a boolean flag, which takes no separate
// value ("--force", not "--force true").
func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// optionalInt is an int flag that remembers whether it was set.
type optionalInt struct{ v *int }

func (o *optionalInt) String() string {
	if o == nil || o.v == nil {
		return ""
	}
	return strconv.Itoa(*o.v)
}

func (o *optionalInt) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not an integer")
	}
	o.v = &n
	return nil
}
