# circus-sd: everything the tools and tests need is installed from here, never by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := libsystemd-dev pkg-config gcc python3-venv python3-dev procps
EXAMPLE ?= example/circus.ini

.PHONY: all deps venv run check test test-unit test-integration lint clean

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

test: lint venv
	$(PY) -m pytest -q tests/unit tests/integration

clean:
	rm -rf $(VENV) .build .mypy_cache .pytest_cache .ruff_cache
