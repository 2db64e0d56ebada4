"""Which runtime identifiers this host can run: only interpreters that really run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from lamina.errors import InvalidParameterValueException
from lamina.runtimes import catalog


@pytest.fixture
def fresh_catalog(monkeypatch: pytest.MonkeyPatch):
    catalog._host_pythons.cache_clear()
    yield monkeypatch
    catalog._host_pythons.cache_clear()


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def test_a_wrapper_for_an_interpreter_that_is_not_installed_is_not_a_runtime(fresh_catalog, tmp_path):
    # What pyenv's shim does for a version it does not have.
    _executable(tmp_path / "python3.14", "#!/bin/sh\necho 'python3.14: command not found' >&2\nexit 127\n")
    fresh_catalog.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(InvalidParameterValueException, match="python3.14"):
        catalog.runtime_spec("python3.14")


def test_a_wrapper_for_a_real_interpreter_runs_the_interpreter_behind_it(fresh_catalog, tmp_path):
    minor = sys.version_info.minor
    real = Path(sys.base_prefix) / "bin" / f"python3.{minor}"
    if not real.exists():
        pytest.skip("no base interpreter binary to wrap")
    fresh_catalog.setattr(catalog.sys, "base_prefix", "/nonexistent")
    _executable(tmp_path / f"python3.{minor}", f'#!/bin/sh\nexec "{real}" "$@"\n')
    fresh_catalog.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    spec = catalog.runtime_spec(f"python3.{minor}")
    assert spec.argv[0] == str(real.resolve())
