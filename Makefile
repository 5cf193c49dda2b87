# circus-sd: everything the tools and tests need is installed from here, never by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := libsystemd-dev pkg-config gcc python3-venv python3-dev procps
EXAMPLE ?= example/circus.ini

.PHONY: all deps venv run check test test-unit test-integration test-system testbed wheel deb lint clean docs bench bench-quick bench-scale bench-sd-install soak

all: venv

# apt packages: systemd-python compiles against libsystemd.
deps: .build/apt.stamp
.build/apt.stamp:
	@mkdir -p .build
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi
	@touch $@

# Two stamps: running needs only the runtime dependencies (a newcomer's `make run` is quick);
# tests and linters add theirs.
venv: $(VENV)/.stamp
$(VENV)/.run-stamp: pyproject.toml .build/apt.stamp
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	@touch $@
$(VENV)/.stamp: $(VENV)/.run-stamp
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

run: $(VENV)/.run-stamp
	$(VENV)/bin/circus-sd $(EXAMPLE)

check: $(VENV)/.run-stamp
	$(VENV)/bin/circus-sd --check $(EXAMPLE)

lint: venv
	$(VENV)/bin/ruff check circus_sd tests
	$(VENV)/bin/mypy

test-unit: venv
	$(PY) -m pytest -q tests/unit

test-integration: venv
	$(PY) -m pytest -q tests/integration

# The load test (tests/integration/test_load.py) runs LOAD_SECONDS of load, the soak test
# SOAK_SECONDS: bounded here; `make soak` runs the soak alone, for longer.
test: lint venv testbed deb
	LOAD_SECONDS=30 SOAK_SECONDS=60 $(PY) -m pytest -q tests/unit tests/integration tests/system

# Soak: a realistic configuration for SOAK_SECONDS (10 minutes by default); the arbiter's
# memory, descriptors and threads must stay flat, no zombie may linger. Figures: .build/soak.json.
SOAK_SECONDS ?= 600
soak: venv
	SOAK_SECONDS=$(SOAK_SECONDS) $(PY) -m pytest -q tests/integration/test_soak.py

# The systemd test bed (tests/system): a Debian tree booted with systemd-nspawn, circus-sd
# installed in it from a wheel of this checkout. The tree is rebuilt when its recipe changes.
TESTBED := .build/testbed
# The VM tier (a real kernel with cgroup controllers, under qemu/TCG) boots its own tree.
TESTBED_APT := mmdebstrap qemu-system-x86 e2fsprogs util-linux
testbed: $(TESTBED)/rootfs.stamp $(TESTBED)/vm.stamp wheel
$(TESTBED)/apt.stamp:
	@mkdir -p $(TESTBED)
	@if ! dpkg -s $(TESTBED_APT) >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TESTBED_APT); \
	fi
	@touch $@
$(TESTBED)/rootfs.stamp: tests/system/testbed/build-rootfs.sh $(TESTBED)/apt.stamp
	bash tests/system/testbed/build-rootfs.sh $(CURDIR)/$(TESTBED)/rootfs > $(TESTBED)/rootfs.log 2>&1 \
	    || { tail -20 $(TESTBED)/rootfs.log; exit 1; }
	@touch $@
