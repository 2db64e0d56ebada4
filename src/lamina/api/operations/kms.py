"""KMS (`kms`, JSON protocol, X-Amz-Target TrentService.*): the key subset Lambda users touch."""

from __future__ import annotations

from typing import Any

from lamina.api.operations import Call, operation


@operation("CreateKey", service="kms")
async def create_key(call: Call) -> dict[str, Any]:
    return {"KeyMetadata": call.platform.keys.create_key(call.params).metadata()}


@operation("DescribeKey", service="kms")
async def describe_key(call: Call) -> dict[str, Any]:
    return {"KeyMetadata": call.platform.keys.get(call.params["KeyId"]).metadata()}


@operation("ListKeys", service="kms")
async def list_keys(call: Call) -> dict[str, Any]:
    keys, marker = call.platform.keys.list_keys(call.params.get("Limit"), call.params.get("Marker"))
    output: dict[str, Any] = {"Keys": [{"KeyId": key.key_id, "KeyArn": key.arn} for key in keys],
                              "Truncated": marker is not None}
    if marker is not None:
        output["NextMarker"] = marker
    return output


@operation("EnableKey", service="kms")
async def enable_key(call: Call) -> dict[str, Any]:
    call.platform.keys.enable_key(call.params["KeyId"])
    return {}


@operation("DisableKey", service="kms")
async def disable_key(call: Call) -> dict[str, Any]:
    call.platform.keys.disable_key(call.params["KeyId"])
    return {}


@operation("ScheduleKeyDeletion", service="kms")
async def schedule_key_deletion(call: Call) -> dict[str, Any]:
    key = call.platform.keys.schedule_deletion(call.params["KeyId"],
                                               call.params.get("PendingWindowInDays"))
    meta = key.metadata()
    return {"KeyId": key.arn, "DeletionDate": meta["DeletionDate"], "KeyState": key.state,
            "PendingWindowInDays": key.pending_window_days}


@operation("CancelKeyDeletion", service="kms")
async def cancel_key_deletion(call: Call) -> dict[str, Any]:
    return {"KeyId": call.platform.keys.cancel_deletion(call.params["KeyId"]).arn}


@operation("Encrypt", service="kms")
async def encrypt(call: Call) -> dict[str, Any]:
    p = call.params
    key, blob = call.platform.keys.encrypt(p["KeyId"], p["Plaintext"], p.get("EncryptionContext"))
    return {"CiphertextBlob": blob, "KeyId": key.arn, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}


@operation("Decrypt", service="kms")
async def decrypt(call: Call) -> dict[str, Any]:
    p = call.params
    key, plaintext = call.platform.keys.decrypt(p["CiphertextBlob"], p.get("EncryptionContext"),
                                                p.get("KeyId"))
    return {"KeyId": key.arn, "Plaintext": plaintext, "EncryptionAlgorithm": "SYMMETRIC_DEFAULT"}


@operation("GenerateDataKey", service="kms")
async def generate_data_key(call: Call) -> dict[str, Any]:
    p = call.params
    key, plaintext, blob = call.platform.keys.generate_data_key(
        p["KeyId"], p.get("KeySpec"), p.get("NumberOfBytes"), p.get("EncryptionContext"))
    return {"CiphertextBlob": blob, "Plaintext": plaintext, "KeyId": key.arn}


@operation("GenerateDataKeyWithoutPlaintext", service="kms")
async def generate_data_key_without_plaintext(call: Call) -> dict[str, Any]:
    p = call.params
    key, _plaintext, blob = call.platform.keys.generate_data_key(
        p["KeyId"], p.get("KeySpec"), p.get("NumberOfBytes"), p.get("EncryptionContext"))
    return {"CiphertextBlob": blob, "KeyId": key.arn}


@operation("CreateAlias", service="kms")
async def create_alias(call: Call) -> dict[str, Any]:
    call.platform.keys.create_alias(call.params["AliasName"], call.params["TargetKeyId"])
    return {}


@operation("DeleteAlias", service="kms")
async def delete_alias(call: Call) -> dict[str, Any]:
    call.platform.keys.delete_alias(call.params["AliasName"])
    return {}


@operation("ListAliases", service="kms")
async def list_aliases(call: Call) -> dict[str, Any]:
    p = call.params
    aliases, marker = call.platform.keys.list_aliases(p.get("KeyId"), p.get("Limit"), p.get("Marker"))
    output: dict[str, Any] = {"Aliases": aliases, "Truncated": marker is not None}
    if marker is not None:
        output["NextMarker"] = marker
    return output
