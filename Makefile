# ovroot: `make test` is the one test command; it installs what it needs.
SHELL := /bin/bash
CACHE ?= $(CURDIR)/.cache
KERNELS := $(CACHE)/kernels
OUT ?= $(CURDIR)/out
DEMO_ARCH ?= x86_64
GO ?= go
export OVROOT_KERNEL_CACHE := $(KERNELS)

.PHONY: all deps kernels build test fuzz soak unit integration bench demo demo-images clean

all: build

# Debian packages (QEMU, squashfs-tools, e2fsprogs); no-op when installed.
deps:
	scripts/install-deps.sh

# Debian's amd64, arm64 and armhf (armmp) kernels + modules, e2fsck-static and
# systemd-boot (the UEFI loader of amd64 and arm64 images), into
# $(KERNELS), by the tool itself (ovroot fetch, as a go install user runs
# it); no-op when there.
kernels: deps
	$(GO) run ./cmd/ovroot fetch --arch all --cache $(KERNELS)

# Static (CGO_ENABLED=0): out/bin/ovrootctl runs on any Linux rootfs of the
# host's arch, musl or busybox too. Images get their own for their arch.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(OUT)/bin/ ./cmd/...

# Unit tests and the QEMU boot tests (x86_64 and arm64; 32-bit arm runs the
# walking skeleton and the factory reset). OVROOT_REQUIRE_TOOLS
# turns "skip: QEMU missing" into a failure, so this never passes by skipping.
test: kernels
	$(GO) vet ./...
	GO=$(GO) FUZZTIME=4s FUZZ_MIN_EXECS=1000 scripts/fuzz.sh
	OVROOT_REQUIRE_TOOLS=1 OVROOT_CAMPAIGN_SUMMARY=$(OUT)/powercut-campaign.txt $(GO) test -count=1 -timeout 80m ./...
	@cat $(OUT)/powercut-campaign.txt

# Every fuzz target for FUZZTIME (default 5m; FuzzFlatten 5x) each; make test runs them 4 s.
FUZZTIME ?= 5m
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) FUZZ_MIN_EXECS=1000 scripts/fuzz.sh

# The long power-cut campaign: every flush boundary of one recorded run of
# each scenario, three random subsets of the pending writes at each, five
# crash states booted per scenario and arch.
soak: kernels
	OVROOT_REQUIRE_TOOLS=1 OVROOT_CAMPAIGN_BOUNDARIES=all OVROOT_CAMPAIGN_SUBSETS=3 OVROOT_CAMPAIGN_BOOTS=5 \
		OVROOT_CAMPAIGN_SUMMARY=$(OUT)/powercut-soak.txt \
		$(GO) test -count=1 -timeout 6h -run TestPowerCutCampaign ./integration/
	@cat $(OUT)/powercut-soak.txt

# Unit tests only: fast, no root, no QEMU.
unit:
	$(GO) test -short -count=1 ./...

# The performance table (bench/bench_test.go): each figure, its baseline
# measured in the same run, the ratio and the goal, printed at the end and
# written to $(OUT)/bench.txt. Goals show as met / not met, never as a test
# failure; `make test` skips it (it needs OVROOT_BENCH=1). About 4 minutes,
# and the hand-over's per-step timeline (table, and out/handover-timeline.svg).
bench: kernels
	OVROOT_BENCH=1 OVROOT_REQUIRE_TOOLS=1 OVROOT_BENCH_OUT=$(OUT)/bench.txt \
		$(GO) test -count=1 -timeout 40m -run '^TestBenchTable$$' ./bench/
	@cat $(OUT)/bench.txt

# Build demo images for every arch, then boot $(DEMO_ARCH) on this terminal.
demo: kernels build
	$(OUT)/bin/ovroot demo --kernel-cache $(KERNELS) --out $(OUT)/demo --arch x86_64
	$(OUT)/bin/ovroot demo --kernel-cache $(KERNELS) --out $(OUT)/demo --arch arm64
	$(OUT)/bin/ovroot demo --kernel-cache $(KERNELS) --out $(OUT)/demo --arch arm
	$(OUT)/bin/ovroot run --disk $(OUT)/demo/$(DEMO_ARCH)-update.bundle $(OUT)/demo/$(DEMO_ARCH).img

clean:
	rm -rf $(OUT)
