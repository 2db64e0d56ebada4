"""Container image functions (PackageType Image), end to end, with no container engine.

Images are built here with umoci from Lamina's python3.13 runtime image (one base
layer) plus a small layer per case, pushed with skopeo to Debian's docker-registry on
loopback, and run by a real server whose image cache is a fresh directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import bcrypt
import pytest
from botocore.exceptions import ClientError

from lamina.config import load_settings
from lamina.images import ImagePullError, ImageStore
from lamina.images.containers import ContainerImages
from lamina.sandbox.namespaces import probe
from tests.conftest import Server, reachable
from tests.helpers import ROLE
from tests.helpers import make_zip as _zip
from tests.test_images import docker_registry, registry  # noqa: F401  (the loopback registry fixture)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="container images and the namespaces sandbox need root"),
    pytest.mark.skipif(shutil.which("umoci") is None or shutil.which("skopeo") is None,
                       reason="building images needs umoci and skopeo"),
]

PYTHON = "/usr/bin/python3.13"
HANDLER = (
    "import os\n"
    "def handler(event, context):\n"
    "    writable = {}\n"
    "    for path in ('/tmp/probe', '/var/task/probe', '/probe'):\n"
    "        try:\n"
    "            open(path, 'w').write('x')\n"
    "            writable[path] = True\n"
    "        except OSError:\n"
    "            writable[path] = False\n"
    "    return {'event': event, 'cwd': os.getcwd(), 'writable': writable,\n"
    "            'version': open('/var/task/version.txt').read().strip(),\n"
    "            'env': {k: os.environ.get(k) for k in ('FROM_IMAGE', 'SHADOWED', 'AWS_LAMBDA_RUNTIME_API',\n"
    "                                                   '_HANDLER', 'AWS_LAMBDA_FUNCTION_NAME',\n"
    "                                                   'LAMBDA_TASK_ROOT')}}\n"
)
# What AWS's base images do: /lambda-entrypoint.sh takes the handler (CMD) as its
# argument and execs the runtime client in /var/runtime. Here the client is Lamina's.
ENTRYPOINT_SH = (
    "#!/bin/sh\n"
    'export _HANDLER="$1"\n'
    "exec /var/runtime/bootstrap\n"
)
RUNTIME_BOOTSTRAP = f"#!/bin/sh\nexec {PYTHON} -u /var/runtime/python/bootstrap.py /opt\n"
# A custom runtime as its own ENTRYPOINT: the Runtime API spoken by hand.
CUSTOM_BOOTSTRAP = (
    f"#!{PYTHON}\n"
    "import json, os, sys, urllib.request\n"
    "api = 'http://' + os.environ['AWS_LAMBDA_RUNTIME_API'] + '/2018-06-01/runtime/invocation/'\n"
    "while True:\n"
    "    with urllib.request.urlopen(api + 'next') as response:\n"
    "        request_id = response.headers['Lambda-Runtime-Aws-Request-Id']\n"
    "        event = json.loads(response.read())\n"
    "    body = json.dumps({'custom': True, 'argv': sys.argv[1:], 'cwd': os.getcwd(), 'event': event,\n"
    "                       'greeting': os.environ.get('GREETING')}).encode()\n"
    "    urllib.request.urlopen(urllib.request.Request(api + request_id + '/response', body, method='POST'))\n"
)


def _run(*command: str, cwd: Path | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"
    return done.stdout


def _layer_tar(path: Path, files: dict[str, tuple[str | bytes, int]]) -> Path:
    with tarfile.open(path, "w") as archive:
        directories = sorted({str(Path(name).parent) for name in files} - {"."})
        for directory in directories:
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        for name, (content, mode) in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            archive.addfile(info, io.BytesIO(data))
    return path


class Images:
    """An OCI layout of test images: a python3.13 base layer and small layers on it."""

    def __init__(self, workdir: Path, registry_name: str) -> None:
        self.workdir = workdir
        self.layout = workdir / "layout"
        self.registry = registry_name
        self._count = 0
        _run("umoci", "init", "--layout", str(self.layout))
        _run("umoci", "new", "--image", f"{self.layout}:empty")

    def base(self, rootfs: Path) -> str:
        tar = self.workdir / "base.tar"
        _run("tar", "-C", str(rootfs), "-cf", str(tar), ".")
        _run("umoci", "raw", "add-layer", "--image", f"{self.layout}:empty", "--tag", "base", str(tar))
        tar.unlink()
        return "base"

    def derive(self, parent: str, files: dict[str, tuple[str | bytes, int]], *,
               entrypoint: list[str] | None = None, cmd: list[str] | None = None,
               workdir: str | None = None, env: dict[str, str] | None = None) -> str:
        self._count += 1
        tag = f"derived{self._count}"
        tar = _layer_tar(self.workdir / f"{tag}.tar", files)
        _run("umoci", "raw", "add-layer", "--image", f"{self.layout}:{parent}", "--tag", tag, str(tar))
        args = [f"--config.entrypoint={item}" for item in entrypoint or []]
        args += [f"--config.cmd={item}" for item in cmd or []]
        args += [f"--config.env={key}={value}" for key, value in (env or {}).items()]
        if workdir:
            args.append(f"--config.workingdir={workdir}")
        if args:
            _run("umoci", "config", "--image", f"{self.layout}:{tag}", *args)
        return tag

    def push(self, tag: str, repository: str) -> tuple[str, str]:
        """Push `tag` as REGISTRY/repository; (ImageUri, manifest digest hex)."""
        uri = f"{self.registry}/{repository}"
        _run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{self.layout}:{tag}", f"docker://{uri}")
        raw = _run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{uri}")
        return uri, hashlib.sha256(raw.encode()).hexdigest()


def _python_app(version: str, handler: str = HANDLER) -> dict[str, tuple[str | bytes, int]]:
    return {
        "lambda-entrypoint.sh": (ENTRYPOINT_SH, 0o755),
        "var/runtime/bootstrap": (RUNTIME_BOOTSTRAP, 0o755),
        "var/runtime/python/bootstrap.py": (
            (Path(__file__).parents[1] / "src/lamina/runtimes/clients/python/bootstrap.py").read_text(), 0o644),
        "var/task/app.py": (handler, 0o644),
        "var/task/version.txt": (version, 0o644),
    }


APP_CONFIG: dict[str, Any] = {"entrypoint": ["/lambda-entrypoint.sh"], "cmd": ["app.handler"],
                              "workdir": "/var/task",
                              "env": {"FROM_IMAGE": "image", "SHADOWED": "image", "LAMBDA_TASK_ROOT": "/var/task"}}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory, registry: str) -> Images:  # noqa: F811
    base = ImageStore(load_settings().image_cache_dir).ensure("python3.13")
    built = Images(tmp_path_factory.mktemp("oci"), registry)
    built.base(base.root)
    return built


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh image cache, which sees the python3.13 runtime image of the machine's
    (for .zip functions beside the images: it is not built again in here)."""
    directory = reachable(tmp_path_factory.mktemp("container-cache"))
    runtime = ImageStore(load_settings().image_cache_dir).ensure("python3.13")
    (directory / runtime.root.parent.name).symlink_to(runtime.root.parent)
    return directory


