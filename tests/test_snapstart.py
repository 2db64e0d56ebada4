"""SnapStart: published versions restored from a template, with a real server and the
namespaces sandbox; every environment forked from the template is checked from inside."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import re
import resource
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from lamina.environments.environment import (
    EnvironmentConfig,
    ExecutionEnvironment,
    Invocation,
    InvocationOutcome,
)
from lamina.environments.spec import EnvironmentSpec
from lamina.observe.logs import LogStore
from lamina.runtimes.catalog import CLIENTS_DIR, runtime_spec
from lamina.sandbox.zygote import RestoringBackend, ZygoteTemplate
from tests.helpers import ROLE, make_zip, wait_active
from tests.test_sandbox_namespaces import UNAVAILABLE

HANDLER = '''
import json, os, random, socket, time
from snapshot_restore_py import register_after_restore, register_before_snapshot

STATE = {"before": 0, "after": 0, "init_pid": os.getpid()}
INIT_RANDOM = random.random()
# A connection to the Runtime API made during INIT: on a restored environment, it
# must lead nowhere (the template's Runtime API stays the template's).
INIT_SOCKET = socket.create_connection(("127.0.0.1", 9001))
# Hooks INIT leaves behind to run inside a fork before it is confined: none may run.
FORKED = []
os.register_at_fork(after_in_child=lambda: FORKED.append(os.getpid()))
AUDITED = []
import sys
sys.addaudithook(lambda event, args: AUDITED.append(event) if len(AUDITED) < 3 else None)


@register_before_snapshot
def before():
    STATE["before"] += 1


@register_after_restore
def after():
    STATE["after"] += 1
    # Which environment this is (a SnapStart function has no log stream name).
    STATE["environment"] = os.urandom(8).hex()


def probe():
    seen = {}
    seen["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    environ = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                environ[pid] = open(f"/proc/{pid}/environ", "rb").read()[:40].decode(errors="replace")
            except OSError as error:
                environ[pid] = error.strerror
    seen["other_environ"] = environ
    status = open("/proc/self/status").read()
    seen["cap_eff"] = status.split("CapEff:")[1].split()[0]
    seen["cap_bnd"] = status.split("CapBnd:")[1].split()[0]
    seen["seccomp"] = status.split("Seccomp:")[1].split()[0]
    seen["no_new_privs"] = status.split("NoNewPrivs:")[1].split()[0]
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    seen["unshare_user"] = libc.unshare(0x10000000)
    seen["mount"] = libc.mount(b"tmpfs", b"/var/task", b"tmpfs", 0, None)
    try:
        INIT_SOCKET.sendall(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\\r\\n\\r\\n")
        INIT_SOCKET.settimeout(1)
        seen["init_socket"] = INIT_SOCKET.recv(100).decode(errors="replace") or "closed"
    except OSError as error:
        seen["init_socket"] = type(error).__name__
    masked = {}
    for path in ("/proc/interrupts", "/proc/timer_list", "/proc/sched_debug", "/proc/kcore"):
        try:
            with open(path, "rb") as f:
                masked[path] = len(f.read(100))
        except OSError:
            masked[path] = 0  # refused: as good as empty
    seen["masked"] = masked
    seen["at_fork_ran"] = FORKED
    seen["audited"] = AUDITED
    seen["uid"] = os.getuid()
    try:
        seen["shadow"] = len(open("/etc/shadow").read())
    except OSError as error:
        seen["shadow"] = type(error).__name__
    return seen


def handler(event, context):
    action = event.get("action")
    if action == "probe":
        return probe()
    if action == "memory":
        hog = bytearray(event["mb"] * 1024 * 1024)
        for i in range(0, len(hog), 4096):
            hog[i] = 1
        return len(hog)
    if action == "exit":
        os._exit(event["code"])
    if action == "tmp":
        mine = f"/tmp/{context.aws_request_id}"
        open(mine, "w").write("x")
        time.sleep(event.get("sleep", 0))
        return {"tmp": sorted(os.listdir("/tmp")), "random": random.random(),
                "environment": STATE.get("environment"), "key": os.environ["AWS_ACCESS_KEY_ID"],
                "pid1": os.getpid()}
    return {"event": event, "before": STATE["before"], "after": STATE["after"],
            "init_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
            "environment": STATE.get("environment"), "stream": context.log_stream_name,
            "log_variables": sorted(k for k in os.environ if k.startswith("AWS_LAMBDA_LOG_")),
            "request_id": context.aws_request_id}
'''


def _server_has_namespaces(server: Any) -> bool:
    return server.sandbox_backend() == "namespaces"


@pytest.fixture(scope="module")
def snap(server: Any, lam: Any) -> str:
    """A SnapStart function with version 1 published (Active)."""
    if not _server_has_namespaces(server):
        pytest.skip("SnapStart needs the namespaces sandbox")
    name = f"snap-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": HANDLER})}, MemorySize=256,
                        Timeout=30, SnapStart={"ApplyOn": "PublishedVersions"})
    wait_active(lam, name)
    published = lam.publish_version(FunctionName=name)
    assert published["State"] == "Pending"
    assert published["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}
    lam.get_waiter("function_active_v2").wait(FunctionName=name, Qualifier="1",
                                              WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    return name


def invoke(lam: Any, name: str, payload: dict[str, Any], qualifier: str = "1") -> tuple[Any, str]:
    response = lam.invoke(FunctionName=name, Qualifier=qualifier, Payload=json.dumps(payload),
                          LogType="Tail")
    body = json.loads(response["Payload"].read())
    return body, base64.b64decode(response["LogResult"]).decode()


def test_snap_start_is_in_every_configuration_shape(lam: Any, snap: str) -> None:
    latest = lam.get_function_configuration(FunctionName=snap)
    assert latest["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "Off"}
    version = lam.get_function(FunctionName=snap, Qualifier="1")["Configuration"]
    assert version["SnapStart"] == {"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"}
    assert version["State"] == "Active"
    versions = lam.list_versions_by_function(FunctionName=snap)["Versions"]
    assert [v["SnapStart"]["OptimizationStatus"] for v in versions] == ["Off", "On"]
    listed = [f for page in lam.get_paginator("list_functions").paginate()
              for f in page["Functions"] if f["FunctionName"] == snap]
    assert listed[0]["SnapStart"]["ApplyOn"] == "PublishedVersions"


def test_an_unknown_apply_on_is_refused_with_aws_message(lam_unchecked: Any) -> None:
    with pytest.raises(ClientError) as raised:
        lam_unchecked.create_function(
            FunctionName=f"snap-bad-{uuid.uuid4().hex[:6]}", Runtime="python3.12", Role=ROLE,
            Handler="app.handler", Code={"ZipFile": make_zip({"app.py": HANDLER})},
            SnapStart={"ApplyOn": "invalidOption"})
    error = raised.value.response["Error"]
    assert error["Code"] == "ValidationException"
    assert error["Message"] == (
        "1 validation error detected: Value 'invalidOption' at 'snapStart.applyOn' failed to "
        "satisfy constraint: Member must satisfy enum value set: [PublishedVersions, None]")


def test_a_restored_environment_answers_as_a_cold_one_and_reports_its_restore(
        lam: Any, snap: str) -> None:
    restored, log = invoke(lam, snap, {"hello": "world"})
    latest, latest_log = invoke(lam, snap, {"hello": "world"}, qualifier="$LATEST")
    assert restored["event"] == latest["event"] == {"hello": "world"}
    assert restored["init_type"] == "snap-start"
    assert latest["init_type"] == "on-demand"
    # INIT ran once, in the template: its before-snapshot hook with it; the
    # after-restore hook once in this environment.
    assert (restored["before"], restored["after"]) == (1, 1)
    report = next(line for line in log.splitlines() if line.startswith("REPORT"))
    if "Restore Duration" in report:  # the first invocation of a new environment
        assert re.search(r"\tRestore Duration: [\d.]+ ms\tBilled Restore Duration: \d+ ms", report)
        assert "Init Duration" not in report
    latest_report = next(line for line in latest_log.splitlines() if line.startswith("REPORT"))
    assert "Restore Duration" not in latest_report
    # As on Lambda, a SnapStart version's environments are not told their log stream.
    assert restored["stream"] is None and restored["log_variables"] == []
    assert latest["stream"] and latest["log_variables"] == [
        "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME"]


def _published(lam: Any, name: str, code: str, **config: Any) -> None:
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": code})}, Timeout=30,
                        SnapStart={"ApplyOn": "PublishedVersions"}, **config)
    wait_active(lam, name)
    lam.publish_version(FunctionName=name)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, Qualifier="1",
                                              WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})


def test_a_restore_writes_restore_lines_and_telemetry_records(server: Any, lam: Any) -> None:
    if not _server_has_namespaces(server):
        pytest.skip("SnapStart needs the namespaces sandbox")
    name = f"snap-json-{uuid.uuid4().hex[:8]}"
    _published(lam, name, "def handler(e, c):\n    return 'ok'\n")
    _, log = invoke(lam, name, {})
    lines = log.splitlines()
    assert lines[0].startswith("RESTORE_START Runtime Version: "), lines
    assert re.fullmatch(r"RESTORE_REPORT Restore Duration: [\d.]+ ms", lines[1]), lines
    assert not any(line.startswith("INIT_REPORT") for line in lines)
    # In JSON format, the system records are the Telemetry API's: restore, not init.
    lam.update_function_configuration(FunctionName=name, LoggingConfig={
        "LogFormat": "JSON", "SystemLogLevel": "DEBUG"})
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    lam.publish_version(FunctionName=name)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, Qualifier="2",
                                              WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    _, log = invoke(lam, name, {}, qualifier="2")
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    types = [r["type"] for r in records if r.get("type", "").startswith("platform.")]
    assert types[:3] == ["platform.restoreStart", "platform.restoreRuntimeDone",
                         "platform.restoreReport"], types
    assert not any(t.startswith("platform.init") for t in types)
    start, done, report = records[0]["record"], records[1]["record"], records[2]["record"]
    assert (start["functionName"], start["functionVersion"]) == (name, "2")
    assert start["instanceMaxMemory"] == 128 and start["instanceId"]
    assert done == {"status": "success"}
    assert report["status"] == "success" and report["metrics"]["durationMs"] > 0
    with urllib.request.urlopen(f"{server.endpoint}/metrics") as response:
        metrics = response.read().decode()
    # Restores are counted apart from INIT phases.
    assert (f'lambda_restore_duration_seconds_count{{executed_version="2",function_name="{name}"}}'
            ' 1.0') in metrics


AFTER_RESTORE_FAILS = """
from snapshot_restore_py import register_after_restore

