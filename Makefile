# circus-sd: everything the tools and tests need is installed from here, never by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := libsystemd-dev pkg-config gcc python3-venv python3-dev procps
EXAMPLE ?= example/circus.ini

.PHONY: all deps venv run check test test-unit test-integration test-system testbed wheel lint clean docs bench bench-quick

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

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml .build/apt.stamp
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

run: venv
	$(VENV)/bin/circus-sd $(EXAMPLE)

check: venv
	$(VENV)/bin/circus-sd --check $(EXAMPLE)

lint: venv
	$(VENV)/bin/ruff check circus_sd tests
	$(VENV)/bin/mypy

test-unit: venv
	$(PY) -m pytest -q tests/unit

test-integration: venv
	$(PY) -m pytest -q tests/integration

test: lint venv testbed
	$(PY) -m pytest -q tests/unit tests/integration tests/system

# The systemd test bed (tests/system): a Debian tree booted with systemd-nspawn, circus-sd
# installed in it from a wheel of this checkout. The tree is rebuilt when its recipe changes.
TESTBED := .build/testbed
testbed: $(TESTBED)/rootfs.stamp wheel
$(TESTBED)/rootfs.stamp: tests/system/testbed/build-rootfs.sh
	@mkdir -p $(TESTBED)
	@command -v mmdebstrap >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap; }
	bash tests/system/testbed/build-rootfs.sh $(CURDIR)/$(TESTBED)/rootfs > $(TESTBED)/rootfs.log 2>&1 \
	    || { tail -20 $(TESTBED)/rootfs.log; exit 1; }
	@touch $@

wheel: venv
	rm -rf $(TESTBED)/wheel
	$(PY) -m pip wheel -q --no-deps -w $(TESTBED)/wheel .

test-system: venv testbed
	$(PY) -m pytest -q tests/system

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

# One run, bounded in time; BENCH_QUICK=1 for the short version (N=100, 3 repetitions).
bench: venv $(BENCH_VENV)/.stamp $(BENCH_CHILD)
	timeout -s TERM 1500 $(BENCH_PY) -m bench --child $(BENCH_CHILD) --project-venv $(VENV)

bench-quick:
	BENCH_QUICK=1 $(MAKE) bench

# The control tests need the real Circus 0.19 client: test_circus_compat.py uses the bench venv
# above ($CIRCUS_VENV overrides). test_control_access.py sends requests as other users (nobody, a
# test group's member), who cannot run the project venv's python (it lives under /root): they
# use the system python3 with Debian's python3-zmq.
CONTROL_TEST_APT := python3-zmq util-linux passwd
.build/control-test-apt.stamp: .build/apt.stamp
	@if ! dpkg -s $(CONTROL_TEST_APT) >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(CONTROL_TEST_APT); \
	fi
	@touch $@

test test-integration: .build/control-test-apt.stamp $(BENCH_VENV)/.stamp

clean:
	rm -rf $(VENV) .build .mypy_cache .pytest_cache .ruff_cache

# Regenerate the README's option tables from the option declarations.
docs: venv
	$(PY) -m circus_sd.config.doc --write README.md
