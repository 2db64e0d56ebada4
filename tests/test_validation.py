"""Every refused request gets AWS's error class and wording, and leaves nothing behind.

`lam_unchecked` skips boto3's own parameter checks so the server's validation is
what answers, as it would for a client in another language.
"""

from __future__ import annotations

import io
import json
import os
import struct
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.helpers import (
    ECHO,
    aws_error,
    error_message,
    function_args,
    make_zip,
    wait_active,
)

ARN_PREFIX = "arn:aws:lambda:us-east-1:000000000000:function:"
LAYER = "arn:aws:lambda:us-east-1:000000000000:layer:shared:{}"


def code_blobs(server: Server) -> set[Path]:
    """Every file under data_dir/code, temporary ones included."""
    return {p for p in (server.data_dir / "code").rglob("*") if p.is_file()}


def unique_code(name: str) -> bytes:
    """A package no other test uploads, so storing it would add a new blob."""
    return make_zip({"app.py": f"# {name}\ndef handler(event, context):\n    return event\n"})


def refused_create(server: Server, client, name: str, error: str, code: bytes | None = None,
                   status: int | None = None, **overrides: object) -> str:
    """CreateFunction must fail with `error`, store no function and no code blob."""
    before = code_blobs(server)
    with aws_error(client, error, status) as info:
        client.create_function(**function_args(name, code or unique_code(name), **overrides))
    with aws_error(client, "ResourceNotFoundException"):
        client.get_function(FunctionName=name)
    assert code_blobs(server) == before
    return error_message(info)


# -- the service model's constraints: ValidationException -------------------------


@pytest.mark.parametrize("setting, field, limit", [
    ({"MemorySize": 20000}, "Value '20000' at 'memorySize'", 10240),
    ({"Timeout": 901}, "Value '901' at 'timeout'", 900),
    # The model allows more /tmp than Lambda's quota; limits.py holds the quota.
    ({"EphemeralStorage": {"Size": 20000}}, "Value '20000' at 'ephemeralStorage.size'", 10240),
], ids=["memory-20000", "timeout-901", "ephemeral-storage-20000"])
def test_setting_over_lambdas_quota_is_validation_exception_in_aws_wording(
        server, lam_unchecked, setting, field, limit):
    message = refused_create(server, lam_unchecked, "val-over-quota", "ValidationException", **setting)
    assert message == (
        f"1 validation error detected: {field} failed to satisfy constraint: "
        f"Member must have value less than or equal to {limit}"
    )


def test_memory_size_below_128_is_validation_exception(server, lam_unchecked):
    message = refused_create(server, lam_unchecked, "val-memory-low", "ValidationException", MemorySize=64)
    assert "Value '64' at 'memorySize'" in message
    assert "Member must have value greater than or equal to 128" in message


def test_ephemeral_storage_100000_is_validation_exception(server, lam_unchecked):
    # Past the model's own maximum this time, so the model's check answers.
    message = refused_create(server, lam_unchecked, "val-tmp", "ValidationException",
                             EphemeralStorage={"Size": 100000})
    assert "Value '100000' at 'ephemeralStorage.size' failed to satisfy constraint" in message


def test_unknown_runtime_is_invalid_parameter_value_naming_the_enum(server, lam_unchecked):
    # Lambda's own check, before the model's: its exception, no count, no quotes.
    message = refused_create(server, lam_unchecked, "val-runtime", "InvalidParameterValueException",
                             Runtime="cobol85")
    assert "Value cobol85 at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [" in message
    assert "python3.12" in message


def test_role_not_an_iam_role_arn_is_validation_exception(server, lam_unchecked):
    message = refused_create(server, lam_unchecked, "val-role", "ValidationException", Role="not-a-role")
    assert "Value 'not-a-role' at 'role' failed to satisfy constraint: Member must satisfy regular expression pattern" in message


