"""Environment variables are sealed under a KMS key at rest, opened only when an
environment starts, and a key that cannot be used fails invocations as on Lambda."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import uuid
from pathlib import Path

import pytest

from tests.helpers import (
    aws_error,
    error_message,
    function_args,
    make_zip,
    wait_active,
    wait_updated,
)

DIGEST = make_zip({"app.py": (
    "import hashlib, os\n"
    "def handler(event, context):\n"
    "    value = os.environ.get(event['name'], '')\n"
    "    return {'sha256': hashlib.sha256(value.encode()).hexdigest()}\n"
)})

HELPER = make_zip({"app.py": (
    # Lambda's "encryption helpers" pattern: a value encrypted client-side, decrypted
    # in the function with boto3's kms client (AWS_ENDPOINT_URL points it at Lamina).
    "import base64, hashlib, os, boto3\n"
    "kms = boto3.client('kms')\n"
    "def handler(event, context):\n"
    "    context_ = {'LambdaFunctionName': os.environ['AWS_LAMBDA_FUNCTION_NAME']}\n"
    "    blob = base64.b64decode(os.environ['ENCRYPTED'])\n"
    "    plain = kms.decrypt(CiphertextBlob=blob, EncryptionContext=context_)['Plaintext']\n"
    "    again = kms.encrypt(KeyId=event['key'], Plaintext=b'round trip')['CiphertextBlob']\n"
    "    back = kms.decrypt(CiphertextBlob=again)['Plaintext']\n"
    "    return {'sha256': hashlib.sha256(plain).hexdigest(), 'round_trip': back.decode()}\n"
)})


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def invoke(lam, name: str, payload: dict) -> dict:
    answer = lam.invoke(FunctionName=name, Payload=json.dumps(payload).encode())
    body = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, body
    return body


def files_containing(root: Path, needle: bytes) -> list[Path]:
    found = []
    # os.walk, not rglob: environments come and go while it looks, and a directory
    # removed under rglob ends the search with FileNotFoundError.
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            try:
                if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def kms(server):
    return server.client("kms")


def test_secret_is_never_stored_in_clear_and_the_function_reads_it(server, lam) -> None:
    secret = f"sk-live-{uuid.uuid4().hex}"
    name = f"sealed-{uuid.uuid4().hex[:8]}"
    created = lam.create_function(**function_args(name, DIGEST,
                                                  Environment={"Variables": {"API_KEY": secret}}))
    # The owner sees the variables, as on Lambda (opened for the answer only).
    assert created["Environment"] == {"Variables": {"API_KEY": secret}}
    assert "KMSKeyArn" not in created  # Lambda's own key, aws/lambda
    wait_active(lam, name)
    assert invoke(lam, name, {"name": "API_KEY"}) == {"sha256": sha(secret)}
    assert lam.get_function_configuration(FunctionName=name)["Environment"]["Variables"] == {"API_KEY": secret}
    lam.publish_version(FunctionName=name)
    assert invoke(lam, f"{name}:1", {"name": "API_KEY"}) == {"sha256": sha(secret)}
    needle = secret.encode()
    assert files_containing(server.data_dir, needle) == []
    assert needle not in server.log_path.read_bytes()


def test_aws_lambda_key_is_made_on_first_use(server, lam, kms) -> None:
    name = f"default-key-{uuid.uuid4().hex[:8]}"
    lam.create_function(**function_args(name, DIGEST, Environment={"Variables": {"AB": "c"}}))
    aliases = {a["AliasName"]: a for a in kms.list_aliases()["Aliases"]}
    key = kms.describe_key(KeyId="alias/aws/lambda")["KeyMetadata"]
    assert aliases["alias/aws/lambda"]["TargetKeyId"] == key["KeyId"]
    assert key["KeyManager"] == "AWS"
    with aws_error(kms, "UnsupportedOperationException", 400):
        kms.disable_key(KeyId=key["KeyId"])


def test_customer_key_seals_and_disabling_it_fails_invokes_until_enabled(server, lam, kms) -> None:
    key = kms.create_key(Description="function secrets")["KeyMetadata"]
    name = f"cmk-{uuid.uuid4().hex[:8]}"
    secret = uuid.uuid4().hex
    created = lam.create_function(**function_args(
        name, DIGEST, KMSKeyArn=key["Arn"], Environment={"Variables": {"TOKEN": secret}}))
    assert created["KMSKeyArn"] == key["Arn"]
    wait_active(lam, name)
    assert invoke(lam, name, {"name": "TOKEN"}) == {"sha256": sha(secret)}

    kms.disable_key(KeyId=key["KeyId"])
    with aws_error(lam, "KMSDisabledException", 502) as info:
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert error_message(info) == (
        "Lambda was unable to decrypt the environment variables because the KMS key used is "
        "disabled. Please check the function's KMS key settings.")
    config = lam.get_function_configuration(FunctionName=name)
    assert config["Environment"]["Error"]["ErrorCode"] == "KMSDisabledException"
    assert "Variables" not in config["Environment"]
    assert config["StateReasonCode"] == "DisabledKMSKey"
    assert config["StateReason"] == error_message(info)

    kms.enable_key(KeyId=key["KeyId"])
    assert invoke(lam, name, {"name": "TOKEN"}) == {"sha256": sha(secret)}
    config = lam.get_function_configuration(FunctionName=name)
    assert config["Environment"] == {"Variables": {"TOKEN": secret}}
    assert "StateReasonCode" not in config


def test_key_pending_deletion_is_an_invalid_state_at_invoke(server, lam, kms) -> None:
    key = kms.create_key()["KeyMetadata"]
    name = f"pending-{uuid.uuid4().hex[:8]}"
    lam.create_function(**function_args(name, DIGEST, KMSKeyArn=key["Arn"],
                                        Environment={"Variables": {"XX": "y"}}))
    wait_active(lam, name)
    kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
    with aws_error(lam, "KMSInvalidStateException", 502) as info:
        lam.invoke(FunctionName=name, Payload=b"{}")
    assert "invalid state for Decrypt" in error_message(info)
    assert lam.get_function_configuration(FunctionName=name)["StateReasonCode"] == "InvalidStateKMSKey"
    kms.cancel_key_deletion(KeyId=key["KeyId"])
    kms.enable_key(KeyId=key["KeyId"])
    assert invoke(lam, name, {"name": "XX"}) == {"sha256": sha("y")}


def test_changing_the_key_seals_again_under_the_new_one(server, lam, kms) -> None:
    first, second = (kms.create_key()["KeyMetadata"] for _ in range(2))
    name = f"rekey-{uuid.uuid4().hex[:8]}"
    lam.create_function(**function_args(name, DIGEST, KMSKeyArn=first["Arn"],
                                        Environment={"Variables": {"XX": "kept"}}))
    wait_active(lam, name)
    lam.update_function_configuration(FunctionName=name, KMSKeyArn=second["Arn"])
    wait_updated(lam, name)
    kms.disable_key(KeyId=first["KeyId"])
    assert invoke(lam, name, {"name": "XX"}) == {"sha256": sha("kept")}


def test_unusable_kms_key_arn_is_refused_at_create(server, lam, kms) -> None:
    key = kms.create_key()["KeyMetadata"]
    kms.disable_key(KeyId=key["KeyId"])
    with aws_error(lam, "InvalidParameterValueException", 400) as info:
        lam.create_function(**function_args(f"bad-key-{uuid.uuid4().hex[:8]}", DIGEST,
                                            KMSKeyArn=key["Arn"],
                                            Environment={"Variables": {"XX": "y"}}))
    assert error_message(info).startswith(
        "Lambda was unable to configure access to your environment variables because the KMS key "
        "is invalid for CreateGrant.")
    assert f"DisabledExceptionKMS Message: {key['Arn']} is disabled." in error_message(info)


def test_function_decrypts_client_side_values_and_round_trips_through_kms(server, lam, kms) -> None:
    key = kms.create_key()["KeyMetadata"]
    name = f"helpers-{uuid.uuid4().hex[:8]}"
    secret = f"pw-{uuid.uuid4().hex}"
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=secret.encode(),
                       EncryptionContext={"LambdaFunctionName": name})["CiphertextBlob"]
    lam.create_function(**function_args(
        name, HELPER, Timeout=30,
        Environment={"Variables": {"ENCRYPTED": base64.b64encode(blob).decode()}}))
    wait_active(lam, name)
    assert invoke(lam, name, {"key": key["Arn"]}) == {"sha256": sha(secret), "round_trip": "round trip"}


def test_variables_stored_in_clear_before_are_sealed_at_start(start_server) -> None:
    server = start_server(name="lamina-legacy-env")
    lam = server.client()
    name = "legacy"
    lam.create_function(**function_args(name, DIGEST))
    wait_active(lam, name)
    server.stop()
    # A row as servers before sealing wrote it: the variables in clear.
    legacy = f"legacy-{uuid.uuid4().hex}"
    db = sqlite3.connect(server.data_dir / "lamina.db")
    with db:
        (config,) = db.execute("SELECT config FROM function_versions WHERE function_name = ?",
                               (name,)).fetchone()
        record = json.loads(config)
        record["environment"], record["environment_given"] = {"OLD": legacy}, True
        db.execute("UPDATE function_versions SET config = ? WHERE function_name = ?",
                   (json.dumps(record), name))
    db.close()
    assert files_containing(server.data_dir, legacy.encode()) != []
    server.start()
    lam = server.client()
    assert invoke(lam, name, {"name": "OLD"}) == {"sha256": sha(legacy)}
    server.stop()
    assert files_containing(server.data_dir, legacy.encode()) == []
    server.start()
