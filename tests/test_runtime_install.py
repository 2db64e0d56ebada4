"""A function whose runtime image is not on the machine yet is Pending while the image
is made in the background, then Active, or Failed with a reason that says what to do.

Builds fail for real and fast: a fresh image cache and a Debian mirror on a closed
loopback port. Holding the image's build lock (as another server building it would)
keeps a function Pending for as long as a test needs, with no timing involved.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from botocore.exceptions import WaiterError

from lamina.config import load_settings
from lamina.images import ImageStore, oci
from lamina.images.recipes import RECIPES
from tests.conftest import Server, reachable
from tests.helpers import aws_error, error_message, function_args, make_zip, wait_active
from tests.test_images import registry  # noqa: F401  (a fixture)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mmdebstrap") is None,
    reason="runtime images need root and mmdebstrap (scripts/install-system-packages.sh)",
)

CLOSED_MIRROR = "http://127.0.0.1:9/debian"
HELLO = make_zip({"app.py": "import sys\ndef handler(event, context):\n"
                            "    return {'python': '%d.%d' % sys.version_info[:2], **event}\n"})
FAST = {"WaiterConfig": {"Delay": 0.2, "MaxAttempts": 300}}


@contextlib.contextmanager
def building(cache: Path, image: str) -> Iterator[None]:
    """Hold the build lock of `image` in `cache`: a server wanting it waits meanwhile."""
    (cache / "locks").mkdir(parents=True, exist_ok=True)
    with open(cache / "locks" / f"{RECIPES[image].digest().split(':')[-1]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def assert_nothing_half_written(cache: Path) -> None:
    """Every image in the cache is complete (has its image.json); no build left behind."""
    for entry in cache.iterdir():
        if entry.name in ("locks", "tmp", "refs"):
            continue
        assert (entry / "image.json").is_file(), f"{entry} is not a complete image"
    assert not any((cache / "tmp").iterdir()), list((cache / "tmp").iterdir())


def configuration(lam: Any, name: str, qualifier: str | None = None) -> dict[str, Any]:
    args = {"FunctionName": name, **({"Qualifier": qualifier} if qualifier else {})}
    return lam.get_function(**args)["Configuration"]


@pytest.fixture(scope="module")
def closed_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A server with an empty image cache that cannot build any image."""
    cache = reachable(tmp_path_factory.mktemp("images") / "cache")
    cache.mkdir()
    server = Server(tmp_path_factory.mktemp("pending") / "data", {
        "LAMINA_IMAGE_CACHE_DIR": str(cache), "LAMINA_DEBIAN_MIRROR": CLOSED_MIRROR,
        "LAMINA_RUNTIME_IMAGE_REGISTRY": ""})
    server.start()
    yield server, cache
    server.stop()


def test_a_function_whose_image_cannot_be_built_is_pending_then_failed_with_what_to_do(closed_mirror):
    server, cache = closed_mirror
    lam = server.client()
    with building(cache, "python3.13"):
        created = lam.create_function(**function_args("wants-313", HELLO, Runtime="python3.13"))
        assert created["State"] == "Pending"
        assert created["StateReason"] == "The function is being created."
        assert created["StateReasonCode"] == "Creating"
        assert "LastUpdateStatus" not in created
        # Lambda's answers while a function is Pending.
        with aws_error(lam, "ResourceConflictException", 409) as info:
            lam.invoke(FunctionName="wants-313", Payload=b"{}")
        assert error_message(info) == ("The operation cannot be performed at this time. The "
                                       "function is currently in the following state: Pending")
        with aws_error(lam, "ResourceConflictException", 409) as info:
            lam.invoke(FunctionName="wants-313", InvocationType="Event", Payload=b"{}")
        with aws_error(lam, "ResourceConflictException", 409) as info:
            lam.update_function_configuration(FunctionName="wants-313", Timeout=10)
        assert error_message(info).endswith("The function is currently in the following state: Pending")
        assert configuration(lam, "wants-313")["State"] == "Pending"
    # The build goes on once the lock is free, and fails: the mirror is closed.
    with pytest.raises(WaiterError, match="Failed"):
        lam.get_waiter("function_active_v2").wait(FunctionName="wants-313", **FAST)
    failed = configuration(lam, "wants-313")
    assert failed["State"] == "Failed"
    assert failed["StateReasonCode"] == "InternalError"
    assert failed["StateReason"].startswith("The runtime image python3.13 could not be built: mmdebstrap failed")
    assert "Could not connect to 127.0.0.1:9" in failed["StateReason"]
    assert failed["StateReason"].endswith(
        "Run `lamina runtimes install python3.13` to see why, then update the function.")
    assert failed["RevisionId"] != created["RevisionId"]
    with aws_error(lam, "ResourceConflictException", 409) as info:
        lam.invoke(FunctionName="wants-313", Payload=b"{}")
    assert error_message(info) == ("The operation cannot be performed at this time. The "
                                   "function is currently in the following state: Failed")
    assert_nothing_half_written(cache)


