"""Concurrency: reserved and provisioned concurrency, throttling, memory and scaling limits."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from botocore.exceptions import ClientError

from tests.conftest import ROLE, Server
from tests.helpers import make_zip

HANDLER = make_zip({"app.py": (
    "import os, threading, time, uuid\n"
    "ENVIRONMENT = uuid.uuid4().hex\n"
    "def handler(event, context):\n"
    "    time.sleep(event.get('sleep', 0))\n"
    "    if event.get('mark'):\n"
    "        print(event['mark'])\n"
    "    if event.get('die_later'):\n"
    "        # Exit once this invocation has been answered: the environment dies idle.\n"
    "        threading.Timer(0.3, os._exit, (1,)).start()\n"
    "    return {'pid': os.getpid(), 'environment': ENVIRONMENT,\n"
    "            'init': os.environ['AWS_LAMBDA_INITIALIZATION_TYPE']}\n"
)})


# Functions created by the running test, deleted after it: the session server is
# shared, and reservations left behind would change other tests' account settings.
_created: list[tuple[Any, str]] = []


@pytest.fixture(autouse=True)
def _delete_created_functions() -> Iterator[None]:
    yield
    while _created:
        lam, name = _created.pop()
        try:
            lam.delete_function(FunctionName=name)
        except Exception:
            pass  # deleted by the test itself, or its dedicated server is gone


def create(lam, code: bytes = HANDLER, **config: Any) -> str:
    name = f"conc-{uuid.uuid4().hex[:10]}"
    lam.create_function(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="app.handler",
                        Code={"ZipFile": code}, **config)
    _created.append((lam, name))
    return name


def invoke(lam, name: str, event: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """The handler's result and the REPORT line, or the error response when refused."""
    try:
        response = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}), LogType="Tail",
                              **kwargs)
    except ClientError as error:
        return {"error": error.response}
    lines = base64.b64decode(response["LogResult"]).decode().splitlines()
    report = next(line for line in lines if line.startswith("REPORT"))
    return {"result": json.loads(response["Payload"].read()), "report": report}


def parallel(count: int, call: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(count) as executor:
        return list(executor.map(lambda _: call(), range(count)))


def throttled(outcomes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["error"] for o in outcomes if "error" in o]


def publish_version(lam, name: str) -> str:
    return lam.publish_version(FunctionName=name)["Version"]


def wait_for_status(lam, name: str, qualifier: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        if found["Status"] == status or time.monotonic() > deadline:
            assert found["Status"] == status, found
            return found
        time.sleep(0.05)


def provisioned_function(lam, provisioned: int, reserved: int | None = None) -> str:
    """A new function with version 1 provisioned (READY), and a reservation if given."""
    name = create(lam)
    assert publish_version(lam, name) == "1"
    if reserved is not None:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=reserved)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1",
                                           ProvisionedConcurrentExecutions=provisioned)
    wait_for_status(lam, name, "1", "READY")
    return name


# -- reserved concurrency ---------------------------------------------------------------


def test_reserved_concurrency_of_2_throttles_3_of_5_parallel_calls_with_429(lam):
    name = create(lam)
    assert lam.put_function_concurrency(
        FunctionName=name, ReservedConcurrentExecutions=2)["ReservedConcurrentExecutions"] == 2
    outcomes = parallel(5, lambda: invoke(lam, name, {"sleep": 1.5}))
    refused = throttled(outcomes)
    assert len(refused) == 3
    for error in refused:
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert error["Error"]["Code"] == "TooManyRequestsException"
        assert error["Error"]["Message"] == "Rate Exceeded."
        assert error["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert sum("result" in o for o in outcomes) == 2


def test_reserved_concurrency_shows_in_get_function_and_get_function_concurrency(lam):
    name = create(lam)
    assert "Concurrency" not in lam.get_function(FunctionName=name)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=7)
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 7}
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 7
    lam.delete_function_concurrency(FunctionName=name)
    assert "Concurrency" not in lam.get_function(FunctionName=name)


def test_reserved_concurrency_0_throttles_every_call(lam):
    name = create(lam)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    for _ in range(3):
        error = invoke(lam, name)["error"]
        assert error["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    lam.delete_function_concurrency(FunctionName=name)
    assert "result" in invoke(lam, name)


def test_a_throttled_asynchronous_event_is_retried_until_it_runs(server, lam):
    name = create(lam)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    marker = f"event-{uuid.uuid4().hex}"
    with ThreadPoolExecutor(1) as executor:
        busy = executor.submit(invoke, lam, name, {"sleep": 1.0})
        time.sleep(0.4)
        accepted = lam.invoke(FunctionName=name, InvocationType="Event",
                              Payload=json.dumps({"mark": marker}))
        assert accepted["StatusCode"] == 202
        assert "result" in busy.result()
    logs = server.client("logs")
    deadline = time.monotonic() + 10
    while True:
        found = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}", filterPattern=marker)
        if found["events"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [e["message"].strip() for e in found["events"]] == [marker]


def test_provisioned_concurrency_on_an_alias_of_latest_is_refused(lam):
    name = create(lam)
    lam.create_alias(FunctionName=name, Name="head", FunctionVersion="$LATEST")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="head",
                                               ProvisionedConcurrentExecutions=1)


