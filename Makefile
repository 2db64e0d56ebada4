# Two commands on a fresh Debian machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test images bench clean

$(STAMP): pyproject.toml scripts/install-system-packages.sh
	./scripts/install-system-packages.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/lamina serve

# Runtime images are built once per machine (a minute or so each) into the user's
# image cache and reused by every later run; building needs root.
images: $(STAMP)
	@if [ "$$(id -u)" -eq 0 ] && command -v mmdebstrap >/dev/null; then \
		$(BIN)/lamina runtimes install --all; \
	else echo "skipping runtime images: building them needs root and mmdebstrap"; fi

test: $(STAMP) images
	$(BIN)/pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/control_plane.py

clean:
	rm -rf $(VENV) data