def test_functions_waiting_on_one_image_share_one_build_and_an_update_tries_again(closed_mirror):
    server, cache = closed_mirror
    lam = server.client()
    builds_before = server.log_path.read_text().count("runtime image python3.13 could not be made")
    with building(cache, "python3.13"):
        # python3.12 runs on the python3.13 image too (Debian has no 3.12).
        for name, runtime in (("shares-a", "python3.13"), ("shares-b", "python3.12")):
            created = lam.create_function(**function_args(name, HELLO, Runtime=runtime, Publish=True))
            assert (created["State"], created["Version"]) == ("Pending", "1")
    for name, runtime in (("shares-a", "python3.13"), ("shares-b", "python3.12")):
        with pytest.raises(WaiterError):
            lam.get_waiter("function_active_v2").wait(FunctionName=name, **FAST)
        for qualifier in (None, "1"):
            failed = configuration(lam, name, qualifier)
            assert (failed["State"], failed["LastUpdateStatus"]) == ("Failed", "Failed")
            assert f"Run `lamina runtimes install {runtime}`" in failed["StateReason"]
    log = server.log_path.read_text()
    assert log.count("runtime image python3.13 could not be made") == builds_before + 1

    # "then update the function": the update makes the image again (and fails again).
    updated = lam.update_function_configuration(FunctionName="shares-a", MemorySize=256)
    assert (updated["State"], updated["LastUpdateStatus"]) == ("Pending", "InProgress")
    assert updated["LastUpdateStatusReasonCode"] == "Creating"
    with pytest.raises(WaiterError, match="Failed"):
        lam.get_waiter("function_updated_v2").wait(FunctionName="shares-a", **FAST)
    again = configuration(lam, "shares-a")
    assert (again["State"], again["LastUpdateStatusReasonCode"]) == ("Failed", "InternalError")
    assert_nothing_half_written(cache)


def test_a_function_left_pending_by_a_stopped_server_is_made_ready_by_the_next(closed_mirror):
    server, cache = closed_mirror
    with building(cache, "python3.13"):
        created = server.client().create_function(
            **function_args("across-restart", HELLO, Runtime="python3.13"))
        assert created["State"] == "Pending"
        server.stop()
        server.start()
        assert configuration(server.client(), "across-restart")["State"] == "Pending"
    lam = server.client()
    with pytest.raises(WaiterError, match="Failed"):
        lam.get_waiter("function_active_v2").wait(FunctionName="across-restart", **FAST)
    assert configuration(lam, "across-restart")["StateReasonCode"] == "InternalError"
    assert_nothing_half_written(cache)


def test_a_function_on_an_installed_image_is_active_right_after_its_pending_answer(lam):
    if ImageStore(load_settings().image_cache_dir).installed("python3.13") is None:
        pytest.skip("the python3.13 image is not installed (lamina runtimes install python3.13)")
    created = lam.create_function(**function_args("installed-313", HELLO, Runtime="python3.13"))
    # Every new function answers Pending, as on AWS; with its image here it settles at once.
    assert created["State"] == "Pending"
    active = wait_active(lam, "installed-313")
    assert (active["State"], active["LastUpdateStatus"]) == ("Active", "Successful")
    assert "StateReason" not in active
    answer = lam.invoke(FunctionName="installed-313", Payload=b'{"a": 1}')
    assert json.loads(answer["Payload"].read()) == {"python": "3.13", "a": 1}


