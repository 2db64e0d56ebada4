"""A function runs on a runtime image pulled from an OCI registry, end to end.

Lamina's python3.13 image is published to Debian's docker-registry on loopback, then
a real server whose image cache is empty and whose LAMINA_RUNTIME_IMAGE_REGISTRY
names that registry runs a python3.13 function: the image it runs on must be the one
it pulled, not one it built.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import pytest

from lamina.config import load_settings
from lamina.images import ImageStore, RuntimeImage, oci
from lamina.sandbox.namespaces import probe
from tests.conftest import Server, reachable
from tests.helpers import function_args, make_zip
from tests.test_images import registry  # noqa: F401  (the loopback registry fixture)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="runtime images and the namespaces sandbox need root"),
    pytest.mark.skipif(shutil.which("umoci") is None, reason="pushing an image needs umoci"),
]

# boto3 is imported during INIT (which runs unthrottled), not in the handler.
HANDLER = (
    "import sys\n"
    "import boto3\n"
    "def handler(event, context):\n"
    "    return {'python': sys.version.split()[0],\n"
    "            'debian': open('/etc/debian_version').read().strip(),\n"
    "            'boto3': boto3.__version__}\n"
)


def _progress(line: str) -> None:
    print(f"  | {line}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def built() -> RuntimeImage:
    """The python3.13 image of this machine's image cache (built first if missing)."""
    return ImageStore(load_settings().image_cache_dir).ensure("python3.13", _progress)


@pytest.mark.slow
def test_a_function_runs_on_its_runtime_image_pulled_from_a_registry(
        registry: str, built: RuntimeImage, start_server: Callable[..., Server],  # noqa: F811
        tmp_path: Path) -> None:
    reason = probe()
    if reason is not None:
        pytest.skip(f"the namespaces sandbox is not available here: {reason}")
    ref = oci.reference(registry, "python3.13")
    assert ref == f"{registry}/python:3.13"
    digest = oci.push_rootfs(built.root, ref, built.versions, _progress)

    # An empty cache the sandbox users can reach: nothing to find, nothing to build from.
    cache = reachable(tmp_path / "images")
    server = start_server({
        "LAMINA_SANDBOX": "namespaces",
        "LAMINA_RUNTIME_SOURCE": "image",
        "LAMINA_RUNTIME_IMAGE_REGISTRY": registry,
        "LAMINA_IMAGE_CACHE_DIR": str(cache),
    }, name="lamina-oci")
    lam = server.client()
    lam.create_function(**function_args("oci-python", make_zip({"app.py": HANDLER}),
                                       Runtime="python3.13", Timeout=30))
    # Pending while the server pulls the image (its cache is empty), then Active.
    lam.get_waiter("function_active_v2").wait(
        FunctionName="oci-python", WaiterConfig={"Delay": 1, "MaxAttempts": 240})
    answer = lam.invoke(FunctionName="oci-python", LogType="Tail")
    assert "FunctionError" not in answer, answer["Payload"].read()
    assert json.loads(answer["Payload"].read()) == {
        "python": built.versions["python"], "debian": built.versions["debian"],
        "boto3": built.versions["boto3"],
    }

    # The one image in the server's cache is the pushed one, pulled from the registry.
    [pulled] = ImageStore(cache).list()
    assert (pulled.name, pulled.digest, pulled.source) == ("python3.13", digest, f"oci {ref}")
    assert pulled.root == cache / digest.removeprefix("sha256:") / "rootfs"
    assert json.loads((cache / "refs" / "python3.13.json").read_text()) == {"reference": ref, "digest": digest}
    assert server.sandbox_backend() == "namespaces"