def test_missing_required_role_is_validation_exception(server, lam_unchecked):
    args = function_args("val-no-role", unique_code("val-no-role"))
    del args["Role"]
    with aws_error(lam_unchecked, "ValidationException") as info:
        lam_unchecked.create_function(**args)
    assert error_message(info) == (
        "1 validation error detected: Value null at 'role' failed to satisfy constraint: "
        "Member must not be null"
    )


def test_two_problems_are_reported_together(server, lam_unchecked):
    message = refused_create(server, lam_unchecked, "val-two", "ValidationException",
                             MemorySize=20000, Timeout=901)
    assert message.startswith("2 validation errors detected: ")
    assert "'memorySize'" in message and "'timeout'" in message


def test_function_name_with_bad_characters_is_validation_exception(server, lam_unchecked):
    with aws_error(lam_unchecked, "ValidationException") as info:
        lam_unchecked.create_function(**function_args("bad name!"))
    assert "at 'functionName' failed to satisfy constraint" in error_message(info)


def test_missing_handler_for_zip_package_is_invalid_parameter_value(server, lam_unchecked):
    args = function_args("val-no-handler", unique_code("val-no-handler"))
    del args["Handler"]
    before = code_blobs(server)
    with aws_error(lam_unchecked, "InvalidParameterValueException") as info:
        lam_unchecked.create_function(**args)
    assert "Handler is required" in error_message(info)
    assert code_blobs(server) == before


# -- Lambda's own rules: InvalidParameterValueException ---------------------------


def test_environment_over_4_kb_is_invalid_parameter_value(server, lam_unchecked):
    message = refused_create(server, lam_unchecked, "val-env-big", "InvalidParameterValueException",
                             Environment={"Variables": {"BIG": "x" * 4100}})
    assert "exceeded the 4KB limit" in message


def test_environment_of_exactly_4_kb_is_accepted(lam):
    # The limit counts the JSON of the map: {"BIG":"xxx..."} is 10 bytes plus the value.
    variables = {"BIG": "x" * (4096 - len('{"BIG":""}'))}
    created = lam.create_function(**function_args("val-env-4kb", Environment={"Variables": variables}))
    assert created["Environment"]["Variables"] == variables
    lam.delete_function(FunctionName="val-env-4kb")


def test_reserved_environment_key_is_invalid_parameter_value(server, lam_unchecked):
    message = refused_create(server, lam_unchecked, "val-env-reserved", "InvalidParameterValueException",
                             Environment={"Variables": {"AWS_REGION": "eu-west-1", "MINE": "1"}})
    assert message.endswith("Reserved keys used in this request: AWS_REGION")


def test_reserved_environment_key_on_update_is_invalid_parameter_value(lam, lam_unchecked):
    lam.create_function(**function_args("val-env-reserved-upd"))
    with aws_error(lam_unchecked, "InvalidParameterValueException"):
        lam_unchecked.update_function_configuration(
            FunctionName="val-env-reserved-upd", Environment={"Variables": {"LAMBDA_TASK_ROOT": "/elsewhere"}}
        )
    config = lam.get_function_configuration(FunctionName="val-env-reserved-upd")
    assert "Environment" not in config
    lam.delete_function(FunctionName="val-env-reserved-upd")


def test_six_layers_are_invalid_parameter_value(server, lam_unchecked):
    message = refused_create(server, lam_unchecked, "val-layers", "InvalidParameterValueException",
                             Layers=[LAYER.format(i) for i in range(1, 7)])
    assert message == "Cannot reference more than 5 layers."


# -- existence and revisions --------------------------------------------------------


def test_creating_an_existing_function_is_resource_conflict(server, lam):
    lam.create_function(**function_args("val-dup"))
    before = code_blobs(server)
    with aws_error(lam, "ResourceConflictException", 409) as info:
        lam.create_function(**function_args("val-dup", unique_code("val-dup-second")))
    assert error_message(info) == "Function already exist: val-dup"
    assert code_blobs(server) == before
    lam.delete_function(FunctionName="val-dup")