def test_executions_in_flight_show_in_the_lamina_header_of_get_function_concurrency(lam):
    name = create(lam)
    header = "x-lamina-concurrent-executions"
    with ThreadPoolExecutor(2) as executor:
        running = [executor.submit(invoke, lam, name, {"sleep": 1.0}) for _ in range(2)]
        time.sleep(0.6)
        during = lam.get_function_concurrency(FunctionName=name)
        assert during["ResponseMetadata"]["HTTPHeaders"][header] == "2"
        assert all("result" in future.result() for future in running)
    after = lam.get_function_concurrency(FunctionName=name)
    assert after["ResponseMetadata"]["HTTPHeaders"][header] == "0"


def test_reserving_below_the_unreserved_minimum_is_rejected_with_aws_message(lam):
    name = create(lam)
    before = lam.get_account_settings()["AccountLimit"]
    assert before["ConcurrentExecutions"] == 1000
    too_much = before["UnreservedConcurrentExecutions"] - 100 + 1
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as refused:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=too_much)
    assert refused.value.response["Error"]["Message"] == (
        "Specified ReservedConcurrentExecutions for function decreases account's "
        "UnreservedConcurrentExecution below its minimum value of [100]."
    )
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=too_much - 1)
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 100
    lam.delete_function(FunctionName=name)
    assert lam.get_account_settings()["AccountLimit"] == before


def test_reserved_concurrency_of_a_missing_function_is_404(lam):
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_concurrency(FunctionName="conc-missing", ReservedConcurrentExecutions=1)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_concurrency(FunctionName="conc-missing")


@pytest.mark.slow
def test_account_limit_throttles_the_shared_pool_and_keeps_reservations(start_server):
    server = start_server({"LAMINA_CONCURRENT_EXECUTIONS": "3", "LAMINA_MIN_UNRESERVED_CONCURRENCY": "1"})
    lam = server.client()
    reserved, shared = create(lam), create(lam)
    lam.put_function_concurrency(FunctionName=reserved, ReservedConcurrentExecutions=1)
    limits = lam.get_account_settings()["AccountLimit"]
    assert (limits["ConcurrentExecutions"], limits["UnreservedConcurrentExecutions"]) == (3, 2)
    with ThreadPoolExecutor(4) as executor:
        busy = [executor.submit(invoke, lam, shared, {"sleep": 1.5}) for _ in range(3)]
        time.sleep(0.5)
        # The shared pool (2) is full, but the reservation is still there.
        assert "result" in invoke(lam, reserved)
        outcomes = [future.result() for future in busy]
    refused = throttled(outcomes)
    assert len(refused) == 1
    assert refused[0]["Reason"] == "ConcurrentInvocationLimitExceeded"
    assert refused[0]["ResponseMetadata"]["HTTPStatusCode"] == 429


@pytest.mark.slow
def test_provisioned_concurrency_is_set_aside_from_the_shared_pool(start_server):
    server = start_server({"LAMINA_CONCURRENT_EXECUTIONS": "3", "LAMINA_MIN_UNRESERVED_CONCURRENCY": "1"})
    lam = server.client()
    provisioned = provisioned_function(lam, provisioned=1)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as refused:
        lam.put_provisioned_concurrency_config(FunctionName=provisioned, Qualifier="1",
                                               ProvisionedConcurrentExecutions=3)
    assert "below its minimum value of [1]" in refused.value.response["Error"]["Message"]
    shared = create(lam)
    with ThreadPoolExecutor(4) as executor:
        busy = [executor.submit(invoke, lam, shared, {"sleep": 1.5}) for _ in range(3)]
        time.sleep(0.5)
        # Its provisioned slot is still free while the shared pool (3 - 1) is full.
        assert invoke(lam, provisioned, Qualifier="1")["result"]["init"] == "provisioned-concurrency"
        outcomes = [future.result() for future in busy]
    assert [e["Reason"] for e in throttled(outcomes)] == ["ConcurrentInvocationLimitExceeded"]


# -- limits on new environments ------------------------------------------------------------


