# Two commands on a fresh Debian machine: `make serve` and `make test`.
# Debian's own interpreter when there is one: it is built with profile-guided and
# link-time optimization, which a CPython built from source (pyenv's default) is
# not, and the server's hot path is Python bytecode (bench/peers.py
# --compare-python: 12-30% more invocations/s on this interpreter alone).
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test test-cgroup-v2 images lint bench clean

$(STAMP): pyproject.toml scripts/install-system-packages.sh
	./scripts/install-system-packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing Lamina and its test tools into $(VENV) (about 25 s the first time)"
	$(BIN)/pip install --upgrade --progress-bar on pip
	$(BIN)/pip install --progress-bar on -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/lamina serve

# Runtime images are built once per machine (a minute or two each) into the image
# cache (/var/cache/lamina/images as root) and reused by every later run.
images: $(STAMP)
	@if [ "$$(id -u)" -eq 0 ] && command -v mmdebstrap >/dev/null; then \
		$(BIN)/lamina runtimes install --all; \
	else echo "skipping runtime images: building them needs root and mmdebstrap"; fi

# On a cgroup v1 host, tests/test_cgroup_v2.py also boots a QEMU guest with only
# cgroup v2; the last line says which cgroup version(s) the sandbox tests ran on.
# Test files run in parallel, one worker per core (TEST_WORKERS=1: one after another);
# most of a test's time is spent waiting on servers and sandboxes, not computing.
TEST_WORKERS ?= auto
test: $(STAMP) images
	$(BIN)/pytest -q --numprocesses $(TEST_WORKERS) --dist loadfile --durations 15 $(PYTEST_ARGS)

# The whole sandbox suite inside the cgroup v2 guest (slow without KVM: tens of minutes).
test-cgroup-v2: $(STAMP)
	$(BIN)/python scripts/cgroup_v2_vm.py --full --timeout 3600

lint: $(STAMP)
	$(BIN)/pip install --quiet ruff mypy
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m mypy src

bench: $(STAMP)
	$(BIN)/python bench/control_plane.py
	$(BIN)/python bench/console.py

clean:
	rm -rf $(VENV) data