@pytest.mark.parametrize("form", ["name", "arn"])
def test_unknown_function_is_resource_not_found_with_its_arn(lam, form):
    name = "val-nobody-home"
    ref = name if form == "name" else ARN_PREFIX + name
    expected = f"Function not found: {ARN_PREFIX}{name}"
    for call in (
        lambda: lam.get_function(FunctionName=ref),
        lambda: lam.get_function_configuration(FunctionName=ref),
        lambda: lam.update_function_configuration(FunctionName=ref, Description="x"),
        lambda: lam.update_function_code(FunctionName=ref, ZipFile=ECHO),
        lambda: lam.delete_function(FunctionName=ref),
        lambda: lam.list_tags(Resource=ARN_PREFIX + name),
    ):
        with aws_error(lam, "ResourceNotFoundException", 404) as info:
            call()
        assert error_message(info) == expected


def test_stale_revision_id_is_precondition_failed_412(lam):
    created = lam.create_function(**function_args("val-stale"))
    lam.update_function_configuration(FunctionName="val-stale", Description="moved on")
    with aws_error(lam, "PreconditionFailedException", 412) as info:
        lam.update_function_configuration(
            FunctionName="val-stale", Description="late", RevisionId=created["RevisionId"]
        )
    assert "Revision Id provided does not match" in error_message(info)
    with aws_error(lam, "PreconditionFailedException", 412):
        lam.update_function_code(FunctionName="val-stale", ZipFile=ECHO, RevisionId=created["RevisionId"])
    assert lam.get_function_configuration(FunctionName="val-stale")["Description"] == "moved on"
    lam.delete_function(FunctionName="val-stale")


def test_stale_revision_id_on_code_update_stores_no_code(server, lam):
    created = lam.create_function(**function_args("val-stale-code"))
    lam.update_function_configuration(FunctionName="val-stale-code", Description="moved on")
    before = code_blobs(server)
    with aws_error(lam, "PreconditionFailedException", 412):
        lam.update_function_code(FunctionName="val-stale-code", ZipFile=unique_code("val-stale-code"),
                                 RevisionId=created["RevisionId"])
    assert code_blobs(server) == before
    lam.delete_function(FunctionName="val-stale-code")


# -- deployment packages --------------------------------------------------------------


def lying_zip(content: bytes, declared: int, crc_of_declared_prefix: bool) -> bytes:
    """A one-member zip whose headers claim `declared` bytes but inflate to len(content).

    With crc_of_declared_prefix the CRC matches the first `declared` bytes, so a reader
    that trusts the header (and stops there) sees a perfectly valid small file.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("app.py", content)
    data = bytearray(buffer.getvalue())
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    # Local header: CRC at +14, uncompressed size at +22; central: CRC +16, size +24.
    struct.pack_into("<I", data, local + 22, declared)
    struct.pack_into("<I", data, central + 24, declared)
    if crc_of_declared_prefix:
        crc = zlib.crc32(content[:declared])
        struct.pack_into("<I", data, local + 14, crc)
        struct.pack_into("<I", data, central + 16, crc)
    return bytes(data)


def test_corrupt_zip_is_invalid_parameter_value_and_stores_nothing(server, lam):
    message = refused_create(server, lam, "val-corrupt", "InvalidParameterValueException",
                             code=b"PK\x03\x04 this is not really a zip file" + os.urandom(64))
    assert message == "Could not unzip uploaded file. Please check your file, then try to upload again."


def test_zip_with_corrupted_member_data_is_invalid_parameter_value(server, lam):
    package = bytearray(unique_code("val-corrupt-member"))
    start = package.find(b"app.py") + len("app.py")
    package[start:start + 8] = b"\xff" * 8  # inside the deflate stream
    refused_create(server, lam, "val-corrupt-member", "InvalidParameterValueException", code=bytes(package))


@pytest.mark.parametrize("member", ["../evil.py", "/abs.py", "lib/../../evil.py", "..\\evil.py"])
def test_zip_slip_member_is_invalid_parameter_value_and_stores_nothing(server, lam, member):
    package = make_zip({"app.py": "def handler(e, c):\n    return e\n", member: "x = 1\n"})
    message = refused_create(server, lam, "val-zip-slip", "InvalidParameterValueException", code=package)
    assert "points outside the package" in message


def test_zip_bomb_member_inflating_past_its_header_is_invalid_parameter_value(server, lam):
    bomb = lying_zip(b"\0" * 5_000_000, declared=100, crc_of_declared_prefix=False)
    message = refused_create(server, lam, "val-bomb", "InvalidParameterValueException", code=bomb)
    assert "Could not unzip uploaded file" in message


def test_zip_bomb_with_a_crc_matching_its_lying_header_is_still_refused(server, lam):
    # zipfile alone would read 100 bytes, find the CRC right, and call it valid.
    bomb = lying_zip(b"\0" * 5_000_000, declared=100, crc_of_declared_prefix=True)
    message = refused_create(server, lam, "val-bomb-crc", "InvalidParameterValueException", code=bomb)
    assert message == "Could not unzip uploaded file: the entry 'app.py' inflates beyond its declared size."


@pytest.fixture(scope="module")
def zeros_260_mb() -> bytes:
    """A 260 MB member of zeros; deflated it is about 250 KB."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("zeros.bin", "w", force_zip64=True) as member:
            chunk = b"\0" * (4 * 1024 * 1024)
            for _ in range(65):
                member.write(chunk)
    return buffer.getvalue()


