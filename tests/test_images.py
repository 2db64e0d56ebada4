"""Runtime images: built from Debian's packages, pulled from a real registry, cached.

The Debian images are built once into the user's image cache (`make test` runs
`lamina runtimes install --all` first) and reused by every later run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from lamina.config import load_settings
from lamina.images import ImagePullError, ImageStore, RuntimeImage, oci
from lamina.images.recipes import MOUNT_POINTS, RECIPES
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mmdebstrap") is None,
    reason="building runtime images needs root and mmdebstrap (scripts/install-system-packages.sh)",
)

BWRAP = shutil.which("bwrap")


def _progress(line: str) -> None:
    print(f"  | {line}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def shared_store() -> ImageStore:
    return ImageStore(load_settings().image_cache_dir)


@pytest.fixture(scope="session")
def images(shared_store: ImageStore) -> dict[str, RuntimeImage]:
    """Every runtime image, built once per machine (minutes the first time)."""
    return {name: shared_store.ensure(name, _progress) for name in RECIPES}


def _run_in(image: RuntimeImage, *argv: str) -> str:
    """Run argv with the image as a read-only / and Lambda's user, as the sandbox will."""
    if BWRAP is None:
        pytest.skip("bubblewrap is not installed")
    done = subprocess.run(
        [BWRAP, "--ro-bind", str(image.root), "/", "--proc", "/proc", "--dev", "/dev",
         "--tmpfs", "/tmp", "--unshare-all", "--uid", "993", "--gid", "990", "--clearenv",
         "--setenv", "PATH", "/usr/bin:/bin", *argv],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_image_has_lambdas_layout_and_nothing_writable(images, name):
    image = images[name]
    root = image.root
    assert image.digest == RECIPES[name].digest()
    assert image.source == f"debian {RECIPES[name].suite} (mmdebstrap)"
    for mount_point in MOUNT_POINTS:
        assert (root / mount_point).is_dir() and not (root / mount_point).is_symlink()
    assert list((root / "dev").iterdir()) == []
    assert (root / "etc/resolv.conf").is_file() and (root / "etc/resolv.conf").stat().st_size == 0
    passwd = (root / "etc/passwd").read_text().splitlines()
    assert "sbx_user1051:x:993:990::/home/sbx_user1051:/sbin/nologin" in passwd
    assert {line.split(":")[0] for line in passwd} == {"root", "sbx_user1051", "nobody"}
    assert not (root / "usr/share/man").exists() and not (root / "var/lib/apt/lists").exists()
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in dirnames + filenames:
            info = os.lstat(os.path.join(dirpath, entry))
            assert (info.st_uid, info.st_gid) == (0, 0), os.path.join(dirpath, entry)
            if not stat.S_ISLNK(info.st_mode):
                assert not info.st_mode & (stat.S_IWOTH | stat.S_ISUID | stat.S_ISGID), \
                    os.path.join(dirpath, entry)
    record = json.loads((root.parent / "image.json").read_text())
    assert record["name"] == name and record["size"] == image.size > 10_000_000
    assert record["build_seconds"] > 0 and record["created"]


@pytest.mark.parametrize("name", ["python3.11", "python3.13", "python3.14"])
def test_python_images_run_their_exact_python_with_boto3_where_lambda_has_it(images, name):
    image = images[name]
    minor = name.removeprefix("python")
    site = f"/var/lang/lib/python{minor}/site-packages"
    out = _run_in(image, f"/usr/bin/python{minor}", "-S", "-c",
                  f"import sys; sys.path.append('{site}'); import boto3, ssl, json, zoneinfo; "
                  "print('%d.%d.%d' % sys.version_info[:3], boto3.__version__, boto3.__file__)")
    version, boto3_version, boto3_file = out.split()
    assert version == image.versions["python"] and version.startswith(minor + ".")
    assert boto3_version == image.versions["boto3"]
    assert boto3_file.startswith(site)
    # Compiled when the image was built: a read-only image cannot cache bytecode later.
    assert list((image.root / site.lstrip("/") / "boto3/__pycache__").glob(f"*.cpython-{minor.replace('.', '')}.pyc"))
    assert os.readlink(image.root / f"var/lang/bin/python{minor}") == f"/usr/bin/python{minor}"


@pytest.mark.parametrize("name", ["nodejs20", "nodejs24"])
def test_nodejs_images_run_their_node(images, name):
    image = images[name]
    version = _run_in(image, "/usr/bin/node", "-e", "console.log(process.versions.node)")
    assert version == image.versions["node"] and version.split(".")[0] == name.removeprefix("nodejs")


def test_the_provided_image_runs_a_shell_curl_and_python_bootstraps(images):
    image = images["provided"]
    out = _run_in(image, "/bin/sh", "-c", "curl --version | head -1; python3 -c 'import json, http.client; "
                  "import sys; print(sys.version.split()[0])'")
    assert out.splitlines()[0].startswith(f"curl {image.versions['curl']}")
    assert out.splitlines()[1] == image.versions["python"] and image.versions["python"].startswith("3.11.")


def test_a_second_ensure_reuses_the_cached_image(shared_store, images):
    started = time.monotonic()
    again = shared_store.ensure("python3.13")
    assert again == images["python3.13"] and time.monotonic() - started < 1
    assert shared_store.installed("python3.13") == again
    assert {image.digest for image in shared_store.list()} >= {image.digest for image in images.values()}


# -- the OCI path, with a real registry on loopback ----------------------------------


@contextlib.contextmanager
def docker_registry(base: Path, htpasswd: Path | None = None) -> Iterator[int]:
    """Debian's docker-registry serving from `base` on a free loopback port (asking
    for the users of `htpasswd`, if given); its port."""
    port = free_port()
    auth = (f"auth:\n  htpasswd:\n    realm: lamina-test\n    path: {htpasswd}\n"
            if htpasswd is not None else "")
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {base / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n" + auth)
    log = open(base / "registry.log", "wb")
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, (base / "registry.log").read_text()
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry (the distribution registry) on a free loopback port."""
    if shutil.which("docker-registry") is None or shutil.which("skopeo") is None:
        pytest.skip("docker-registry and skopeo are not installed")
    with docker_registry(tmp_path_factory.mktemp("registry")) as port:
        yield f"127.0.0.1:{port}/lambda"


@pytest.fixture(scope="module")
def pushed(registry: str, images) -> tuple[str, str]:
    """The python3.13 image published to the registry: (reference, digest)."""
    image = images["python3.13"]
    ref = oci.reference(registry, "python3.13")
    assert ref == f"{registry}/python:3.13"
    return ref, oci.push_rootfs(image.root, ref, image.versions, _progress)


def test_an_image_pulled_from_a_registry_is_the_pushed_one(tmp_path, registry, pushed, images):
    ref, digest = pushed
    store = ImageStore(tmp_path / "cache", registry=registry)
    lines: list[str] = []
    pulled = store.ensure("python3.13", lines.append)
    assert pulled.digest == digest and pulled.source == f"oci {ref}"
    assert pulled.root == tmp_path / "cache" / digest.removeprefix("sha256:") / "rootfs"
    assert pulled.versions == images["python3.13"].versions and not pulled.own_runtime
    assert any("skopeo copy" in line for line in lines)
    assert (pulled.root / "var/lang/lib/python3.13/site-packages/boto3/__init__.py").is_file()
    assert "sbx_user1051" in (pulled.root / "etc/passwd").read_text()
    assert _run_in(pulled, "/usr/bin/python3.13", "-S", "-c", "import sys; print(sys.version.split()[0])") \
        == images["python3.13"].versions["python"]
    # Found again without asking the registry; nothing left in tmp/.
    assert store.installed("python3.13") == pulled
    assert list((tmp_path / "cache/tmp").iterdir()) == []


def test_two_servers_pulling_the_same_image_at_once_end_with_one_copy(tmp_path, registry, pushed):
    cache = tmp_path / "cache"
    # A build that died half-way: its leftovers must not count and are cleared.
    digest = pushed[1].removeprefix("sha256:")
    (cache / "tmp" / f"{digest}.dead0000" / "rootfs").mkdir(parents=True)
    script = (
        "import sys; from pathlib import Path; from lamina.images import ImageStore; "
        f"image = ImageStore(Path({str(cache)!r}), registry={registry!r}).ensure('python3.13', "
        "lambda line: print(line, flush=True)); print('DIGEST', image.digest, image.root)"
    )
    runs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    results = {line for out in outputs for line in out.splitlines() if line.startswith("DIGEST")}
    assert len(results) == 1
    assert sorted(p.name for p in cache.iterdir()) == sorted([digest, "locks", "refs", "tmp"])
    assert list((cache / "tmp").iterdir()) == []


def test_a_registry_that_fails_falls_back_to_the_debian_build(shared_store, images):
    dead = f"127.0.0.1:{free_port()}/lambda"
    store = ImageStore(shared_store.cache_dir, registry=dead)
    lines: list[str] = []
    image = store.ensure("python3.13", lines.append, refresh=True)
    assert image == images["python3.13"]
    assert any(f"{dead}/python:3.13 could not be pulled" in line and "building from Debian" in line
               for line in lines)


def test_an_image_with_no_recipe_and_no_registry_image_is_an_error(tmp_path, registry):
    with pytest.raises(ImagePullError):
        ImageStore(tmp_path / "cache", registry=registry).ensure("ruby3.4")


def test_tls_is_skipped_only_for_loopback_and_named_registries():
    assert not oci.tls_verify("127.0.0.1:5000/lambda/python:3.13")
    assert not oci.tls_verify("localhost:5000/python:3.13")
    assert not oci.tls_verify("[::1]:5000/python:3.13")
    assert oci.tls_verify("registry.internal:5000/python:3.13")
    assert not oci.tls_verify("registry.internal:5000/python:3.13", ("registry.internal:5000",))
