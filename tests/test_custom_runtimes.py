"""Custom runtimes: any `bootstrap` that speaks the Runtime API, unmodified."""

from __future__ import annotations

import json
import shutil
import sysconfig
import uuid
from pathlib import Path

import pytest

from tests.conftest import ROLE
from tests.helpers import make_zip

SHELL_BOOTSTRAP = r"""#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS=$(mktemp)
  EVENT=$(curl -sS -D "$HEADERS" "$API/invocation/next")
  REQUEST_ID=$(grep -i '^Lambda-Runtime-Aws-Request-Id:' "$HEADERS" | tr -d '\r' | cut -d' ' -f2)
  rm -f "$HEADERS"
  echo "shell runtime got $EVENT"
  case "$EVENT" in
    *fail*) curl -sS -X POST -H 'Lambda-Runtime-Function-Error-Type: Shell.Failure' \
              -d '{"errorMessage":"asked to fail","errorType":"Shell.Failure"}' \
              "$API/invocation/$REQUEST_ID/error" >/dev/null ;;
    *) curl -sS -X POST -d "{\"echo\":$EVENT,\"handler\":\"$_HANDLER\"}" \
              "$API/invocation/$REQUEST_ID/response" >/dev/null ;;
  esac
done
"""

APP = """
def handler(event, context):
    if event.get("fail"):
        raise RuntimeError("awslambdaric saw a failure")
    return {"ric": True, "event": event, "request_id": context.aws_request_id}
"""


def _site_packages_files(*packages: str) -> dict[str, bytes]:
    """The installed files of the given top-level packages/modules, as zip members."""
    site = Path(sysconfig.get_paths()["purelib"])
    files: dict[str, bytes] = {}
    for name in packages:
        path = site / name
        candidates = [path] if path.is_dir() else list(site.glob(f"{name}*.py")) + list(site.glob(f"{name}*.so"))
        for candidate in candidates:
            members = candidate.rglob("*") if candidate.is_dir() else [candidate]
            for member in members:
                if member.is_file() and "__pycache__" not in member.parts:
                    files[member.relative_to(site).as_posix()] = member.read_bytes()
    return files


def _create(lam, files: dict[str, str | bytes], handler: str) -> str:
    name = f"custom-{uuid.uuid4().hex[:10]}"
    code = make_zip({k: v for k, v in files.items() if k != "bootstrap"})
    # bootstrap must be executable, as on Lambda.
    code = make_zip(files, mode=0o755) if "bootstrap" in files else code
    lam.create_function(FunctionName=name, Runtime="provided.al2023", Role=ROLE,
                        Handler=handler, Code={"ZipFile": code})
    return name


def test_shell_script_bootstrap_speaking_the_runtime_api_with_curl(lam):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    name = _create(lam, {"bootstrap": SHELL_BOOTSTRAP}, handler="function.handler")
    response = lam.invoke(FunctionName=name, Payload=json.dumps({"n": 1}), LogType="Tail")
    assert json.loads(response["Payload"].read()) == {"echo": {"n": 1}, "handler": "function.handler"}
    failed = lam.invoke(FunctionName=name, Payload=json.dumps({"fail": 1}))
    assert failed["FunctionError"] == "Unhandled"
    assert json.loads(failed["Payload"].read())["errorType"] == "Shell.Failure"


def test_awslambdaric_runs_a_function_as_a_provided_al2023_bootstrap(lam):
    pytest.importorskip("awslambdaric")
    files: dict[str, str | bytes] = {
        "bootstrap": "#!/bin/sh\ncd \"$LAMBDA_TASK_ROOT\"\nexport PYTHONPATH=\"$LAMBDA_TASK_ROOT\"\n"
                     "exec python3 -m awslambdaric \"$_HANDLER\"\n",
        "app.py": APP,
        **_site_packages_files("awslambdaric", "runtime_client", "simplejson", "snapshot_restore_py"),
    }
    name = _create(lam, files, handler="app.handler")
    response = lam.invoke(FunctionName=name, Payload=json.dumps({"k": "v"}))
    assert "FunctionError" not in response, response["Payload"].read()
    body = json.loads(response["Payload"].read())
    assert body["ric"] is True and body["event"] == {"k": "v"} and len(body["request_id"]) == 36
    failed = lam.invoke(FunctionName=name, Payload=json.dumps({"fail": True}))
    assert failed["FunctionError"] == "Unhandled"
    error = json.loads(failed["Payload"].read())
    assert error["errorType"] == "RuntimeError"
    assert error["errorMessage"] == "awslambdaric saw a failure"
