# The two commands: `make up` starts Podvisor all-in-one, `make test` runs the whole suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DEB_PACKAGES := qemu-system-x86 busybox-static e2fsprogs erofs-utils docker-registry etcd-server skopeo cpio iproute2 curl openssl gcc libc6-dev lz4

.PHONY: setup up test lint typecheck clean

setup: $(VENV)/.installed .debs-installed
	$(VENV)/bin/podvisor crx build

.debs-installed: Makefile
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi; \
	apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq || sudo apt-get update -qq; }
	@touch $@

$(VENV)/.installed: pyproject.toml .debs-installed
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

up: setup
	$(VENV)/bin/podvisor up $(ARGS)

test: setup
	$(VENV)/bin/ruff check podvisor tests
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

lint:
	$(VENV)/bin/ruff check podvisor tests

typecheck:
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .debs-installed