@register_after_restore
def reconnect():
    raise ConnectionError("the database is gone")

def handler(event, context):
    return "unreachable"
"""


def test_a_failing_after_restore_hook_is_a_snap_start_exception(server: Any, lam: Any) -> None:
    if not _server_has_namespaces(server):
        pytest.skip("SnapStart needs the namespaces sandbox")
    name = f"snap-hook-{uuid.uuid4().hex[:8]}"
    _published(lam, name, AFTER_RESTORE_FAILS)
    for _ in range(2):  # the failed environment is discarded: the next call restores anew
        with pytest.raises(ClientError) as raised:
            lam.invoke(FunctionName=name, Qualifier="1")
        error = raised.value.response
        assert error["Error"]["Code"] == "SnapStartException"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert "Runtime.AfterRestoreError" in error["Error"]["Message"]
        assert "the database is gone" in error["Error"]["Message"]
    # The hook's traceback and the failed restore are in the function's log.
    deadline = time.monotonic() + 10
    messages: list[str] = []
    while time.monotonic() < deadline:
        messages = [e["message"] for page in server.client("logs").get_paginator(
            "filter_log_events").paginate(logGroupName=f"/aws/lambda/{name}")
            for e in page["events"]]
        if any("RESTORE_REPORT" in m for m in messages):
            break
        time.sleep(0.2)
    assert any("the database is gone" in m for m in messages), messages
    assert any(m.startswith("RESTORE_REPORT") and "Status: error" in m for m in messages), messages


def test_twenty_concurrent_cold_starts_are_twenty_separate_environments(
        server: Any, snap: str) -> None:
    client = server.client(max_pool_connections=20)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: invoke(client, snap, {"action": "tmp", "sleep": 4}),
                                range(20)))
    bodies = [body for body, _ in results]
    assert len({body["environment"] for body in bodies}) == 20
    assert len({body["random"] for body in bodies}) == 20
    assert len({body["key"] for body in bodies}) == 20 or \
        {body["key"] for body in bodies} == {"ASIALAMINAFUNCTION00"}
    for body in bodies:
        # Its own /tmp: only the file this invocation wrote.
        assert len(body["tmp"]) == 1, body["tmp"]
        assert body["pid1"] == 1  # PID 1 of a namespace of its own
    restores = [log for _, log in results if "Restore Duration" in log]
    assert len(restores) >= 19  # at most one reused an environment of an earlier test


def test_after_restore_hook_runs_once_per_environment(lam: Any, snap: str) -> None:
    first, _ = invoke(lam, snap, {})
    again, _ = invoke(lam, snap, {})
    assert first["environment"] == again["environment"]  # the same warm environment
    assert again["after"] == 1 and again["before"] == 1


def test_hostile_code_in_a_restored_environment_is_contained(lam: Any, snap: str) -> None:
    seen, _ = invoke(lam, snap, {"action": "probe"})
    assert "pids" in seen, seen
    assert seen["pids"] == [1]  # no template, no sibling, no anchor in sight
    assert seen["other_environ"] == {}
    assert seen["cap_eff"] == "0000000000000000" and seen["cap_bnd"] == "0000000000000000"
    assert seen["seccomp"] == "2" and seen["no_new_privs"] == "1"
    assert seen["unshare_user"] == -1 and seen["mount"] == -1
    # The template's Runtime API, through a connection INIT made: gone.
    assert seen["init_socket"] in ("OSError", "BrokenPipeError", "closed", "TimeoutError")
    assert set(seen["masked"].values()) == {0}, seen["masked"]  # runc's masks hold here too
    assert seen["at_fork_ran"] == [] and seen["audited"] == []
    assert seen["uid"] == 993
    assert seen["shadow"] in ("FileNotFoundError", "PermissionError")


def test_a_restored_runtime_that_exits_is_reported_with_its_exit_status(
        lam: Any, snap: str) -> None:
    body, log = invoke(lam, snap, {"action": "exit", "code": 3})
    assert body["errorType"] == "Runtime.ExitError", body
    assert "Runtime exited with error: exit status 3" in body["errorMessage"]
    after, _ = invoke(lam, snap, {"hello": 2})  # a new environment takes its place
    assert after["event"] == {"hello": 2}


def test_a_restored_environment_cannot_exceed_its_memory(lam: Any, snap: str) -> None:
    body, log = invoke(lam, snap, {"action": "memory", "mb": 512})
    assert body["errorType"] == "Runtime.OutOfMemory", body
    after, _ = invoke(lam, snap, {"hello": 1})
    assert after["event"] == {"hello": 1}


def test_a_failing_init_makes_the_version_failed(server: Any, lam: Any) -> None:
    if not _server_has_namespaces(server):
        pytest.skip("SnapStart needs the namespaces sandbox")
    name = f"snap-fail-{uuid.uuid4().hex[:8]}"
    code = "raise RuntimeError('no database at INIT')\ndef handler(e, c):\n    return 1\n"
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": code})},
                        SnapStart={"ApplyOn": "PublishedVersions"})
    wait_active(lam, name)
    assert lam.publish_version(FunctionName=name)["State"] == "Pending"
    deadline = time.monotonic() + 60
    while (config := lam.get_function_configuration(FunctionName=name, Qualifier="1"))[
            "State"] == "Pending" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert config["State"] == "Failed"
    assert config["StateReasonCode"] == "FunctionError.RuntimeInitError"
    assert "no database at INIT" in config["StateReason"]
    with pytest.raises(ClientError) as raised:
        lam.invoke(FunctionName=name, Qualifier="1")
    assert raised.value.response["Error"]["Code"] == "ResourceConflictException"


def test_a_runtime_that_cannot_be_snapshotted_says_so_and_starts_cold(
        server: Any, lam: Any) -> None:
    if not _server_has_namespaces(server):
        pytest.skip("SnapStart needs the namespaces sandbox")
    name = f"snap-node-{uuid.uuid4().hex[:8]}"
    code = "exports.handler = async (event) => process.env.AWS_LAMBDA_INITIALIZATION_TYPE;\n"
    try:
        lam.create_function(FunctionName=name, Runtime="nodejs20.x", Role=ROLE,
                            Handler="index.handler", Code={"ZipFile": make_zip({"index.js": code})},
                            SnapStart={"ApplyOn": "PublishedVersions"})
    except ClientError as error:
        pytest.skip(f"no Node.js runtime here: {error}")
    wait_active(lam, name)
    lam.publish_version(FunctionName=name)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, Qualifier="1",
                                              WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    config = lam.get_function_configuration(FunctionName=name, Qualifier="1")
    assert "not supported for SnapStart" in config["StateReason"]
    assert config["SnapStart"]["OptimizationStatus"] == "Off"
    response = lam.invoke(FunctionName=name, Qualifier="1")
    assert json.loads(response["Payload"].read()) == "on-demand"


def test_provisioned_environments_of_a_snap_start_version_are_restored(lam: Any, snap: str) -> None:
    lam.put_provisioned_concurrency_config(FunctionName=snap, Qualifier="1",
                                           ProvisionedConcurrentExecutions=2)
    deadline = time.monotonic() + 60
    while lam.get_provisioned_concurrency_config(FunctionName=snap, Qualifier="1")[
            "Status"] != "READY" and time.monotonic() < deadline:
        time.sleep(0.2)
    body, log = invoke(lam, snap, {})
    assert body["init_type"] == "snap-start" and body["after"] == 1
    lam.delete_provisioned_concurrency_config(FunctionName=snap, Qualifier="1")


def test_a_version_still_making_its_snapshot_is_not_ready(server: Any, lam: Any) -> None:
    if not _server_has_namespaces(server):
        pytest.skip("SnapStart needs the namespaces sandbox")
    name = f"snap-slow-{uuid.uuid4().hex[:8]}"
    code = "import time\ntime.sleep(3)\ndef handler(e, c):\n    return 'ready'\n"
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": code})},
                        SnapStart={"ApplyOn": "PublishedVersions"})
    wait_active(lam, name)
    lam.publish_version(FunctionName=name)
    with pytest.raises(ClientError) as raised:
        lam.invoke(FunctionName=name, Qualifier="1")
    error = raised.value.response["Error"]
    assert error["Code"] == "SnapStartNotReadyException"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    lam.get_waiter("function_active_v2").wait(FunctionName=name, Qualifier="1",
                                              WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    assert json.loads(lam.invoke(FunctionName=name, Qualifier="1")["Payload"].read()) == "ready"


def _processes_of(function_name: str) -> list[int]:
    """Host PIDs whose environment names the function (its template, spares, forks)."""
    needle = f"AWS_LAMBDA_FUNCTION_NAME={function_name}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_deleting_the_function_stops_its_template_and_forks(server: Any, lam: Any) -> None:
    if not _server_has_namespaces(server):
        pytest.skip("SnapStart needs the namespaces sandbox")
    name = f"snap-gone-{uuid.uuid4().hex[:8]}"
    lam.create_function(FunctionName=name, Runtime="python3.12", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": make_zip({"app.py": HANDLER})},
                        SnapStart={"ApplyOn": "PublishedVersions"})
    wait_active(lam, name)
    lam.publish_version(FunctionName=name)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, Qualifier="1",
                                              WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    invoke(lam, name, {})
    assert _processes_of(name)  # the template (and the restored environment)
    lam.delete_function(FunctionName=name)
    deadline = time.monotonic() + 30
    while _processes_of(name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_of(name) == []


LOGS_A_RECORD = """
import logging