@pytest.mark.slow
def test_environment_memory_ceiling_throttles_and_evicts_idle_environments_first(start_server):
    server = start_server({"LAMINA_ENVIRONMENT_MEMORY_MB": "256"})
    lam = server.client()
    first, second = create(lam, MemorySize=128), create(lam, MemorySize=128)
    outcomes = parallel(3, lambda: invoke(lam, first, {"sleep": 1.0}))
    refused = throttled(outcomes)
    assert len(refused) == 1
    assert refused[0]["Reason"] == "ConcurrentInvocationLimitExceeded"
    assert "LAMINA_ENVIRONMENT_MEMORY_MB" in refused[0]["Error"]["Message"]
    # Two idle environments of `first` fill the memory: a cold start of `second`
    # stops the least recently used one instead of being refused.
    assert "result" in invoke(lam, second)
    assert "Init Duration" not in invoke(lam, first)["report"]  # the other one is still warm
    assert len(throttled(parallel(2, lambda: invoke(lam, second, {"sleep": 0.5})))) == 0


@pytest.mark.slow
def test_scaling_rate_throttles_cold_starts_past_the_bucket(start_server):
    server = start_server({"LAMINA_SCALING_ENVIRONMENTS": "2", "LAMINA_SCALING_WINDOW_S": "600"})
    lam = server.client()
    name = create(lam)
    refused = throttled(parallel(3, lambda: invoke(lam, name, {"sleep": 1.0})))
    assert len(refused) == 1
    assert refused[0]["Reason"] == "ConcurrentInvocationLimitExceeded"
    # Warm environments need no token.
    assert len(throttled(parallel(2, lambda: invoke(lam, name)))) == 0


# -- provisioned concurrency -------------------------------------------------------------------


def test_provisioned_concurrency_on_latest_is_refused(lam):
    name = create(lam)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as refused:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="$LATEST",
                                               ProvisionedConcurrentExecutions=1)
    assert "unpublished function versions" in refused.value.response["Error"]["Message"]


def test_provisioned_concurrency_of_a_missing_version_is_404(lam):
    name = create(lam)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="9",
                                               ProvisionedConcurrentExecutions=1)


def test_provisioned_concurrency_config_not_found_until_put(lam):
    name = create(lam)
    publish_version(lam, name)
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    assert lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"] == []


def test_provisioned_concurrency_must_fit_the_reservation(lam):
    name = create(lam)
    publish_version(lam, name)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as refused:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1",
                                               ProvisionedConcurrentExecutions=2)
    assert "reservedConcurrentExecution" in refused.value.response["Error"]["Message"]
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1",
                                           ProvisionedConcurrentExecutions=1)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")


@pytest.mark.slow
def test_provisioned_concurrency_3_serves_3_calls_warm_and_spills_the_4th_to_on_demand(lam):
    name = create(lam)
    publish_version(lam, name)
    put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1",
                                                 ProvisionedConcurrentExecutions=3)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == 3
    assert put["Status"] == "IN_PROGRESS"
    ready = wait_for_status(lam, name, "1", "READY")
    assert ready["AllocatedProvisionedConcurrentExecutions"] == 3
    assert ready["AvailableProvisionedConcurrentExecutions"] == 3
    assert ready["LastModified"] == put["LastModified"]
    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    assert [c["FunctionArn"].rsplit(":", 2)[1:] for c in listed] == [[name, "1"]]

    outcomes = parallel(4, lambda: invoke(lam, name, {"sleep": 1.0}, Qualifier="1"))
    warm = [o for o in outcomes if o["result"]["init"] == "provisioned-concurrency"]
    cold = [o for o in outcomes if o["result"]["init"] == "on-demand"]
    assert len(warm) == 3 and len(cold) == 1
    assert not any("Init Duration" in o["report"] for o in warm)
    assert "Init Duration" in cold[0]["report"]

    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")


@pytest.mark.slow
def test_a_provisioned_environment_that_dies_is_replaced_and_ready_again(server, lam):
    name = provisioned_function(lam, provisioned=2)
    dead = invoke(lam, name, {"die_later": True}, Qualifier="1")["result"]
    assert dead["init"] == "provisioned-concurrency"
    wait_until_dead(server, dead["pid"])
    ready = wait_for_status(lam, name, "1", "READY")
    assert ready["AllocatedProvisionedConcurrentExecutions"] == 2
    outcomes = parallel(2, lambda: invoke(lam, name, {"sleep": 0.5}, Qualifier="1"))
    assert {o["result"]["init"] for o in outcomes} == {"provisioned-concurrency"}
    assert dead["environment"] not in {o["result"]["environment"] for o in outcomes}
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")


def test_provisioned_concurrency_on_an_alias_serves_calls_through_the_alias(server, lam):
    name = create(lam)
    publish_version(lam, name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live",
                                           ProvisionedConcurrentExecutions=1)
    assert wait_for_status(lam, name, "live", "READY")["AllocatedProvisionedConcurrentExecutions"] == 1
    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in listed] == ["live"]
    served = invoke(lam, name, Qualifier="live")["result"]
    assert served["init"] == "provisioned-concurrency"
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    wait_until_dead(server, served["pid"])


