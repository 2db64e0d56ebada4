"""Which runtime identifiers this host can run: only interpreters that really run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from lamina.config import load_settings
from lamina.errors import InvalidParameterValueException
from lamina.runtimes import catalog
from tests.helpers import function_args, make_zip

HOST = load_settings({}, runtime_source="host")
IMAGE = load_settings({}, runtime_source="image")
LEGACY = IMAGE.replace(allow_deprecated_runtimes=True)


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
        catalog.runtime_spec("python3.14", HOST)


def test_a_wrapper_for_a_real_interpreter_runs_the_interpreter_behind_it(fresh_catalog, tmp_path):
    minor = sys.version_info.minor
    real = Path(sys.base_prefix) / "bin" / f"python3.{minor}"
    if not real.exists():
        pytest.skip("no base interpreter binary to wrap")
    fresh_catalog.setattr(catalog.sys, "base_prefix", "/nonexistent")
    _executable(tmp_path / f"python3.{minor}", f'#!/bin/sh\nexec "{real}" "$@"\n')
    # The wrapper alone: another python3.X on PATH that every user can reach would win.
    fresh_catalog.setenv("PATH", str(tmp_path))
    spec = catalog.runtime_spec(f"python3.{minor}", HOST)
    assert spec.argv[0] == str(real.resolve())


def test_host_mode_prefers_an_interpreter_sandbox_users_can_reach(fresh_catalog, tmp_path):
    # This machine's tools run on a pyenv CPython under /root (closed to others) and
    # Debian's of the same version sits in /usr/bin: sandboxes run as other uids.
    minor = sys.version_info.minor
    closed = Path(sys.base_prefix) / "bin" / f"python3.{minor}"
    debian = Path(f"/usr/bin/python3.{minor}")
    if not closed.exists() or catalog._reachable_by_all(closed) or not catalog._reachable_by_all(debian):
        pytest.skip(f"needs an unreachable base interpreter and a reachable {debian}")
    _executable(tmp_path / f"python3.{minor}", f'#!/bin/sh\nexec "{closed}" "$@"\n')
    fresh_catalog.setenv("PATH", f"{tmp_path}{os.pathsep}/usr/bin")
    spec = catalog.runtime_spec(f"python3.{minor}", HOST)
    assert spec.argv[0] == str(debian) and spec.system_paths == (Path("/usr"),)


@pytest.mark.parametrize("identifier, image, argv0", [
    ("python3.10", "python3.11", "/usr/bin/python3.11"),
    ("python3.11", "python3.11", "/usr/bin/python3.11"),
    ("python3.12", "python3.13", "/usr/bin/python3.13"),
    ("python3.13", "python3.13", "/usr/bin/python3.13"),
    ("python3.14", "python3.14", "/usr/bin/python3.14"),
    ("nodejs20.x", "nodejs20", "/usr/bin/node"),
    ("nodejs22.x", "nodejs24", "/usr/bin/node"),
    ("nodejs24.x", "nodejs24", "/usr/bin/node"),
    ("provided.al2", "provided", "/var/task/bootstrap"),
    ("provided.al2023", "provided", "/var/task/bootstrap"),
])
def test_every_current_identifier_runs_on_an_image(identifier, image, argv0):
    spec = catalog.runtime_spec(identifier, IMAGE)
    assert (spec.image, spec.argv[0], spec.system_paths, spec.own_runtime_dir) == (image, argv0, (), False)
    assert spec.execution_env == (None if identifier.startswith("provided") else f"AWS_Lambda_{identifier}")
    # Honest about a substitute version, silent when it is exact.
    exact = identifier.removesuffix(".x") == image
    assert (spec.warning is None) == (exact or identifier.startswith("provided"))
    catalog.check_runtime(identifier, IMAGE)
    assert identifier in catalog.supported_runtimes(IMAGE)


def test_python_runs_laminas_client_with_the_layers_dir_as_an_argument():
    assert catalog.runtime_spec("python3.12", IMAGE).argv == (
        "/usr/bin/python3.13", "-u", "-S", "/var/runtime/python/main.py", "/opt")


def test_a_substitute_version_warns_that_compiled_packages_will_not_import():
    assert catalog.runtime_spec("python3.12", IMAGE).warning == (
        "python3.12 runs on CPython 3.13 (Debian has no 3.12): compiled packages built for 3.12 "
        "will not import")


@pytest.mark.parametrize("identifier, recommended", [
    ("python3.9", "python3.14"), ("python3.7", "python3.14"), ("nodejs18.x", "nodejs24.x"),
    ("provided", "provided.al2023"), ("go1.x", "provided.al2023"),
])
def test_a_deprecated_identifier_is_refused_for_new_functions_with_awss_message(identifier, recommended):
    with pytest.raises(InvalidParameterValueException) as raised:
        catalog.check_runtime(identifier, IMAGE)
    assert raised.value.message == (
        f"The runtime parameter of {identifier} is no longer supported for creating or updating AWS "
        f"Lambda functions. We recommend you use the new runtime ({recommended}) while creating or "
        "updating functions."
    )
    assert identifier not in catalog.supported_runtimes(IMAGE)


def test_deprecated_identifiers_still_run_and_are_accepted_when_a_setting_allows_them():
    # Functions created before the deprecation keep running, as on Lambda.
    assert catalog.runtime_spec("python3.9", IMAGE).image == "python3.11"
    assert catalog.runtime_spec("provided", IMAGE).image == "provided"
    catalog.check_runtime("python3.8", LEGACY)
    assert catalog.runtime_spec("nodejs18.x", LEGACY).image == "nodejs20"
    assert {"python3.9", "nodejs18.x", "provided"} <= set(catalog.supported_runtimes(LEGACY))


@pytest.mark.parametrize("identifier", ["java21", "ruby3.4", "dotnet8", "python3.15", "nodejs26.x"])
def test_a_runtime_this_server_has_no_image_for_is_refused_naming_those_it_has(identifier):
    with pytest.raises(InvalidParameterValueException) as raised:
        catalog.check_runtime(identifier, IMAGE)
    assert raised.value.message == (
        f"The runtime parameter of {identifier} is not supported by this Lamina server. Supported here: "
        "nodejs24.x, nodejs22.x, nodejs20.x, python3.14, python3.13, python3.12, python3.11, python3.10, "
        "provided.al2023, provided.al2."
    )


def test_an_image_that_brings_its_own_runtime_client_runs_it():
    spec = catalog.runtime_spec("python3.13", IMAGE).on_image(own_runtime=True)
    assert spec.argv == ("/var/runtime/bootstrap",) and spec.own_runtime_dir
    assert dict(spec.env)["LAMBDA_RUNTIME_DIR"] == "/var/runtime"
    provided = catalog.runtime_spec("provided.al2023", IMAGE)
    assert provided.on_image(own_runtime=True) == provided


def test_host_mode_has_no_image():
    assert catalog.runtime_spec("provided.al2023", HOST).image is None


def test_the_python_client_puts_the_runtimes_boto3_after_code_and_layers(lam):
    # Lambda's order: /var/task, the layers in /opt, then /var/lang's site-packages
    # (where the runtime images keep boto3), so a bundled boto3 wins.
    code = make_zip({"app.py": "import sys\ndef handler(event, context):\n    return sys.path\n"})
    lam.create_function(**function_args("catalog-sys-path", code))
    path = json.loads(lam.invoke(FunctionName="catalog-sys-path")["Payload"].read())
    layers = [i for i, entry in enumerate(path) if entry.endswith("/python/lib/python3.11/site-packages")]
    assert path[-1] == "/var/lang/lib/python3.11/site-packages"
    assert layers and layers[0] < len(path) - 1