def handler(event, context):
    logging.getLogger().warning("a record from a restored environment")
    return "ok"
"""


async def _restore_once(backend: Any, root: Path) -> InvocationOutcome:
    code = root / "code"
    code.mkdir(mode=0o755)
    (code / "app.py").write_text(LOGS_A_RECORD)
    (code / "app.py").chmod(0o644)
    root.chmod(0o755)
    fv = EnvironmentSpec("snap-fds", "1", "r1", "python3.11", "app.handler", "-", 256, 30, 512,
                         "/aws/lambda/snap-fds", "role", snap_start=True)
    logs = LogStore(root / "logs")

    def config(restore: bool) -> EnvironmentConfig:
        return EnvironmentConfig(
            function_version=fv, runtime=runtime_spec("python3.11", source="host"),
            task_root=code, layers_root=None, runtime_root=CLIENTS_DIR,
            scratch_root=root / uuid.uuid4().hex, region="us-east-1", account_id="0",
            network=False, initialization_type="snap-start", restore=restore)

    zygote = ZygoteTemplate(backend)
    template = ExecutionEnvironment(config(False), zygote, logs)
    await template.start()
    assert template.init_failure is None, template.init_failure
    try:
        restored = ExecutionEnvironment(config(True), RestoringBackend(zygote), logs)
        await restored.start()
        assert restored.init_failure is None, restored.init_failure
        try:
            return await restored.invoke(Invocation(uuid.uuid4().hex, b"{}", "arn", "trace"))
        finally:
            await restored.shutdown()
    finally:
        await zygote.destroy()
        await template.shutdown()


@pytest.mark.skipif(UNAVAILABLE is not None, reason=f"no kernel isolation: {UNAVAILABLE}")
def test_a_restore_works_on_a_server_holding_over_1024_descriptors(backend: Any,
                                                                     tmp_path: Path) -> None:
    """A sandbox inherits the server's log pipes under the server's numbers; on a busy
    server they pass 1024, the sandbox's RLIMIT_NOFILE, where a fork cannot dup2."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"this process may open at most {hard} descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        outcome = asyncio.run(_restore_once(backend, tmp_path))
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert outcome.status == "success" and outcome.payload == b'"ok"', outcome
    assert "a record from a restored environment" in outcome.log_tail