def test_package_declaring_over_250_mb_unzipped_is_invalid_parameter_value(server, lam, zeros_260_mb):
    message = refused_create(server, lam, "val-bomb-250", "InvalidParameterValueException", code=zeros_260_mb)
    assert message == "Unzipped size must be smaller than 262144000 bytes"


def test_corrupt_zip_on_update_keeps_the_old_code(server, lam):
    lam.create_function(**function_args("val-corrupt-update"))
    created = wait_active(lam, "val-corrupt-update")
    before = code_blobs(server)
    with aws_error(lam, "InvalidParameterValueException"):
        lam.update_function_code(FunctionName="val-corrupt-update", ZipFile=b"not a zip")
    config = lam.get_function_configuration(FunctionName="val-corrupt-update")
    assert (config["CodeSha256"], config["RevisionId"]) == (created["CodeSha256"], created["RevisionId"])
    assert code_blobs(server) == before
    lam.delete_function(FunctionName="val-corrupt-update")


# -- size limits, on a server with small quotas ----------------------------------------

SMALL_ZIPPED = 64 * 1024
SMALL_UNZIPPED = 1024 * 1024


@pytest.fixture(scope="module")
def small_server(start_server) -> Server:
    return start_server(
        {
            "LAMINA_MAX_ZIPPED_CODE_BYTES": str(SMALL_ZIPPED),
            "LAMINA_MAX_UNZIPPED_CODE_BYTES": str(SMALL_UNZIPPED),
        },
        name="small-quotas",
    )


