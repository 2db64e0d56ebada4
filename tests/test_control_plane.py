"""The function lifecycle through boto3, against a real server: create, read, list,
update, wait, tag, delete, restart, and concurrent writers."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import re
import threading
import urllib.error
import urllib.request

import pytest

from lamina.config import load_settings
from lamina.platform import Platform
from tests.conftest import Server
from tests.helpers import (
    ECHO,
    ROLE,
    aws_error,
    error_message,
    function_args,
    make_zip,
    wait_active,
    wait_updated,
)

ARN_PREFIX = "arn:aws:lambda:us-east-1:000000000000:function:"


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# -- create and read ----------------------------------------------------------------


def test_create_returns_the_configuration_with_lambdas_defaults(lam):
    created = lam.create_function(**function_args("cp-create"))
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["FunctionName"] == "cp-create"
    assert created["FunctionArn"] == ARN_PREFIX + "cp-create"
    assert created["Version"] == "$LATEST"
    assert (created["MemorySize"], created["Timeout"]) == (128, 3)
    assert created["EphemeralStorage"] == {"Size": 512}
    assert created["CodeSize"] == len(ECHO)
    assert created["CodeSha256"] == sha256_b64(ECHO)
    # Pending first, Active shortly after, as on AWS.
    assert (created["State"], created["StateReasonCode"]) == ("Pending", "Creating")
    assert "LastUpdateStatus" not in created
    active = wait_active(lam, "cp-create")
    assert (active["State"], active["LastUpdateStatus"]) == ("Active", "Successful")
    assert created["PackageType"] == "Zip"
    assert created["Architectures"] == ["x86_64"]
    assert created["LoggingConfig"]["LogGroup"] == "/aws/lambda/cp-create"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", created["LastModified"])
    assert re.fullmatch(r"[0-9a-f-]{36}", created["RevisionId"])


def test_create_keeps_every_setting_it_was_given(lam):
    created = lam.create_function(**function_args(
        "cp-settings", MemorySize=1769, Timeout=900, Description="all of them",
        EphemeralStorage={"Size": 10240}, Environment={"Variables": {"MODE": "test"}},
        Architectures=["arm64"], TracingConfig={"Mode": "Active"},
    ))
    config = lam.get_function_configuration(FunctionName="cp-settings")
    for found in (created, config):
        assert (found["MemorySize"], found["Timeout"]) == (1769, 900)
        assert found["Description"] == "all of them"
        assert found["EphemeralStorage"] == {"Size": 10240}
        assert found["Environment"] == {"Variables": {"MODE": "test"}}
        assert found["Architectures"] == ["arm64"]
        assert found["TracingConfig"] == {"Mode": "Active"}


def test_get_function_code_location_downloads_the_uploaded_bytes(lam):
    package = make_zip({"app.py": "def handler(e, c):\n    return 'download me'\n"})
    lam.create_function(**function_args("cp-download", package, Tags={"team": "core"}))
    found = lam.get_function(FunctionName="cp-download")
    assert found["Code"]["RepositoryType"] == "S3"
    assert download(found["Code"]["Location"]) == package
    assert found["Configuration"]["CodeSha256"] == sha256_b64(package)
    assert found["Tags"] == {"team": "core"}


def test_code_location_with_a_tampered_signature_is_refused_403(lam):
    lam.create_function(**function_args("cp-tamper"))
    location = lam.get_function(FunctionName="cp-tamper")["Code"]["Location"]
    tampered = location[:-4] + ("0000" if not location.endswith("0000") else "1111")
    with pytest.raises(urllib.error.HTTPError) as info:
        download(tampered)
    assert info.value.code == 403


@pytest.fixture(scope="module")
def forms_function(lam) -> str:
    return lam.create_function(**function_args("cp-forms"))["FunctionName"]


@pytest.mark.parametrize("ref", [
    "cp-forms",
    ARN_PREFIX + "cp-forms",
    "000000000000:function:cp-forms",
    ARN_PREFIX + "cp-forms:$LATEST",
])
def test_get_function_accepts_every_form_of_function_name(lam, forms_function, ref):
    assert lam.get_function(FunctionName=ref)["Configuration"]["FunctionName"] == forms_function


# -- update and wait ----------------------------------------------------------------


def test_update_function_code_changes_sha_size_and_revision(lam):
    lam.create_function(**function_args("cp-code"))
    created = wait_active(lam, "cp-code")
    new_code = make_zip({"app.py": "def handler(e, c):\n    return 'v2'\n"})
    updated = lam.update_function_code(FunctionName="cp-code", ZipFile=new_code,
                                       RevisionId=created["RevisionId"])
    assert updated["CodeSha256"] == sha256_b64(new_code)
    assert updated["CodeSize"] == len(new_code)
    assert updated["LastUpdateStatus"] == "InProgress"
    assert updated["RevisionId"] != created["RevisionId"]
    lam.get_waiter("function_updated_v2").wait(FunctionName="cp-code")
    found = lam.get_function(FunctionName="cp-code")
    assert download(found["Code"]["Location"]) == new_code
    # Settling gives a new RevisionId, as on AWS.
    assert found["Configuration"]["LastUpdateStatus"] == "Successful"


def test_update_function_configuration_changes_only_what_it_names(lam):
    lam.create_function(**function_args(
        "cp-config", Description="before", Environment={"Variables": {"KEEP": "1"}}))
    created = wait_active(lam, "cp-config")
    updated = lam.update_function_configuration(FunctionName="cp-config", MemorySize=512, Timeout=30)
    assert (updated["MemorySize"], updated["Timeout"]) == (512, 30)
    assert updated["Description"] == "before"
    assert updated["Environment"] == {"Variables": {"KEEP": "1"}}
    assert updated["CodeSha256"] == created["CodeSha256"]
    assert updated["RevisionId"] != created["RevisionId"]
    lam.get_waiter("function_updated_v2").wait(FunctionName="cp-config")
    config = lam.get_function_configuration(FunctionName="cp-config")
    assert (config["MemorySize"], config["Timeout"], config["LastUpdateStatus"]) == (512, 30, "Successful")


def test_empty_environment_removes_every_variable(lam):
    lam.create_function(**function_args("cp-env-clear", Environment={"Variables": {"A1": "x"}}))
    lam.update_function_configuration(FunctionName="cp-env-clear", Environment={"Variables": {}})
    assert "Environment" not in lam.get_function_configuration(FunctionName="cp-env-clear")


def test_waiters_for_active_and_updated_return_at_once(lam):
    lam.create_function(**function_args("cp-waiters"))
    lam.get_waiter("function_active_v2").wait(FunctionName="cp-waiters", WaiterConfig={"Delay": 1, "MaxAttempts": 2})
    lam.get_waiter("function_active").wait(FunctionName="cp-waiters", WaiterConfig={"Delay": 1, "MaxAttempts": 2})
    lam.get_waiter("function_exists").wait(FunctionName="cp-waiters", WaiterConfig={"Delay": 1, "MaxAttempts": 2})
    lam.update_function_configuration(FunctionName="cp-waiters", Description="changed")
    lam.get_waiter("function_updated_v2").wait(FunctionName="cp-waiters", WaiterConfig={"Delay": 1, "MaxAttempts": 2})
    lam.get_waiter("function_updated").wait(FunctionName="cp-waiters", WaiterConfig={"Delay": 1, "MaxAttempts": 2})


# -- tags ----------------------------------------------------------------------------


def test_tag_untag_and_list_tags(lam):
    arn = lam.create_function(**function_args("cp-tags", Tags={"team": "core", "env": "dev"}))["FunctionArn"]
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "core", "env": "dev"}
    lam.tag_resource(Resource=arn, Tags={"env": "prod", "cost": "42"})
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "core", "env": "prod", "cost": "42"}
    lam.untag_resource(Resource=arn, TagKeys=["team", "not-there"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"env": "prod", "cost": "42"}
    assert lam.get_function(FunctionName="cp-tags")["Tags"] == {"env": "prod", "cost": "42"}
    lam.untag_resource(Resource=arn, TagKeys=["env", "cost"])
    assert lam.list_tags(Resource=arn)["Tags"] == {}
    assert "Tags" not in lam.get_function(FunctionName="cp-tags")


def test_more_than_50_tags_are_invalid_parameter_value(lam):
    arn = lam.create_function(**function_args("cp-many-tags", Tags={f"k{i}": "v" for i in range(40)}))["FunctionArn"]
    with aws_error(lam, "InvalidParameterValueException"):
        lam.tag_resource(Resource=arn, Tags={f"n{i}": "v" for i in range(11)})
    assert len(lam.list_tags(Resource=arn)["Tags"]) == 40


def test_tags_of_a_deleted_function_do_not_come_back_with_a_new_one(lam):
    lam.create_function(**function_args("cp-tags-reborn", Tags={"old": "1"}))
    lam.delete_function(FunctionName="cp-tags-reborn")
    arn = lam.create_function(**function_args("cp-tags-reborn"))["FunctionArn"]
    assert lam.list_tags(Resource=arn)["Tags"] == {}


# -- delete --------------------------------------------------------------------------


def test_delete_function_then_it_is_gone_and_the_name_is_free(lam):
    lam.create_function(**function_args("cp-delete"))
    response = lam.delete_function(FunctionName="cp-delete")
    # AWS answers 204 (recorded), also where the model's default says 200.
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 204
    with aws_error(lam, "ResourceNotFoundException", 404):
        lam.get_function(FunctionName="cp-delete")
    with aws_error(lam, "ResourceNotFoundException", 404):
        lam.delete_function(FunctionName="cp-delete")
    names = [f["FunctionName"] for page in lam.get_paginator("list_functions").paginate() for f in page["Functions"]]
    assert "cp-delete" not in names
    lam.create_function(**function_args("cp-delete"))


# -- account -------------------------------------------------------------------------


def test_get_account_settings_reports_quotas_and_counts_new_functions(lam):
    before = lam.get_account_settings()
    assert before["AccountLimit"] == {
        "TotalCodeSize": 75 * 1024**3,
        "CodeSizeUnzipped": 250 * 1024**2,
        "CodeSizeZipped": 50 * 1024**2,
        "ConcurrentExecutions": 1000,
        "UnreservedConcurrentExecutions": 1000,
    }
    package = make_zip({"app.py": "def handler(e, c):\n    return 'counted'\n"})
    lam.create_function(**function_args("cp-account", package))
    after = lam.get_account_settings()["AccountUsage"]
    assert after["FunctionCount"] == before["AccountUsage"]["FunctionCount"] + 1
    assert after["TotalCodeSize"] == before["AccountUsage"]["TotalCodeSize"] + len(package)
    lam.delete_function(FunctionName="cp-account")
    assert lam.get_account_settings()["AccountUsage"] == before["AccountUsage"]


def test_account_code_size_counts_published_versions_and_layers(lam):
    # AWS counts every version's package and every layer version's archive.
    before = lam.get_account_settings()["AccountUsage"]
    package = make_zip({"app.py": "def handler(e, c):\n    return 'versioned'\n"})
    lam.create_function(**function_args("cp-account-versions", package, Publish=True))
    layer = make_zip({"python/shared.py": "X = 1\n"})
    published = lam.publish_layer_version(LayerName="cp-account-layer", Content={"ZipFile": layer})
    after = lam.get_account_settings()["AccountUsage"]
    assert after["FunctionCount"] == before["FunctionCount"] + 1
    assert after["TotalCodeSize"] == before["TotalCodeSize"] + 2 * len(package) + len(layer)
    lam.delete_function(FunctionName="cp-account-versions")
    lam.delete_layer_version(LayerName="cp-account-layer", VersionNumber=published["Version"])
    assert lam.get_account_settings()["AccountUsage"] == before


# -- listing 60 functions, and a restart ------------------------------------------------

LISTED = [f"fn-{i:03d}" for i in range(60)]


@pytest.fixture(scope="module")
def listing_server(start_server) -> Server:
    """A server of its own holding exactly 60 functions, so pages are exact."""
    srv = start_server(name="listing")
    client = srv.client()
    for name in LISTED:
        client.create_function(**function_args(name, Description=f"about {name}"))
    return srv


def test_list_functions_pages_through_60_functions_with_marker_and_max_items(listing_server):
    client = listing_server.client()
    seen: list[str] = []
    pages = 0
    marker = None
    while True:
        kwargs = {"MaxItems": 7, **({"Marker": marker} if marker else {})}
        page = client.list_functions(**kwargs)
        pages += 1
        assert len(page["Functions"]) <= 7
        seen += [f["FunctionName"] for f in page["Functions"]]
        marker = page.get("NextMarker")
        if not marker:
            break
    assert pages == 9
    assert seen == LISTED
    assert all(f["Description"] == f"about {f['FunctionName']}" for f in page["Functions"])


def test_list_functions_without_max_items_returns_50_and_a_marker(listing_server):
    client = listing_server.client()
    first = client.list_functions()
    assert len(first["Functions"]) == 50
    rest = client.list_functions(Marker=first["NextMarker"])
    assert [f["FunctionName"] for f in first["Functions"] + rest["Functions"]] == LISTED
    assert "NextMarker" not in rest


def test_list_functions_never_returns_more_than_50_per_page(listing_server):
    client = listing_server.client()
    first = client.list_functions(MaxItems=1000)
    assert len(first["Functions"]) == 50
    assert first["NextMarker"]


def test_boto3_paginator_lists_every_function_once(listing_server):
    client = listing_server.client()
    pages = list(client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 25}))
    assert [len(p["Functions"]) for p in pages] == [25, 25, 10]
    assert [f["FunctionName"] for p in pages for f in p["Functions"]] == LISTED
    capped = client.get_paginator("list_functions").paginate(
        PaginationConfig={"PageSize": 8, "MaxItems": 20}).build_full_result()
    assert [f["FunctionName"] for f in capped["Functions"]] == LISTED[:20]
    assert "NextToken" in capped


def test_functions_are_found_again_after_a_restart_on_the_same_data_dir(listing_server):
    client = listing_server.client()
    before = {f["FunctionName"]: f for p in client.get_paginator("list_functions").paginate() for f in p["Functions"]}
    listing_server.stop()
    listing_server.start()
    client = listing_server.client()
    after = {f["FunctionName"]: f for p in client.get_paginator("list_functions").paginate() for f in p["Functions"]}
    assert after == before
    found = client.get_function(FunctionName="fn-042")
    assert download(found["Code"]["Location"]) == ECHO
    client.update_function_configuration(FunctionName="fn-042", Description="after restart")
    assert client.get_function_configuration(FunctionName="fn-042")["Description"] == "after restart"


def test_functions_survive_a_killed_server(listing_server):
    client = listing_server.client()
    client.create_function(**function_args("fn-zz-before-kill"))
    listing_server.stop(kill=True)
    listing_server.start()
    client = listing_server.client()
    assert client.get_function(FunctionName="fn-zz-before-kill")["Configuration"]["State"] == "Active"
    client.delete_function(FunctionName="fn-zz-before-kill")


# -- concurrent writers --------------------------------------------------------------

WRITERS = 20


def run_writers(count: int, write) -> tuple[list[dict], list[Exception]]:
    """Run `write(i)` in `count` threads released together; results and errors."""
    results: list[dict] = []
    errors: list[Exception] = []
    lock = threading.Lock()
    barrier = threading.Barrier(count)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            result = write(i)
            with lock:
                results.append(result)
        except Exception as exc:  # collected and asserted on by the test
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results, errors


def test_concurrent_configuration_updates_apply_whole_or_conflict_while_one_is_in_progress(server):
    client = server.client(max_pool_connections=WRITERS)
    client.create_function(**function_args("cp-concurrent"))
    wait_active(client, "cp-concurrent")

    def write(i: int) -> dict:
        return client.update_function_configuration(
            FunctionName="cp-concurrent", Description=f"writer-{i}",
            Environment={"Variables": {f"VAR_{i}": str(i)}},
        )

    results, errors = run_writers(WRITERS, write)
    # As on AWS, an update arriving while another is InProgress is refused (409).
    assert results and len(results) + len(errors) == WRITERS
    for error in errors:
        assert isinstance(error, client.exceptions.ResourceConflictException), error
    # Every accepted write was its own revision, each applied whole.
    assert len({r["RevisionId"] for r in results}) == len(results)
    for r in results:
        i = r["Description"].removeprefix("writer-")
        assert r["Environment"] == {"Variables": {f"VAR_{i}": i}}
    final = wait_updated(client, "cp-concurrent")
    winner = next(r for r in results if r["Description"] == final["Description"])
    assert (final["Description"], final["Environment"]) == (winner["Description"], winner["Environment"])


def test_concurrent_updates_with_the_same_revision_id_let_exactly_one_win(server):
    client = server.client(max_pool_connections=WRITERS)
    client.create_function(**function_args("cp-cas"))
    revision = wait_active(client, "cp-cas")["RevisionId"]

    def write(i: int) -> dict:
        return client.update_function_configuration(
            FunctionName="cp-cas", Description=f"writer-{i}", RevisionId=revision)

    results, errors = run_writers(WRITERS, write)
    assert len(results) == 1
    assert len(errors) == WRITERS - 1
    for error in errors:
        # 412 for a stale RevisionId; 409 when the winner's update is still InProgress.
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] in (409, 412)
    final = wait_updated(client, "cp-cas")
    assert final["Description"] == results[0]["Description"]


def test_registry_retries_a_lost_compare_and_swap_so_no_update_is_lost(tmp_path):
    # The HTTP server runs one handler at a time; this drives the registry itself
    # from many threads on one SQLite file, so writers really do collide.
    platform = Platform(load_settings(env={}, data_dir=tmp_path / "data"))
    registry = platform.functions
    asyncio.run(registry.create_function("racy", ECHO, {"role": ROLE, "runtime": "python3.11",
                                                        "handler": "app.handler"}, {}))
    registry.resume_waiting()  # settles it here: no server loop runs
    registry._check_not_updating = lambda fv: None  # the store's compare-and-swap is under test

    def write(i: int) -> dict:
        def change(current):
            # Read-modify-write of the description: a lost update would drop a mark.
            return dataclasses.replace(current, description=current.description + f"[{i}]")
        # The same path every Update* operation takes, with a change that shows losses.
        return {"RevisionId": registry._update_latest("racy", None, change).revision_id}

    results, errors = run_writers(WRITERS, write)
    platform.engine.dispose()
    assert errors == []
    final = registry.get_version("racy")
    marks = re.findall(r"\[(\d+)\]", final.description)
    assert sorted(map(int, marks)) == list(range(WRITERS))
    assert len({r["RevisionId"] for r in results}) == WRITERS


def test_tag_resource_with_no_tags_is_refused_and_changes_nothing(lam_unchecked):
    arn = lam_unchecked.create_function(**function_args("cp-tags-none", Tags={"keep": "me"}))["FunctionArn"]
    with aws_error(lam_unchecked, "InvalidParameterValueException", 400) as info:
        lam_unchecked.tag_resource(Resource=arn, Tags={})
    assert error_message(info) == "An error occurred and the request cannot be processed."
    assert lam_unchecked.list_tags(Resource=arn)["Tags"] == {"keep": "me"}


def test_function_arn_from_another_region_is_not_found(lam):
    lam.create_function(**function_args("cp-region"))
    with aws_error(lam, "ResourceNotFoundException", 404) as info:
        lam.get_function(FunctionName="arn:aws:lambda:eu-west-1:000000000000:function:cp-region")
    assert error_message(info) == "Functions from 'eu-west-1' are not reachable in this region ('us-east-1')"
