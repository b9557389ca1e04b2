# vmpool: `make demo` and `make test` work on a fresh Debian machine as root;
# each installs the Debian packages it needs first (once: a second run
# installs nothing).

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH):/usr/sbin:/sbin
GO ?= go
GOFMT ?= gofmt

# staticcheck, pinned, installed by `make check` into bin/tools (again only
# when the binary there is missing, another version or built by another Go).
STATICCHECK_VERSION := v0.8.2
TOOLS_BIN := $(CURDIR)/bin/tools
STATICCHECK := $(TOOLS_BIN)/staticcheck

# Packages the tests and the demo need, as command:package.
TOOLS := mkfs.btrfs:btrfs-progs mkfs.xfs:xfsprogs mkfs.ext4:e2fsprogs losetup:util-linux blockdev:util-linux
# internal/vmtest: the QEMU VM (TCG) for the device-mapper tests, the tools
# its guest runs from the host's root (LVM, dmsetup, thin_check) and those
# that fetch and unpack its Debian kernel and busybox; cryptsetup for the
# ephemeral volumes' dm-crypt mappings.
TOOLS += qemu-system-x86_64:qemu-system-x86 lvm:lvm2 dmsetup:dmsetup thin_check:thin-provisioning-tools \
	xz:xz-utils dpkg-deb:dpkg apt-get:apt mount:mount cryptsetup:cryptsetup-bin

# How long each fuzz target runs in `make test` and in `make fuzz`.
FUZZTIME ?= 5s
FUZZTIME_LONG ?= 2m
FUZZMINIMIZE ?= 1000x

.PHONY: all deps build vet check gofmt-check staticcheck staticcheck-install test unit bench bench-smoke fuzz fuzz-smoke demo clean

all: build

## deps: install the missing Debian packages (idempotent).
deps:
	@command -v $(GO) >/dev/null || { echo "Go is needed: install it at /usr/local/go (see README)"; exit 1; }
	@missing=""; for t in $(TOOLS); do command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

build:
	$(GO) build ./...

# -tags vmtest: the in-VM test files (internal/vmtest) are checked too.
vet:
	$(GO) vet ./...
	$(GO) vet -tags vmtest ./...

## check: the static checks, no root needed: go vet, gofmt (fails if a file
## needs formatting) and staticcheck (fails on any finding).
check: vet gofmt-check staticcheck

gofmt-check:
	@out=$$($(GOFMT) -l .); if [ -n "$$out" ]; then \
		echo "gofmt -l: these files need formatting (run gofmt -w):"; echo "$$out"; exit 1; \
	fi

staticcheck: staticcheck-install
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags vmtest ./...

# go version -m names the Go that built the binary and the module version.
staticcheck-install:
	@info=$$($(GO) version -m $(STATICCHECK) 2>/dev/null || true); \
	if ! echo "$$info" | grep -qE "^[[:space:]]+mod[[:space:]]+honnef.co/go/tools[[:space:]]+$(STATICCHECK_VERSION)([[:space:]]|$$)" || \
		! echo "$$info" | head -n 1 | grep -qF ": $$($(GO) env GOVERSION)"; then \
		echo "installing staticcheck $(STATICCHECK_VERSION) into $(TOOLS_BIN)"; \
		mkdir -p $(TOOLS_BIN) && GOBIN=$(TOOLS_BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); \
	fi

## test: the full suite, as CI runs it: the static checks first, then real
## btrfs, XFS and ext4 on loop devices (root), the device-mapper tests in a
## QEMU VM (internal/vmtest; the first run downloads its kernel), nothing skipped
## (VMPOOL_REQUIRE=all), the race detector, a one-iteration run of every
## benchmark and a short run of every fuzz target.
test: check deps unit bench-smoke fuzz-smoke

unit:
	VMPOOL_REQUIRE=all $(GO) test -race -count=1 -timeout 30m ./...

bench-smoke:
	VMPOOL_REQUIRE=all $(GO) test -count=1 -run '^$$' -bench . -benchtime 1x -timeout 30m ./...

## bench: the benchmarks, each next to its baseline from the same run.
bench: deps
	VMPOOL_REQUIRE=all $(GO) test -count=1 -run '^$$' -bench . -benchtime 5x -timeout 60m ./...

fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz FUZZTIME_LONG=$(FUZZTIME)

## fuzz: every Fuzz target of the module, FUZZTIME_LONG each. A new
## interesting input is minimized with at most FUZZMINIMIZE runs: by time
## (the default, 60 s), a worker that found one in a seed as large as the
## qubes.xml fixture spends the whole run minimizing it. Go before
## 1.27 can fail a target with a bare "context deadline exceeded" when the
## fuzz time ends (golang/go#75804): such a run, with no failing input
## written, is run once more; any other failure fails at once.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			for try in 1 2; do \
				echo "fuzz $$pkg $$f ($(FUZZTIME_LONG))"; \
				if out=$$($(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME_LONG) -fuzzminimizetime $(FUZZMINIMIZE) $$pkg 2>&1); then \
					echo "$$out" | grep -E '^(fuzz: elapsed|ok)' | tail -n 2; break; \
				fi; \
				if [ $$try = 1 ] && echo "$$out" | grep -q 'context deadline exceeded' && \
					! echo "$$out" | grep -qE 'Failing input written|panic:'; then \
					echo "  the fuzz-time deadline race of Go < 1.27, no failing input: running again"; continue; \
				fi; \
				echo "$$out"; exit 1; \
			done; \
		done; \
	done

## demo: a file-reflink pool on a loop-mounted btrfs image: volumes,
## snapshots, revisions and revert, then everything is cleaned up.
demo: deps
	$(GO) build -o bin/vmpoolctl ./examples/vmpoolctl
	./examples/vmpoolctl/demo.sh bin/vmpoolctl

clean:
	rm -rf bin