def incompressible_zip(size: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("app.py", b"# " + os.urandom(size).hex().encode()[:size])
    return buffer.getvalue()


def test_zipped_package_over_the_limit_is_request_entity_too_large_413(small_server):
    client = small_server.client()
    package = incompressible_zip(2 * SMALL_ZIPPED)
    message = refused_create(small_server, client, "too-big", "RequestEntityTooLargeException",
                             code=package, status=413)
    assert message.startswith("Request must be smaller than ")
    assert message.endswith("for the CreateFunction operation")


def test_zipped_package_just_under_the_limit_is_accepted(small_server):
    client = small_server.client()
    package = incompressible_zip(SMALL_ZIPPED - 1024)
    assert len(package) <= SMALL_ZIPPED
    assert client.create_function(**function_args("just-fits", package))["CodeSize"] == len(package)


def test_code_update_over_the_limit_is_413_and_keeps_the_old_code(small_server):
    client = small_server.client()
    created = client.create_function(**function_args("update-too-big"))
    with aws_error(client, "RequestEntityTooLargeException", 413) as info:
        client.update_function_code(FunctionName="update-too-big", ZipFile=incompressible_zip(2 * SMALL_ZIPPED))
    assert error_message(info).endswith("for the UpdateFunctionCode operation")
    config = client.get_function_configuration(FunctionName="update-too-big")
    assert config["CodeSha256"] == created["CodeSha256"]


def test_package_inflating_past_the_configured_unzipped_limit_is_refused(small_server):
    client = small_server.client()
    two_mb_of_zeros = make_zip({"app.py": "def handler(e, c):\n    return e\n", "zeros.bin": b"\0" * (2 * SMALL_UNZIPPED)})
    message = refused_create(small_server, client, "too-big-unzipped", "InvalidParameterValueException",
                             code=two_mb_of_zeros)
    assert message == f"Unzipped size must be smaller than {SMALL_UNZIPPED} bytes"


# -- malformed requests --------------------------------------------------------------


def test_body_that_is_not_json_is_invalid_request_content(server):
    request = urllib.request.Request(
        server.endpoint + "/2015-03-31/functions", data=b"{not json", method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.code == 400
    assert info.value.headers["x-amzn-ErrorType"] == "InvalidRequestContentException"
    assert json.loads(info.value.read())["message"].startswith("Could not parse request body into json")


def test_zip_file_that_is_not_base64_is_invalid_request_content(server):
    body = json.dumps(function_args("val-b64", "!!not base64!!"))  # type: ignore[arg-type]
    request = urllib.request.Request(
        server.endpoint + "/2015-03-31/functions", data=body.encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.headers["x-amzn-ErrorType"] == "InvalidRequestContentException"


def test_max_items_that_is_not_a_number_is_validation_exception_naming_max_items(server):
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(server.endpoint + "/2015-03-31/functions/?MaxItems=ten")
    assert info.value.code == 400
    assert info.value.headers["x-amzn-ErrorType"] == "ValidationException"
    assert json.loads(info.value.read())["Message"] == (
        "1 validation error detected: Value 'ten' at 'maxItems' failed to satisfy "
        "constraint: Member must be a number"
    )


def test_max_items_of_zero_is_validation_exception(lam_unchecked):
    with aws_error(lam_unchecked, "ValidationException") as info:
        lam_unchecked.list_functions(MaxItems=0)
    assert "Value '0' at 'maxItems' failed to satisfy constraint: Member must have value greater than or equal to 1" in error_message(info)


def test_bad_environment_variable_name_is_reported_for_the_map_without_its_values(server, lam_unchecked):
    # AWS's wording; variables are sensitive, so the message never echoes them.
    message = refused_create(server, lam_unchecked, "val-env-name", "ValidationException",
                             Environment={"Variables": {"A": "secret-value", "OK_NAME": "x"}})
    assert message == (
        "1 validation error detected: Value at 'environment.variables' failed to satisfy "
        "constraint: Map keys must satisfy constraint: [Member must satisfy regular "
        "expression pattern: [a-zA-Z]([a-zA-Z0-9_])+]"
    )
    assert "secret-value" not in message


def test_non_string_environment_value_is_a_map_value_violation(server, lam_unchecked):
    message = refused_create(server, lam_unchecked, "val-env-value", "ValidationException",
                             Environment={"Variables": {"COUNT": 3}})
    assert message == (
        "1 validation error detected: Value at 'environment.variables' failed to satisfy "
        "constraint: Map value must satisfy constraint: [Member must be of type string]"
    )


def test_bad_tag_value_names_the_tags_map(server, lam_unchecked):
    message = refused_create(server, lam_unchecked, "val-tag-value", "ValidationException",
                             Tags={"team": "x" * 300})
    assert message.startswith("1 validation error detected: Value '{team=")
    # Every constraint of the value, as AWS lists them for maps (recorded for
    # routing weights and keys).
    assert "at 'tags' failed to satisfy constraint: Map value must satisfy constraint: " \
        "[Member must have length less than or equal to 256, Member must have length greater " \
        "than or equal to 0, Member must satisfy regular expression pattern: " in message