@pytest.mark.slow
def test_a_function_becomes_active_when_its_image_is_pulled_and_an_update_waits_too(
        tmp_path_factory, registry):  # noqa: F811
    """The image comes from a real registry on loopback (pushed there from this
    machine's cache); Debian builds are impossible (the mirror is closed)."""
    image = ImageStore(load_settings().image_cache_dir).installed("python3.13")
    if image is None:
        pytest.skip("the python3.13 image is not installed (lamina runtimes install python3.13)")
    oci.push_rootfs(image.root, oci.reference(registry, "python3.13"), image.versions, lambda line: None)
    cache = reachable(tmp_path_factory.mktemp("images") / "cache")
    cache.mkdir()
    server = Server(tmp_path_factory.mktemp("pulling") / "data", {
        "LAMINA_IMAGE_CACHE_DIR": str(cache), "LAMINA_DEBIAN_MIRROR": CLOSED_MIRROR,
        "LAMINA_RUNTIME_IMAGE_REGISTRY": registry})
    server.start()
    try:
        lam = server.client()
        created = lam.create_function(**function_args("pulled-313", HELLO, Runtime="python3.13"))
        assert created["State"] == "Pending"
        started = time.monotonic()
        lam.get_waiter("function_active_v2").wait(FunctionName="pulled-313", **FAST)
        print(f"python3.13 pulled and Active after {time.monotonic() - started:.1f} s")
        active = configuration(lam, "pulled-313")
        assert (active["State"], active["LastUpdateStatus"]) == ("Active", "Successful")
        assert "StateReason" not in active and active["RevisionId"] != created["RevisionId"]
        answer = lam.invoke(FunctionName="pulled-313", Payload=b'{"a": 1}')
        assert json.loads(answer["Payload"].read()) == {"python": "3.13", "a": 1}

        # An update to a runtime whose image is missing: Active, update in progress
        # (invocations wait for it), then the update fails (the registry has no
        # python3.14 and Debian is closed).
        with building(cache, "python3.14"):
            updated = lam.update_function_configuration(FunctionName="pulled-313", Runtime="python3.14")
            assert (updated["State"], updated["LastUpdateStatus"]) == ("Active", "InProgress")
            assert updated["LastUpdateStatusReason"] == "The function is being created."
            with aws_error(lam, "ResourceConflictException", 409) as info:
                lam.invoke(FunctionName="pulled-313", Payload=b"{}")
            assert error_message(info) == (
                "The operation cannot be performed at this time. An update is in progress for "
                f"resource: {created['FunctionArn']}")
            with aws_error(lam, "ResourceConflictException", 409):
                lam.update_function_code(FunctionName="pulled-313", ZipFile=HELLO)
        with pytest.raises(WaiterError, match="Failed"):
            lam.get_waiter("function_updated_v2").wait(FunctionName="pulled-313", **FAST)
        failed = configuration(lam, "pulled-313")
        assert failed["LastUpdateStatusReason"].startswith("The runtime image python3.14 could not be built")
        # Back to the runtime that is here: in progress, then Active again right after.
        back = lam.update_function_configuration(FunctionName="pulled-313", Runtime="python3.13")
        assert back["LastUpdateStatus"] == "InProgress"
        lam.get_waiter("function_updated_v2").wait(FunctionName="pulled-313", **FAST)
        back = configuration(lam, "pulled-313")
        assert (back["State"], back["LastUpdateStatus"]) == ("Active", "Successful")
        assert json.loads(lam.invoke(FunctionName="pulled-313", Payload=b"{}")["Payload"].read()) == {"python": "3.13"}
        assert_nothing_half_written(cache)
        assert [entry.name for entry in cache.iterdir() if (entry / "image.json").is_file()] != []
    finally:
        server.stop()