$(TESTBED)/vm.stamp: tests/system/testbed/build-rootfs.sh tests/system/testbed/build-image.sh \
		$(wildcard tests/system/testbed/vm/*) $(TESTBED)/apt.stamp
	WITH_KERNEL=1 bash tests/system/testbed/build-rootfs.sh $(CURDIR)/$(TESTBED)/vmroot \
	    > $(TESTBED)/vmroot.log 2>&1 || { tail -20 $(TESTBED)/vmroot.log; exit 1; }
	bash tests/system/testbed/build-image.sh $(CURDIR)/$(TESTBED) > $(TESTBED)/vm.log 2>&1 \
	    || { tail -20 $(TESTBED)/vm.log; exit 1; }
	@touch $@

wheel: venv
	rm -rf $(TESTBED)/wheel
	$(PY) -m pip wheel -q --no-deps -w $(TESTBED)/wheel .

test-system: venv testbed deb
	$(PY) -m pytest -q tests/system

# The Debian package (packaging/deb/, README "Install"): dpkg-buildpackage (debhelper, pybuild)
# on a copy of the sources with packaging/deb/debian as debian/; build dependencies come from the
# Debian mirror (apt-get build-dep reads debian/control). lintian checks the result: an error
# fails the build, its report is .build/deb/lintian.log. The tests install .build/deb/*.deb.
DEB_VERSION := $(shell sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' packaging/deb/debian/changelog)
DEB_BUILD   := .build/deb
DEB         := circus-sd_$(DEB_VERSION)_all.deb
DEB_OFFLINE := $(if $(shell unshare --net true 2>/dev/null && echo y),unshare --net --)
DEB_SOURCES := pyproject.toml README.md $(shell find circus_sd packaging -type f -not -name '*.pyc')

deb: $(DEB)
$(DEB): .build/deb-apt.stamp $(DEB_SOURCES)
	@v=$$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml); [ "$$v" = "$(DEB_VERSION)" ] || \
	    { echo "pyproject.toml has version $$v, packaging/deb/debian/changelog $(DEB_VERSION)"; exit 1; }
	rm -rf $(DEB_BUILD) && mkdir -p $(DEB_BUILD)/src
	tar -c --exclude=__pycache__ pyproject.toml README.md circus_sd packaging | tar -x -C $(DEB_BUILD)/src
	cp -a packaging/deb/debian $(DEB_BUILD)/src/debian
	@# Debian's python3 only (not a pyenv or venv one earlier in PATH), and no network at all
	@# where a network namespace can be made: the build needs nothing beyond the build-deps.
	cd $(DEB_BUILD)/src && $(DEB_OFFLINE) env -u PYTHONPATH -u VIRTUAL_ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin \
	    dpkg-buildpackage -b -us -uc > ../build.log 2>&1 || { tail -30 ../build.log; exit 1; }
	lintian --info --display-info --fail-on error $(DEB_BUILD)/$(DEB) > $(DEB_BUILD)/lintian.log 2>&1 \
	    || { cat $(DEB_BUILD)/lintian.log; exit 1; }
	@echo "lintian: $$(grep -c '^E:' $(DEB_BUILD)/lintian.log) errors, $$(grep -c '^W:' $(DEB_BUILD)/lintian.log) warnings, $$(grep -c '^I:' $(DEB_BUILD)/lintian.log) info ($(DEB_BUILD)/lintian.log)"
	cp $(DEB_BUILD)/$(DEB) $@

.build/deb-apt.stamp: packaging/deb/debian/control .build/apt.stamp
	@if ! { command -v lintian && dpkg-checkbuilddeps packaging/deb/debian/control; } >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -qq --no-install-recommends ./packaging/deb && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian; \
	fi
	@touch $@

# Benchmarks against the peers (bench/README.md). The peers live in their own venv, never in
# the project's. circus 0.19 needs no old pin on Python 3.11: it works with tornado 6.6.1 and
# pyzmq 27.3.0 (checked); the bounds below only keep to the versions that were checked.
BENCH_VENV  := .build/bench-venv
BENCH_PY    := $(BENCH_VENV)/bin/python
BENCH_CHILD := .build/bench/bench-child
BENCH_PEERS := 'circus==0.19.*' 'supervisor==4.3.*' 'tornado>=6.6,<7' 'pyzmq>=27,<28' matplotlib

$(BENCH_VENV)/.stamp: .build/apt.stamp
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q $(BENCH_PEERS)
	@touch $@

$(BENCH_CHILD): bench/child.c .build/apt.stamp
	@mkdir -p $(dir $@)
	gcc -O2 -Wall -Wextra -o $@ bench/child.c

# circus-sd as a user has it: installed (not editable, whose import hook costs each start about
# 10 ms), and byte-compiled by pip at install, as the Debian package is
# (PYTHONDONTWRITEBYTECODE, when set, would make every start compile its modules again: 90 ms).
# The dependencies once; the package again at every run, from the working tree.
BENCH_SD_VENV := .build/bench-sd-venv
$(BENCH_SD_VENV)/.stamp: pyproject.toml .build/apt.stamp
	$(PYTHON) -m venv $(BENCH_SD_VENV)
	$(BENCH_SD_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_SD_VENV)/bin/python -m pip install -q .
	@touch $@
bench-sd-install: $(BENCH_SD_VENV)/.stamp
	$(BENCH_SD_VENV)/bin/python -m pip install -q --no-deps --force-reinstall .

# One run, bounded in time; BENCH_QUICK=1 for the short version (N=100, 3 repetitions).
bench: venv $(BENCH_VENV)/.stamp $(BENCH_CHILD) bench-sd-install
	timeout -s TERM 1500 $(BENCH_PY) -m bench --child $(BENCH_CHILD) --project-venv $(BENCH_SD_VENV)

bench-quick:
	BENCH_QUICK=1 $(MAKE) bench

# Scale (issue 18): N = 1,000 / 5,000 / 10,000 processes (BENCH_SCALE_N=200,1000 to narrow it),
# the same peers and machine limits, about 20 minutes; results in bench/results/scale-STAMP.*.
bench-scale: venv $(BENCH_VENV)/.stamp $(BENCH_CHILD) bench-sd-install
	timeout -s TERM 3600 $(BENCH_PY) -m bench.scale --child $(BENCH_CHILD) --project-venv $(BENCH_SD_VENV)

# The control tests need the real Circus 0.19 client: test_circus_compat.py uses the bench venv
# above ($CIRCUS_VENV overrides). test_control_access.py sends requests as other users (nobody, a
# test group's member), who cannot run the project venv's python (it lives under /root): they
# use the system python3 with Debian's python3-zmq. groff and man render circus-sd.ini(5) in
# tests/unit/test_manpage.py.
CONTROL_TEST_APT := python3-zmq util-linux passwd groff-base man-db
.build/control-test-apt.stamp: .build/apt.stamp
	@if ! dpkg -s $(CONTROL_TEST_APT) >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(CONTROL_TEST_APT); \
	fi
	@touch $@

test test-integration: .build/control-test-apt.stamp $(BENCH_VENV)/.stamp

clean:
	rm -rf $(VENV) .build .mypy_cache .pytest_cache .ruff_cache circus-sd_*.deb

# Regenerate the README's option tables from the option declarations.
docs: venv
	$(PY) -m circus_sd.config.doc --write README.md
	$(PY) -m circus_sd.plugins.doc --write README.md