def test_deleting_a_version_removes_its_provisioned_concurrency(lam):
    name = provisioned_function(lam, provisioned=1)
    lam.delete_function(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    assert lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"] == []


def wait_until_dead(server: Server, pid: int, timeout: float = 10.0) -> None:
    """Until the runtime process the handler ran in is gone."""
    if server.sandbox_backend() != "process":
        # In a PID namespace the handler's pid means nothing out here.
        time.sleep(1.0)
        return
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: only its parent has not collected it yet.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_provisioned_concurrency_whose_init_fails_is_failed_with_a_reason(lam):
    name = create(lam, make_zip({"app.py": "raise RuntimeError('no init')\n"}))
    publish_version(lam, name)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1",
                                           ProvisionedConcurrentExecutions=1)
    failed = wait_for_status(lam, name, "1", "FAILED")
    assert failed["StatusReason"].startswith("FUNCTION_ERROR_INIT_FAILURE")
    assert failed["AllocatedProvisionedConcurrentExecutions"] == 0
    lam.delete_function(FunctionName=name)


@pytest.mark.slow
def test_provisioned_and_reserved_concurrency_survive_a_restart(start_server):
    server = start_server()
    lam = server.client()
    name = provisioned_function(lam, provisioned=2, reserved=5)
    server.stop()
    server.start()
    lam = server.client()
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5
    ready = wait_for_status(lam, name, "1", "READY")
    assert ready["AllocatedProvisionedConcurrentExecutions"] == 2
    assert invoke(lam, name, Qualifier="1")["result"]["init"] == "provisioned-concurrency"


# -- CLI ---------------------------------------------------------------------------------------


def test_lamina_concurrency_shows_in_use_reserved_and_provisioned(server, lam):
    name = provisioned_function(lam, provisioned=1, reserved=4)
    env = {**os.environ, "LAMINA_ENDPOINT": server.endpoint, "COLUMNS": "200"}
    shown = subprocess.run([sys.executable, "-m", "lamina.cli.main", "concurrency", name],
                           env=env, capture_output=True, text=True, check=True).stdout
    assert "in use: 0" in shown
    assert "reserved: 4" in shown
    assert "1 (READY, 1 allocated)" in shown
    listing = subprocess.run([sys.executable, "-m", "lamina.cli.main", "functions"],
                             env=env, capture_output=True, text=True, check=True).stdout
    assert "Reserved" in listing
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")


# -- in process: exact counting and the metrics ---------------------------------------------


def test_counting_is_exact_when_calls_arrive_in_the_same_tick_and_metrics_count_them(tmp_path):
    from lamina.config import load_settings
    from lamina.errors import TooManyRequestsException
    from lamina.invoke.service import InvocationRequest
    from lamina.platform import Platform

    async def scenario() -> None:
        platform = Platform(load_settings(data_dir=tmp_path / "data"))
        await platform.start()
        try:
            await platform.functions.create_function(
                "counted", HANDLER, {"role": ROLE, "runtime": "python3.11", "handler": "app.handler"}, {})
            await asyncio.sleep(0.05)  # Pending until it settles, right after, as on AWS
            platform.concurrency.put_reserved("counted", 2)
            request = InvocationRequest("counted", b'{"sleep": 0.3}')
            outcomes = await asyncio.gather(*(platform.invoker.invoke(request) for _ in range(5)),
                                            return_exceptions=True)
            refused = [o for o in outcomes if isinstance(o, TooManyRequestsException)]
            assert len(refused) == 3
            usage = platform.metrics.snapshot()["counted"]
            assert (usage.invocations, usage.throttles, usage.errors, usage.concurrent_executions) == (2, 3, 0, 0)
            assert platform.environments.memory_in_use_mb == 2 * 128
        finally:
            await platform.stop()
        assert platform.environments.memory_in_use_mb == 0

    asyncio.run(scenario())


def test_provisioned_concurrency_configs_are_listed_page_by_page(lam):
    name = create(lam)
    for version in ("1", "2"):
        publish_version(lam, name)
        lam.update_function_configuration(FunctionName=name, Description=f"after {version}")
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version,
                                               ProvisionedConcurrentExecutions=1)
    first = lam.list_provisioned_concurrency_configs(FunctionName=name, MaxItems=1)
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in first["ProvisionedConcurrencyConfigs"]] == ["1"]
    second = lam.list_provisioned_concurrency_configs(FunctionName=name, MaxItems=1,
                                                      Marker=first["NextMarker"])
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in second["ProvisionedConcurrencyConfigs"]] == ["2"]
    assert "NextMarker" not in second
    for version in ("1", "2"):
        lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
