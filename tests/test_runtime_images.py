"""Functions run on runtime images, as on Lambda: runtime + code + OS, the host
contributing only the kernel. Real server, real images, real sandboxes."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import ROLE, Server
from tests.helpers import make_zip

VERSION_HANDLER = make_zip({"app.py": (
    "import sys\n"
    "def handler(event, context):\n"
    "    return {'python': '%d.%d' % sys.version_info[:2]}\n"
)})
NODE_HANDLER = make_zip({"index.mjs": (
    "export const handler = async () => ({ node: process.versions.node.split('.')[0] });\n"
)})
SHELL_BOOTSTRAP = r"""#!/bin/sh
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS=$(mktemp)
  curl -sS -D "$HEADERS" -o /dev/null "$API/invocation/next"
  ID=$(grep -i '^Lambda-Runtime-Aws-Request-Id:' "$HEADERS" | tr -d '\r' | cut -d' ' -f2)
  curl -sS -X POST -d "{\"os\":\"$(. /etc/os-release; echo $ID)\"}" "$API/invocation/$ID/response" >/dev/null
done
"""
HOST_VIEW_HANDLER = make_zip({"app.py": (
    "import os\n"
    "def listing(path):\n"
    "    try:\n"
    "        return sorted(os.listdir(path))\n"
    "    except OSError as error:\n"
    "        return error.strerror\n"
    "def handler(event, context):\n"
    "    return {path: listing(path) for path in ('/', '/usr/local/bin', '/root', '/home', '/work')}\n"
)})
API_CALLER = make_zip({"app.py": (
    "import os, boto3\n"
    "def handler(event, context):\n"
    "    me = boto3.client('lambda').get_function(FunctionName=context.function_name)\n"
    "    return {'endpoint': os.environ['AWS_ENDPOINT_URL'], 'boto3': boto3.__file__,\n"
    "            'runtime': me['Configuration']['Runtime'],\n"
    "            'key': os.environ['AWS_ACCESS_KEY_ID'][:4]}\n"
)})


def _invoke(server: Server, runtime: str, code: bytes, handler: str = "app.handler") -> dict:
    lam = server.client()
    name = f"img-{runtime.replace('.', '')}-{uuid.uuid4().hex[:6]}"
    lam.create_function(FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
                        Code={"ZipFile": code}, Timeout=30)
    response = lam.invoke(FunctionName=name, Payload=b"{}")
    body = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, body
    return body  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def on_images(server: Server) -> Server:
    if server.sandbox_backend() != "namespaces":
        pytest.skip("runtime images need the namespaces sandbox")
    return server


@pytest.mark.parametrize(("runtime", "runs"), [
    ("python3.11", "3.11"), ("python3.12", "3.13"), ("python3.13", "3.13"), ("python3.14", "3.14"),
])
def test_python_runtimes_run_on_their_image_and_report_the_interpreter(
        on_images: Server, runtime: str, runs: str) -> None:
    assert _invoke(on_images, runtime, VERSION_HANDLER) == {"python": runs}


@pytest.mark.parametrize(("runtime", "runs"), [
    ("nodejs20.x", "20"), ("nodejs22.x", "24"), ("nodejs24.x", "24"),
])
def test_nodejs_runtimes_run_on_their_image(on_images: Server, runtime: str, runs: str) -> None:
    assert _invoke(on_images, runtime, NODE_HANDLER, "index.handler") == {"node": runs}


def test_provided_al2023_runs_a_shell_bootstrap_on_its_own_os_image(on_images: Server) -> None:
    code = make_zip({"bootstrap": SHELL_BOOTSTRAP}, mode=0o755)
    assert _invoke(on_images, "provided.al2023", code, "function.handler") == {"os": "debian"}


def test_a_function_sees_nothing_of_the_host_file_system(on_images: Server) -> None:
    seen = _invoke(on_images, "python3.13", HOST_VIEW_HANDLER)
    assert seen["/usr/local/bin"] == []
    assert seen["/root"] in ([], "Permission denied", "No such file or directory")
    assert ".pyenv" not in seen["/root"]
    assert seen["/work"] == "No such file or directory"
    assert {"var", "usr", "tmp", "opt", "proc", "dev", "etc"} <= set(seen["/"])


def test_boto3_in_a_function_calls_lamina_with_its_role_credentials(
        start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Signatures are checked: only the execution role's temporary credentials
    # (issued to the environment) let the function's own call through.
    server = start_server(env={"LAMINA_ACCESS_KEYS": "AKIDLAMINATEST:secret-for-tests"},
                          name="lamina-signed")
    if server.sandbox_backend() != "namespaces":
        pytest.skip("runtime images need the namespaces sandbox")
    lam = server.client(key="AKIDLAMINATEST", secret="secret-for-tests")
    name = f"caller-{uuid.uuid4().hex[:6]}"
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": API_CALLER}, Timeout=30)
    response = lam.invoke(FunctionName=name, Payload=b"{}")
    body = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, body
    assert body["runtime"] == "python3.12"
    assert body["key"] == "ASIA"
    assert body["boto3"].startswith("/var/lang/lib/python3.13/site-packages/")
    assert body["endpoint"] == f"http://127.0.0.1:{server.port}"