@pytest.fixture(scope="module")
def server(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    reason = probe()
    if reason is not None:
        pytest.skip(f"the namespaces sandbox is not available here: {reason}")
    srv = Server(tmp_path_factory.mktemp("lamina-images") / "data", {
        "LAMINA_SANDBOX": "namespaces", "LAMINA_IMAGE_CACHE_DIR": str(cache)})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def lam(server: Server) -> Any:
    return server.client()


def _create(lam: Any, name: str, uri: str, **extra: Any) -> dict[str, Any]:
    return lam.create_function(FunctionName=name, Role=ROLE, PackageType="Image", Code={"ImageUri": uri},
                               Timeout=30, **extra)


def _active(lam: Any, name: str, qualifier: str | None = None) -> dict[str, Any]:
    args = {"FunctionName": name, **({"Qualifier": qualifier} if qualifier else {})}
    deadline = time.monotonic() + 300
    while True:
        config = lam.get_function_configuration(**args)
        if config["State"] != "Pending" and config.get("LastUpdateStatus") != "InProgress":
            return config
        assert time.monotonic() < deadline, config
        time.sleep(0.5)


def _invoke(lam: Any, name: str, event: Any = None, qualifier: str | None = None) -> Any:
    args = {"FunctionName": name, "Payload": json.dumps(event or {}),
            **({"Qualifier": qualifier} if qualifier else {})}
    answer = lam.invoke(**args)
    payload = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, payload
    return payload


def test_a_python_image_runs_as_on_lambda_with_its_digest_as_code_sha256(lam: Any, images: Images) -> None:
    uri, digest = images.push(images.derive("base", _python_app("one"), **APP_CONFIG), "python-app:v1")
    created = _create(lam, "image-python", uri, Environment={"Variables": {"SHADOWED": "function"}})
    assert created["PackageType"] == "Image"
    assert created["CodeSha256"] == digest and created["CodeSize"] == 0
    assert created["State"] == "Pending" and created["StateReasonCode"] == "Creating"
    assert "Runtime" not in created and "Handler" not in created
    assert _active(lam, "image-python")["State"] == "Active"

    code = lam.get_function(FunctionName="image-python")["Code"]
    repository = uri.rsplit(":", 1)[0]
    assert code == {"RepositoryType": "ECR", "ImageUri": uri, "ResolvedImageUri": f"{repository}@sha256:{digest}"}

    answer = _invoke(lam, "image-python", {"n": 1})
    assert answer["event"] == {"n": 1} and answer["version"] == "one" and answer["cwd"] == "/var/task"
    # Only /tmp is writable; the image is read-only, /var/task included.
    assert answer["writable"] == {"/tmp/probe": True, "/var/task/probe": False, "/probe": False}
    env = answer["env"]
    assert env["FROM_IMAGE"] == "image" and env["SHADOWED"] == "function"
    assert env["_HANDLER"] == "app.handler" and env["AWS_LAMBDA_FUNCTION_NAME"] == "image-python"
    assert env["AWS_LAMBDA_RUNTIME_API"] and env["LAMBDA_TASK_ROOT"] == "/var/task"


def test_an_image_whose_entrypoint_is_its_own_bootstrap_runs_unmodified(lam: Any, images: Images) -> None:
    tag = images.derive("base", {"bootstrap": (CUSTOM_BOOTSTRAP, 0o755)}, entrypoint=["/bootstrap"],
                        env={"GREETING": "hello"})
    uri, _digest = images.push(tag, "custom-bootstrap:latest")
    _create(lam, "image-custom", uri)
    assert _active(lam, "image-custom")["State"] == "Active"
    assert _invoke(lam, "image-custom", {"a": 1}) == {
        "custom": True, "argv": [], "cwd": "/", "event": {"a": 1}, "greeting": "hello"}


def test_image_config_overrides_entrypoint_command_and_working_directory(lam: Any, images: Images) -> None:
    tag = images.derive("base", {"bootstrap": (CUSTOM_BOOTSTRAP, 0o755), "elsewhere/bootstrap": (CUSTOM_BOOTSTRAP, 0o755)},
                        entrypoint=["/bootstrap"], cmd=["from-image"])
    uri, _digest = images.push(tag, "custom-bootstrap:configured")
    image_config = {"EntryPoint": ["/elsewhere/bootstrap"], "Command": ["one", "two"], "WorkingDirectory": "/tmp"}
    created = _create(lam, "image-config", uri, ImageConfig=image_config)
    assert created["ImageConfigResponse"] == {"ImageConfig": image_config}
    _active(lam, "image-config")
    answer = _invoke(lam, "image-config")
    assert (answer["argv"], answer["cwd"]) == (["one", "two"], "/tmp")

    # Only Command: the image's ENTRYPOINT stays, its CMD goes.
    lam.update_function_configuration(FunctionName="image-config", ImageConfig={"Command": ["three"]})
    _active(lam, "image-config")
    answer = _invoke(lam, "image-config")
    assert (answer["argv"], answer["cwd"]) == (["three"], "/")
    config = lam.get_function_configuration(FunctionName="image-config")
    assert config["ImageConfigResponse"] == {"ImageConfig": {"Command": ["three"]}}


def test_a_published_version_keeps_its_digest_after_the_tag_moves(lam: Any, images: Images) -> None:
    first_uri, first = images.push(images.derive("base", _python_app("first"), **APP_CONFIG), "moving:stable")
    _create(lam, "image-moving", first_uri)
    _active(lam, "image-moving")
    version = lam.publish_version(FunctionName="image-moving")
    assert version["CodeSha256"] == first

    second_uri, second = images.push(images.derive("base", _python_app("second"), **APP_CONFIG), "moving:stable")
    assert second_uri == first_uri and second != first
    # Until UpdateFunctionCode, $LATEST runs the digest it resolved at create, as on Lambda.
    assert _invoke(lam, "image-moving")["version"] == "first"
    updated = lam.update_function_code(FunctionName="image-moving", ImageUri=second_uri)
    assert updated["CodeSha256"] == second
    _active(lam, "image-moving")
    assert _invoke(lam, "image-moving")["version"] == "second"
    assert _invoke(lam, "image-moving", qualifier=version["Version"])["version"] == "first"
    code = lam.get_function(FunctionName="image-moving", Qualifier=version["Version"])["Code"]
    assert code["ResolvedImageUri"].endswith(f"@sha256:{first}")


def test_a_docker_save_tarball_imported_with_the_cli_runs(lam: Any, images: Images, cache: Path,
                                                          tmp_path: Path) -> None:
    tag = images.derive("base", _python_app("imported"), **APP_CONFIG)
    archive = tmp_path / "fn.tar"
    _run("skopeo", "copy", "--quiet", f"oci:{images.layout}:{tag}", f"docker-archive:{archive}:myfn:v7")
    env = {**os.environ, "LAMINA_IMAGE_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-m", "lamina.cli.main", "image", "import", str(archive)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr + done.stdout
    uri = done.stdout.strip().splitlines()[-1]
    assert uri == "lamina.local/myfn:v7"
    listing = subprocess.run([sys.executable, "-m", "lamina.cli.main", "image", "list"],
                             capture_output=True, text=True, env=env)
    assert "lamina.local/myfn:v7" in listing.stdout

    created = _create(lam, "image-imported", uri)
    assert _active(lam, "image-imported")["State"] == "Active"
    assert _invoke(lam, "image-imported")["version"] == "imported"
    assert lam.get_function(FunctionName="image-imported")["Code"]["ResolvedImageUri"] == \
        f"lamina.local/myfn@sha256:{created['CodeSha256']}"


def test_an_oci_layout_directory_imported_under_a_name_of_its_own_runs(lam: Any, images: Images, cache: Path,
                                                                      tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    tag = images.derive("base", {"bootstrap": (CUSTOM_BOOTSTRAP, 0o755)}, entrypoint=["/bootstrap"])
    _run("skopeo", "copy", "--quiet", f"oci:{images.layout}:{tag}", f"oci:{layout}:latest")
    done = subprocess.run([sys.executable, "-m", "lamina.cli.main", "image", "import", str(layout),
                           "--name", "team/custom:2"], capture_output=True, text=True,
                          env={**os.environ, "LAMINA_IMAGE_CACHE_DIR": str(cache)})
    assert done.returncode == 0, done.stderr + done.stdout
    uri = done.stdout.strip().splitlines()[-1]
    assert uri == "lamina.local/team/custom:2"
    _create(lam, "image-oci-layout", uri)
    assert _active(lam, "image-oci-layout")["State"] == "Active"
    assert _invoke(lam, "image-oci-layout", {"b": 2})["event"] == {"b": 2}


def test_layers_shared_by_two_images_are_unpacked_once(lam: Any, images: Images, cache: Path) -> None:
    layers = sorted(path.name for path in (cache / "layers").iterdir())
    # The python3.13 base layer is in every image pulled so far, and unpacked once
    # (docker save keeps layers uncompressed: an imported image's have other digests).
    containers = [image for image in ContainerImages(cache).list() if image.source.startswith("oci ")]
    assert len(containers) >= 3
    bases = {image.layers[0] for image in containers}
    assert len(bases) == 1 and bases.pop().split(":")[1] in layers
    assert not list((cache / "tmp").iterdir())


@pytest.mark.parametrize("suffix, message", [
    ("missing-repository:latest", "does not exist. Provide a valid source image."),
    ("python-app:no-such-tag", "does not exist. Provide a valid source image."),
    ("//127.0.0.1:9/nothing-listens/here:latest", "does not exist. Provide a valid source image."),
])
def test_a_missing_image_tag_or_registry_is_refused_at_create(lam: Any, images: Images, registry: str,  # noqa: F811
                                                              suffix: str, message: str) -> None:
    uri = suffix[2:] if suffix.startswith("//") else f"{registry}/{suffix}"
    with pytest.raises(ClientError) as raised:
        _create(lam, "image-missing", uri)
    error = raised.value.response["Error"]
    assert error["Code"] == "InvalidParameterValueException"
    assert error["Message"] == f"Source image {uri} {message}"


def test_an_image_uri_without_tag_or_digest_is_not_valid(lam: Any, registry: str) -> None:  # noqa: F811
    uri = f"{registry}/python-app"
    with pytest.raises(ClientError) as raised:
        _create(lam, "image-untagged", uri)
    assert raised.value.response["Error"]["Message"] == \
        f"Source image {uri} is not valid. Provide a valid source image."


def test_an_image_for_another_architecture_is_refused_at_create(lam: Any, images: Images) -> None:
    tag = images.derive("base", {"bootstrap": (CUSTOM_BOOTSTRAP, 0o755)}, entrypoint=["/bootstrap"])
    _run("umoci", "config", "--image", f"{images.layout}:{tag}", "--architecture=arm64")
    uri, _digest = images.push(tag, "arm-only:latest")
    with pytest.raises(ClientError) as raised:
        _create(lam, "image-arm", uri)
    error = raised.value.response["Error"]
    assert error["Code"] == "InvalidParameterValueException"
    assert error["Message"].startswith(
        f"The image manifest, config or layer media type for the source image {uri} is not supported.")


def test_package_types_keep_to_their_own_kind_of_code(lam: Any, images: Images) -> None:
    uri, _digest = images.push(images.derive("base", {"bootstrap": (CUSTOM_BOOTSTRAP, 0o755)},
                                             entrypoint=["/bootstrap"]), "kinds:latest")
    _create(lam, "image-kinds", uri)
    _active(lam, "image-kinds")
    with pytest.raises(ClientError) as raised:
        lam.update_function_code(FunctionName="image-kinds", ZipFile=b"PK\x05\x06" + b"\0" * 18)
    assert raised.value.response["Error"]["Message"] == \
        "Please provide ImageUri when updating a function with packageType Image."
    lam.create_function(FunctionName="zip-kinds", Role=ROLE, Runtime="python3.13", Handler="app.handler",
                        Code={"ZipFile": _zip({"app.py": "def handler(e, c):\n    return e\n"})})
    with pytest.raises(ClientError) as raised:
        lam.update_function_code(FunctionName="zip-kinds", ImageUri=uri)
    assert raised.value.response["Error"]["Message"] == \
        "Please don't provide ImageUri when updating a function with packageType Zip."


def test_an_image_with_neither_entrypoint_nor_cmd_fails_as_an_invalid_entrypoint(lam: Any, images: Images) -> None:
    uri, _digest = images.push(images.derive("base", {"var/task/x": ("", 0o644)}), "no-entrypoint:latest")
    _create(lam, "image-no-entrypoint", uri)
    _active(lam, "image-no-entrypoint")
    answer = lam.invoke(FunctionName="image-no-entrypoint")
    assert answer["FunctionError"] == "Unhandled"
    assert json.loads(answer["Payload"].read())["errorType"] == "Runtime.InvalidEntrypoint"


def test_an_image_over_the_size_limit_fails_with_invalid_image(
        images: Images, cache: Path, start_server: Callable[..., Server]) -> None:
    # The base layer is about 140 MB unpacked and under 100 MB compressed: accepted at
    # create, refused once unpacked.
    uri, _digest = images.push(images.derive("base", _python_app("big"), **APP_CONFIG), "python-app:big")
    small = start_server({"LAMINA_SANDBOX": "namespaces", "LAMINA_IMAGE_CACHE_DIR": str(cache),
                          "LAMINA_MAX_IMAGE_BYTES": str(100 * 1024 * 1024)}, name="lamina-small-images")
    lam = small.client()
    _create(lam, "image-too-big", uri)
    config = _active(lam, "image-too-big")
    assert (config["State"], config["StateReasonCode"]) == ("Failed", "InvalidImage")
    with pytest.raises(ClientError) as raised:
        lam.invoke(FunctionName="image-too-big")
    assert raised.value.response["Error"]["Code"] == "ResourceConflictException"


# -- an image with awslambdaric, AWS's runtime interface client from PyPI -----------------

RIC_HANDLER = (
    "import awslambdaric, os\n"
    "def handler(event, context):\n"
    "    return {'ric': awslambdaric.__file__, 'event': event, 'request_id': context.aws_request_id}\n"
)


@pytest.fixture(scope="module")
def ric_packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """awslambdaric and its dependencies, built for the image's CPython 3.13."""
    target = tmp_path_factory.mktemp("awslambdaric")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(target),
         "--no-compile", "--only-binary=:all:", "--python-version", "3.13", "--implementation", "cp",
         "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64", "awslambdaric"],
        capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"awslambdaric could not be installed from the package index: {done.stderr[-500:]}")
    return target


def test_an_image_with_awslambdaric_as_entrypoint_runs_unmodified(lam: Any, images: Images,
                                                                  ric_packages: Path) -> None:
    files: dict[str, tuple[str | bytes, int]] = {"var/task/app.py": (RIC_HANDLER, 0o644)}
    for path in ric_packages.rglob("*"):
        if path.is_file():
            files[f"var/lang/ric/{path.relative_to(ric_packages)}"] = (path.read_bytes(), 0o755 if path.suffix == ".so" else 0o644)
    # Its native part needs libstdc++, which the minimal runtime image lacks: what a
    # Dockerfile's `apt-get install libstdc++6` adds, taken from this host.
    libstdcxx = Path("/usr/lib/x86_64-linux-gnu/libstdc++.so.6").resolve()
    if not libstdcxx.is_file():
        pytest.skip("no libstdc++.so.6 on this host to add to the image")
    files["usr/lib/x86_64-linux-gnu/libstdc++.so.6"] = (libstdcxx.read_bytes(), 0o644)
    tag = images.derive("base", files, entrypoint=[PYTHON, "-m", "awslambdaric"], cmd=["app.handler"],
                        workdir="/var/task", env={"PYTHONPATH": "/var/lang/ric"})
    uri, _digest = images.push(tag, "awslambdaric:latest")
    _create(lam, "image-ric", uri)
    assert _active(lam, "image-ric")["State"] == "Active"
    answer = _invoke(lam, "image-ric", {"ric": True})
    assert answer["ric"].startswith("/var/lang/ric/awslambdaric/") and answer["event"] == {"ric": True}
    assert answer["request_id"]


# -- registry credentials ---------------------------------------------------------------


@pytest.fixture(scope="module")
def private_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A docker-registry on loopback that wants a user and password (htpasswd, bcrypt)."""
    base = tmp_path_factory.mktemp("private-registry")
    # The registry takes no other hash than bcrypt.
    (base / "htpasswd").write_text(f"lamina:{bcrypt.hashpw(b'secret', bcrypt.gensalt()).decode()}\n")
    with docker_registry(base, base / "htpasswd") as port:
        yield f"127.0.0.1:{port}"


def _auth_file(path: Path, host: str, password: str) -> None:
    import base64
    token = base64.b64encode(f"lamina:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))


def test_registry_credentials_come_from_a_docker_config_file(
        images: Images, private_registry: str, cache: Path, tmp_path: Path,
        start_server: Callable[..., Server]) -> None:
    uri = f"{private_registry}/private/app:v1"
    _run("skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", "lamina:secret",
         f"oci:{images.layout}:{images.derive('base', _python_app('private'), **APP_CONFIG)}", f"docker://{uri}")
    auth = reachable(tmp_path) / "config.json"
    _auth_file(auth, private_registry, "wrong")
    srv = start_server({"LAMINA_SANDBOX": "namespaces", "LAMINA_IMAGE_CACHE_DIR": str(cache),
                        "LAMINA_REGISTRY_AUTH_FILE": str(auth)}, name="lamina-private")
    lam = srv.client()
    with pytest.raises(ClientError) as raised:
        _create(lam, "image-private", uri)
    assert raised.value.response["Error"] == {
        "Code": "InvalidParameterValueException",
        "Message": "Lambda does not have permission to access the ECR image. Check the ECR permissions."}

    _auth_file(auth, private_registry, "secret")
    _create(lam, "image-private", uri)
    assert _active(lam, "image-private")["State"] == "Active"
    assert _invoke(lam, "image-private")["version"] == "private"


def test_a_pull_that_fails_half_way_leaves_nothing_half_written(
        images: Images, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    first = images.derive("empty", {"first.bin": (os.urandom(256 * 1024), 0o644)})
    second = images.derive(first, {"second.bin": (os.urandom(256 * 1024), 0o644)}, entrypoint=["/x"])
    uri, digest = images.push(second, "half-way:latest")
    manifest = json.loads(_run("skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{uri}"))
    # The registry loses the second layer's data: the pull fails after the first.
    lost = manifest["layers"][1]["digest"].split(":")[1]
    [blob] = {path.resolve() for path in tmp_path_factory.getbasetemp().glob(
        f"registry*/data/docker/registry/v2/blobs/sha256/*/{lost}/data")}
    blob.unlink()

    cache = tmp_path / "cache"
    store = ContainerImages(cache)
    with pytest.raises(ImagePullError):
        store.ensure(f"{uri.rsplit(':', 1)[0]}@sha256:{digest}")
    assert store.installed(f"sha256:{digest}") is None
    assert not (cache / "containers" / digest).exists()
    assert list((cache / "tmp").iterdir()) == []
    # A layer is there whole (its size recorded last, after a rename) or not at all.
    for layer in (cache / "layers").iterdir() if (cache / "layers").exists() else []:
        assert (layer / ".size").is_file() and (layer / "tree").is_dir()
    assert not any(path.name.startswith(".") or "tmp" in path.name
                   for path in (cache / "blobs").rglob("*") if path.is_file())
