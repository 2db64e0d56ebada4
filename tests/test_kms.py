"""The KMS subset on Lamina's endpoint, driven by boto3's own `kms` client and the AWS CLI."""

from __future__ import annotations

import base64
import json
import stat
import subprocess
import uuid

import pytest

from tests.helpers import BIN, aws_error, clean_env, error_message


@pytest.fixture(scope="module")
def kms(server):
    return server.client("kms")


def test_create_describe_and_list_a_symmetric_key(kms) -> None:
    meta = kms.create_key(Description="orders")["KeyMetadata"]
    assert meta["KeyState"] == "Enabled" and meta["Enabled"] is True
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT" and meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["KeyManager"] == "CUSTOMER" and meta["Description"] == "orders"
    assert meta["Arn"] == f"arn:aws:kms:us-east-1:000000000000:key/{meta['KeyId']}"
    assert kms.describe_key(KeyId=meta["Arn"])["KeyMetadata"]["KeyId"] == meta["KeyId"]
    listed = [key["KeyId"] for key in kms.get_paginator("list_keys").paginate().build_full_result()["Keys"]]
    assert meta["KeyId"] in listed


def test_encrypt_decrypt_round_trip_without_naming_the_key(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"s3cr3t")["CiphertextBlob"]
    assert b"s3cr3t" not in blob
    answer = kms.decrypt(CiphertextBlob=blob)
    assert answer["Plaintext"] == b"s3cr3t"
    assert answer["KeyId"].endswith(key_id) and answer["EncryptionAlgorithm"] == "SYMMETRIC_DEFAULT"


def test_encryption_context_must_match_to_decrypt(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    context = {"LambdaFunctionName": "orders"}
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"v", EncryptionContext=context)["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, EncryptionContext=context)["Plaintext"] == b"v"
    with aws_error(kms, "InvalidCiphertextException", 400):
        kms.decrypt(CiphertextBlob=blob)


def test_decrypt_with_another_key_id_is_incorrect_key(kms) -> None:
    first, second = (kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(2))
    blob = kms.encrypt(KeyId=first, Plaintext=b"v")["CiphertextBlob"]
    with aws_error(kms, "IncorrectKeyException", 400) as info:
        kms.decrypt(CiphertextBlob=blob, KeyId=second)
    assert error_message(info) == ("The key ID in the request does not identify a CMK that can "
                                   "perform this operation.")


def test_tampered_ciphertext_is_invalid(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    blob = bytearray(kms.encrypt(KeyId=key_id, Plaintext=b"v")["CiphertextBlob"])
    blob[-1] ^= 1
    with aws_error(kms, "InvalidCiphertextException", 400):
        kms.decrypt(CiphertextBlob=bytes(blob))


def test_generate_data_key_gives_a_key_and_its_sealed_copy(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    answer = kms.generate_data_key(KeyId=key_id, KeySpec="AES_256")
    assert len(answer["Plaintext"]) == 32
    assert kms.decrypt(CiphertextBlob=answer["CiphertextBlob"])["Plaintext"] == answer["Plaintext"]
    assert len(kms.generate_data_key(KeyId=key_id, NumberOfBytes=16)["Plaintext"]) == 16


def test_disabled_key_refuses_encrypt_and_decrypt_until_enabled(kms) -> None:
    meta = kms.create_key()["KeyMetadata"]
    blob = kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"v")["CiphertextBlob"]
    kms.disable_key(KeyId=meta["KeyId"])
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"
    with aws_error(kms, "DisabledException", 400) as info:
        kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"v")
    assert error_message(info) == f"{meta['Arn']} is disabled."
    with aws_error(kms, "DisabledException", 400):
        kms.decrypt(CiphertextBlob=blob)
    kms.enable_key(KeyId=meta["KeyId"])
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"v"


def test_scheduled_deletion_is_pending_then_cancelled_to_disabled(kms) -> None:
    meta = kms.create_key()["KeyMetadata"]
    answer = kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
    assert answer["KeyState"] == "PendingDeletion" and answer["PendingWindowInDays"] == 7
    assert answer["KeyId"] == meta["Arn"]
    with aws_error(kms, "KMSInvalidStateException", 400) as info:
        kms.encrypt(KeyId=meta["KeyId"], Plaintext=b"v")
    assert error_message(info) == f"{meta['Arn']} is pending deletion."
    assert kms.cancel_key_deletion(KeyId=meta["KeyId"])["KeyId"] == meta["Arn"]
    assert kms.describe_key(KeyId=meta["KeyId"])["KeyMetadata"]["KeyState"] == "Disabled"


def test_deletion_window_outside_7_to_30_days_is_refused(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    with aws_error(kms, "ValidationException", 400) as info:
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=31)
    assert "less than or equal to 30" in error_message(info)


def test_unknown_and_malformed_key_ids_are_not_found(kms) -> None:
    missing = str(uuid.uuid4())
    with aws_error(kms, "NotFoundException", 400) as info:
        kms.describe_key(KeyId=missing)
    assert error_message(info) == f"Key 'arn:aws:kms:us-east-1:000000000000:key/{missing}' does not exist"
    with aws_error(kms, "NotFoundException", 400) as info:
        kms.describe_key(KeyId="fake-key-id")
    assert error_message(info) == "Invalid keyId 'fake-key-id'"


def test_aliases_name_keys_everywhere_a_key_id_goes(kms) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    name = f"alias/orders-{uuid.uuid4().hex[:8]}"
    kms.create_alias(AliasName=name, TargetKeyId=key_id)
    assert kms.describe_key(KeyId=name)["KeyMetadata"]["KeyId"] == key_id
    blob = kms.encrypt(KeyId=name, Plaintext=b"v")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["KeyId"].endswith(key_id)
    listed = kms.list_aliases(KeyId=key_id)["Aliases"]
    assert [(a["AliasName"], a["TargetKeyId"]) for a in listed] == [(name, key_id)]
    with aws_error(kms, "AlreadyExistsException", 400):
        kms.create_alias(AliasName=name, TargetKeyId=key_id)
    with aws_error(kms, "ValidationException", 400) as info:
        kms.create_alias(AliasName="orders", TargetKeyId=key_id)
    assert error_message(info).startswith('Alias must start with the prefix "alias/".')


def test_master_key_file_is_private_and_material_is_not_in_the_database(server, kms) -> None:
    master = server.data_dir / "kms-master.key"
    assert stat.S_IMODE(master.stat().st_mode) == 0o600
    kms.create_key()
    material = base64.b64decode(master.read_bytes())
    database = (server.data_dir / "lamina.db").read_bytes()
    assert material not in database


def test_aws_cli_encrypts_and_decrypts(server, kms, tmp_path) -> None:
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    env = clean_env(tmp_path, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    common = ["--endpoint-url", server.endpoint, "--region", "us-east-1", "--output", "json"]
    # AWS CLI v1 takes a blob parameter's text as is (v2 would want base64).
    plaintext = "from the cli"
    encrypted = subprocess.run(
        [str(BIN / "aws"), "kms", "encrypt", "--key-id", key_id, "--plaintext", plaintext, *common],
        env=env, capture_output=True, text=True, timeout=60, check=True)
    blob = json.loads(encrypted.stdout)["CiphertextBlob"]
    path = tmp_path / "blob"
    path.write_bytes(base64.b64decode(blob))
    decrypted = subprocess.run(
        [str(BIN / "aws"), "kms", "decrypt", "--ciphertext-blob", f"fileb://{path}", *common],
        env=env, capture_output=True, text=True, timeout=60, check=True)
    assert base64.b64decode(json.loads(decrypted.stdout)["Plaintext"]) == b"from the cli"
