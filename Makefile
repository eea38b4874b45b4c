# iofog-connector: build, run, test. See README.md.
SHELL    := /bin/bash
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
# Expand once: a commit landing mid-build must not give parts different versions.
VERSION  := $(VERSION)
COMMIT   := $(COMMIT)
LDFLAGS  := -s -w -buildid= -X main.version=$(VERSION) -X main.commit=$(COMMIT)
GOFLAGS_BUILD := -trimpath -buildvcs=false -ldflags '$(LDFLAGS)'
OUT      ?= out
CACHE    ?= $(CURDIR)/.cache
RUNDIR   ?= $(CURDIR)/.run
BOARD    ?= x86_64
# staticcheck is pinned and run through `go run`: nothing to install, same result everywhere.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
export CGO_ENABLED := 0
export IOFOG_CACHE := $(CACHE)

.PHONY: all deps build run check test test-short test-long bench fuzz fetch debian-vm image qemu packages clean

all: build

## build: static binaries for linux/amd64 and linux/arm64 in out/
build:
	GOOS=linux GOARCH=amd64 $(GO) build $(GOFLAGS_BUILD) -o $(OUT)/linux-amd64/iofog-connector ./cmd/iofog-connector
	GOOS=linux GOARCH=arm64 $(GO) build $(GOFLAGS_BUILD) -o $(OUT)/linux-arm64/iofog-connector ./cmd/iofog-connector
	$(GO) build $(GOFLAGS_BUILD) -o $(OUT)/mkimage ./cmd/mkimage

$(OUT)/iofog-connector: FORCE
	$(GO) build $(GOFLAGS_BUILD) -o $@ ./cmd/iofog-connector
FORCE:

## run: the Connector in the foreground, dev mode, built-in default config, state in .run/
run: $(OUT)/iofog-connector
	@mkdir -p $(RUNDIR)
	$(OUT)/iofog-connector run --builtin-config --state-dir $(RUNDIR) $(RUNFLAGS)

## deps: the Debian packages the tests need (QEMU, rpm, mtools), installed if missing
deps:
	./scripts/install-test-deps.sh

## check: go.mod and go.sum tidy, go vet, staticcheck; fails on any finding
check:
	@$(GO) mod tidy -diff || { echo 'go.mod or go.sum is not tidy: run `go mod tidy` and commit the result' >&2; exit 1; }
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## test: the checks, then every test, including root (namespaces, nftables) and QEMU boot tests
test: deps fetch check debian-vm
	$(GO) test -count=1 -timeout 60m ./...

## test-long: the power-cut test on the real x86 image, POWERCUTS cuts (default 20; make test runs 3)
POWERCUTS ?= 20
test-long: deps fetch
	mkdir -p $(OUT); set -o pipefail; IOFOG_POWERCUTS=$(POWERCUTS) $(GO) test -count=1 -v -timeout 8h -run '^TestPowerCut$$' ./appliance/ 2>&1 | grep -v 'console: ' | tee $(OUT)/powercut.txt

## test-short: unit tests only (no root, no QEMU, no browser)
test-short:
	IOFOG_SKIP_PRIVILEGED=1 IOFOG_SKIP_QEMU=1 IOFOG_SKIP_BROWSER=1 $(GO) test -count=1 -short ./...

## bench: relay and pool benchmarks, as ratios against baselines in the same run; image sizes
bench: $(OUT)/iofog-connector fetch
	./scripts/install-bench-deps.sh
	$(GO) test -run '^$$' -bench . -benchtime 2s ./relay/portpool/
	$(GO) run ./cmd/connbench -out $(OUT)/bench.txt
	$(GO) run ./cmd/mkimage sizes | tee $(OUT)/sizes.txt

## fuzz: each fuzz target for 60 s (not in CI)
fuzz:
	./scripts/fuzz.sh 60s

## fetch: Debian kernels and firmware into .cache/ (warm re-runs take seconds)
fetch:
	./scripts/fetch.sh $(CACHE)
	./scripts/fetch-qemu-raspi4.sh $(CACHE)

## debian-vm: the Debian system the package test boots, into .cache/debian-vm/ (built once, then cached)
debian-vm: deps
	@if [ "$$IOFOG_SKIP_QEMU" = 1 ]; then echo "debian-vm: skipped (IOFOG_SKIP_QEMU=1)"; else ./scripts/debian-vm.sh $(CACHE) >/dev/null; fi

## image: appliance images for both boards in out/, each with its signed update bundle (SIGN_KEY=FILE, else a test key)
SIGN_KEY ?=
image: build fetch
	$(OUT)/mkimage --board x86_64 --binary $(OUT)/linux-amd64/iofog-connector --version $(VERSION) $(if $(SIGN_KEY),--sign-key $(SIGN_KEY)) --out $(OUT)/iofog-connector-x86_64.img
	$(OUT)/mkimage --board rpi --binary $(OUT)/linux-arm64/iofog-connector --version $(VERSION) $(if $(SIGN_KEY),--sign-key $(SIGN_KEY)) --out $(OUT)/iofog-connector-rpi.img

## qemu: boot an image interactively (BOARD=x86_64|rpi)
qemu: fetch
	$(GO) run ./cmd/mkimage qemu --board $(BOARD)

## packages: .deb and .rpm for amd64 and arm64 in out/
packages: build
	$(GO) run ./cmd/mkpkg -out $(OUT) -version $(VERSION)

clean:
	rm -rf $(OUT) $(RUNDIR)
