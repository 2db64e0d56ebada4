"""KMS keys: the subset of the key service Lambda users touch, on the same endpoint.

Symmetric keys only (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT), AES-256-GCM from
`cryptography`. A key's material is 32 random bytes, kept in the store encrypted
under the master key (`MasterKey`: a file of its own in the data dir, mode 0600,
made on first start, or the `kms_master_key` setting), so the database alone
reveals nothing.

A ciphertext blob names its key, as KMS's do, so Decrypt needs no KeyId:

    version (1 byte, 1) | key id (36 ASCII bytes) | nonce (12 bytes) | AES-GCM output

The key id and the canonical encryption context are the GCM associated data: a
blob decrypts only under its own key and with the context it was made with.

Key states follow KMS: Enabled, Disabled (DisableKey), PendingDeletion
(ScheduleKeyDeletion, 7-30 days; CancelKeyDeletion leaves it Disabled). A key whose
deletion date has passed is deleted, its material with it, when next looked up.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lamina.control.arns import Region
from lamina.errors import (
    AlreadyExistsException,
    DisabledException,
    IncorrectKeyException,
    InvalidCiphertextException,
    InvalidMarkerException,
    KMSInvalidStateException,
    NotFoundException,
    UnsupportedOperationException,
    ValidationException,
)
from lamina.limits import Limits
from lamina.store.keys import KeyStore

BLOB_VERSION = 1
KEY_ID_LENGTH = 36
NONCE_LENGTH = 12
# AWS managed keys are made on first use, under these aliases.
LAMBDA_KEY_ALIAS = "alias/aws/lambda"
AWS_MANAGED_DESCRIPTIONS = {
    LAMBDA_KEY_ALIAS: "Default key that protects my Lambda functions when no other key is defined",
}
ALIAS_PATTERN = re.compile(r"alias/[a-zA-Z0-9:/_-]+")
DATA_KEY_BYTES = {"AES_256": 32, "AES_128": 16}
LIST_LIMIT = 100


class MasterKey:
    """The key every KMS key's material is encrypted under."""

    FILE_NAME = "kms-master.key"

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the KMS master key must be 32 bytes (base64 of 32 random bytes)")
        self._aead = AESGCM(key)

    @classmethod
    def load(cls, data_dir: Path, setting: str = "") -> MasterKey:
        """From the setting when given; else the data dir's key file, made (0600,
        exclusively: two servers starting at once agree on one) if missing."""
        if setting:
            return cls(base64.b64decode(setting))
        path = data_dir / cls.FILE_NAME
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(base64.b64decode(path.read_bytes()))
        with os.fdopen(fd, "wb") as out:
            out.write(base64.b64encode(secrets.token_bytes(32)))
        return cls(base64.b64decode(path.read_bytes()))

    def wrap(self, key_id: str, material: bytes) -> str:
        nonce = secrets.token_bytes(NONCE_LENGTH)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, material, key_id.encode())).decode()

    def unwrap(self, key_id: str, wrapped: str) -> bytes:
        raw = base64.b64decode(wrapped)
        return self._aead.decrypt(raw[:NONCE_LENGTH], raw[NONCE_LENGTH:], key_id.encode())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _context_bytes(context: dict[str, str] | None) -> bytes:
    return json.dumps(context or {}, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class Key:
    key_id: str
    arn: str
    account_id: str
    created: float  # epoch seconds
    description: str = ""
    state: str = "Enabled"
    # "CUSTOMER", or "AWS" for the keys services make for themselves (aws/lambda).
    manager: str = "CUSTOMER"
    deletion_date: float | None = None
    pending_window_days: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Key:
        return cls(**data)

    def metadata(self) -> dict[str, Any]:
        """The KeyMetadata shape."""
        meta: dict[str, Any] = {
            "AWSAccountId": self.account_id,
            "KeyId": self.key_id,
            "Arn": self.arn,
            "CreationDate": datetime.datetime.fromtimestamp(self.created, datetime.timezone.utc),
            "Enabled": self.state == "Enabled",
            "Description": self.description,
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": self.state,
            "Origin": "AWS_KMS",
            "KeyManager": self.manager,
            "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
            "KeySpec": "SYMMETRIC_DEFAULT",
            "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
            "MultiRegion": False,
        }
        if self.deletion_date is not None:
            meta["DeletionDate"] = datetime.datetime.fromtimestamp(self.deletion_date,
                                                                   datetime.timezone.utc)
            meta["PendingDeletionWindowInDays"] = self.pending_window_days
        return meta


class Keys:
    def __init__(self, store: KeyStore, master: MasterKey, region: Region, limits: Limits) -> None:
        self.store = store
        self.master = master
        self.region = region
        self.limits = limits
        # Called with a key id after its state changed (disabled, enabled, scheduled
        # for deletion, deleted): environments holding what it decrypted are retired.
        self.change_listeners: list[Any] = []

    def key_arn(self, key_id: str) -> str:
        return f"arn:aws:kms:{self.region.region}:{self.region.account_id}:key/{key_id}"

    def alias_arn(self, name: str) -> str:
        return f"arn:aws:kms:{self.region.region}:{self.region.account_id}:{name}"

    def _changed(self, key_id: str) -> None:
        for listener in self.change_listeners:
            listener(key_id)

    # -- finding keys --------------------------------------------------------------

    def _key_id(self, identifier: str) -> str:
        """The key id a KeyId member names: an id, a key ARN, an alias or an alias ARN."""
        name = identifier
        prefix = f"arn:aws:kms:{self.region.region}:"
        if identifier.startswith("arn:"):
            if not identifier.startswith(prefix):
                parts = identifier.split(":")
                raise NotFoundException(f"Invalid arn {parts[3] if len(parts) > 3 else identifier}")
            resource = identifier.split(":", 5)[5]
            if resource.startswith("key/"):
                name = resource[4:]
            elif resource.startswith("alias/"):
                name = resource
            else:
                raise NotFoundException(f"Invalid arn {identifier}")
        if name.startswith("alias/"):
            target = self.store.alias_target(name)
            if target is None and name in AWS_MANAGED_DESCRIPTIONS:
                target = self._aws_managed(name).key_id
            if target is None:
                raise NotFoundException(f"Alias {self.alias_arn(name)} is not found.")
            return target
        try:
            uuid.UUID(name)
        except ValueError:
            raise NotFoundException(f"Invalid keyId '{identifier}'") from None
        if len(name) != KEY_ID_LENGTH:
            raise NotFoundException(f"Invalid keyId '{identifier}'")
        return name

    def _load(self, key_id: str) -> tuple[Key, str]:
        found = self.store.get(key_id)
        if found is None:
            raise NotFoundException(f"Key '{self.key_arn(key_id)}' does not exist")
        key, wrapped = Key.from_json(found[0]), found[1]
        if key.state == "PendingDeletion" and key.deletion_date is not None \
                and key.deletion_date <= _now().timestamp():
            # Its waiting period is over: the key and its material are gone for good.
            self.store.delete(key_id)
            self._changed(key_id)
            raise NotFoundException(f"Key '{key.arn}' does not exist")
        return key, wrapped

    def get(self, identifier: str) -> Key:
        return self._load(self._key_id(identifier))[0]

    def _aws_managed(self, alias: str) -> Key:
        """An AWS managed key, made the first time it is needed."""
        target = self.store.alias_target(alias)
        if target is not None:
            return self._load(target)[0]
        key = self._create(AWS_MANAGED_DESCRIPTIONS[alias], manager="AWS")
        if not self.store.create_alias(alias, key.key_id, self._alias_config()):
            # Another request made it meanwhile: use that one.
            self.store.delete(key.key_id)
            return self._aws_managed(alias)
        return key

    def lambda_key(self) -> Key:
        """aws/lambda: what encrypts functions' environment variables by default."""
        return self._aws_managed(LAMBDA_KEY_ALIAS)

    # -- keys ------------------------------------------------------------------------

    def _create(self, description: str, manager: str = "CUSTOMER") -> Key:
        key_id = str(uuid.uuid4())
        key = Key(key_id=key_id, arn=self.key_arn(key_id), account_id=self.region.account_id,
                  created=_now().timestamp(), description=description, manager=manager)
        self.store.create(key_id, key.to_json(), self.master.wrap(key_id, secrets.token_bytes(32)))
        return key

    def create_key(self, params: dict[str, Any]) -> Key:
        usage = params.get("KeyUsage", "ENCRYPT_DECRYPT")
        spec = params.get("KeySpec") or params.get("CustomerMasterKeySpec") or "SYMMETRIC_DEFAULT"
        if usage != "ENCRYPT_DECRYPT" or spec != "SYMMETRIC_DEFAULT":
            raise UnsupportedOperationException(
                f"KeySpec {spec} with KeyUsage {usage} is not supported by this Lamina server; "
                "only symmetric encryption keys (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT) are.")
        if params.get("Origin", "AWS_KMS") != "AWS_KMS" or params.get("MultiRegion"):
            raise UnsupportedOperationException(
                "Only keys with Origin AWS_KMS in a single region are supported by this Lamina server.")
        return self._create(params.get("Description", ""))

    def list_keys(self, limit: int | None, marker: str | None) -> tuple[list[Key], str | None]:
        ids = self.store.list_ids()
        start = 0
        if marker is not None:
            if marker not in ids:
                raise InvalidMarkerException("Invalid marker")
            start = ids.index(marker)
        page = ids[start:start + (limit or LIST_LIMIT)]
        rest = ids[start + len(page):]
        keys = []
        for key_id in page:
            try:
                keys.append(self._load(key_id)[0])
            except NotFoundException:
                continue  # its deletion date just passed
        return keys, rest[0] if rest else None

    def _customer_key(self, identifier: str) -> Key:
        key = self.get(identifier)
        if key.manager == "AWS":
            raise UnsupportedOperationException(
                f"{key.arn} is an AWS managed key, which cannot be changed.")
        return key

    def _set_state(self, key: Key, state: str) -> None:
        key.state = state
        if state != "PendingDeletion":
            key.deletion_date = key.pending_window_days = None
        self.store.put_config(key.key_id, key.to_json())
        self._changed(key.key_id)

    def enable_key(self, identifier: str) -> None:
        key = self._customer_key(identifier)
        if key.state == "PendingDeletion":
            raise KMSInvalidStateException(f"{key.arn} is pending deletion.")
        self._set_state(key, "Enabled")

    def disable_key(self, identifier: str) -> None:
        key = self._customer_key(identifier)
        if key.state == "PendingDeletion":
            raise KMSInvalidStateException(f"{key.arn} is pending deletion.")
        self._set_state(key, "Disabled")

    def schedule_deletion(self, identifier: str, days: int | None) -> Key:
        key = self._customer_key(identifier)
        days = self.limits.max_key_deletion_days if days is None else days
        low, high = self.limits.min_key_deletion_days, self.limits.max_key_deletion_days
        if not low <= days <= high:
            bound = f"greater than or equal to {low}" if days < low else f"less than or equal to {high}"
            raise ValidationException(
                f"1 validation error detected: Value '{days}' at 'pendingWindowInDays' failed to "
                f"satisfy constraint: Member must have value {bound}")
        if key.state == "PendingDeletion":
            raise KMSInvalidStateException(f"{key.arn} is pending deletion.")
        key.state = "PendingDeletion"
        key.deletion_date = (_now() + datetime.timedelta(days=days)).timestamp()
        key.pending_window_days = days
        self.store.put_config(key.key_id, key.to_json())
        self._changed(key.key_id)
        return key

    def cancel_deletion(self, identifier: str) -> Key:
        key = self._customer_key(identifier)
        if key.state != "PendingDeletion":
            raise KMSInvalidStateException(f"{key.arn} is not pending deletion.")
        # As in KMS: a key whose deletion is cancelled is Disabled until enabled.
        self._set_state(key, "Disabled")
        return key

    # -- cryptography ----------------------------------------------------------------

    def _usable(self, identifier: str) -> tuple[Key, AESGCM]:
        key_id = self._key_id(identifier)
        key, wrapped = self._load(key_id)
        if key.state == "Disabled":
            raise DisabledException(f"{key.arn} is disabled.")
        if key.state == "PendingDeletion":
            raise KMSInvalidStateException(f"{key.arn} is pending deletion.")
        return key, AESGCM(self.master.unwrap(key_id, wrapped))

    def encrypt(self, identifier: str, plaintext: bytes,
                context: dict[str, str] | None = None) -> tuple[Key, bytes]:
        key, aead = self._usable(identifier)
        nonce = secrets.token_bytes(NONCE_LENGTH)
        associated = key.key_id.encode() + _context_bytes(context)
        sealed = aead.encrypt(nonce, plaintext, associated)
        return key, bytes([BLOB_VERSION]) + key.key_id.encode() + nonce + sealed

    def decrypt(self, blob: bytes, context: dict[str, str] | None = None,
                identifier: str | None = None) -> tuple[Key, bytes]:
        head = KEY_ID_LENGTH + 1
        if len(blob) < head + NONCE_LENGTH + 16 or blob[0] != BLOB_VERSION:
            raise InvalidCiphertextException("")
        try:
            key_id = blob[1:head].decode("ascii")
            uuid.UUID(key_id)
        except ValueError:
            raise InvalidCiphertextException("") from None
        if identifier is not None and self._key_id(identifier) != key_id:
            raise IncorrectKeyException(
                "The key ID in the request does not identify a CMK that can perform this operation.")
        key, aead = self._usable(key_id)
        nonce, sealed = blob[head:head + NONCE_LENGTH], blob[head + NONCE_LENGTH:]
        try:
            return key, aead.decrypt(nonce, sealed, key_id.encode() + _context_bytes(context))
        except InvalidTag:
            # AWS says nothing more: the blob, the key or the context is wrong.
            raise InvalidCiphertextException("") from None

    def generate_data_key(self, identifier: str, key_spec: str | None, number_of_bytes: int | None,
                          context: dict[str, str] | None = None) -> tuple[Key, bytes, bytes]:
        if (key_spec is None) == (number_of_bytes is None):
            raise ValidationException("Please specify either number of bytes or key spec.")
        size = DATA_KEY_BYTES[key_spec] if key_spec is not None else int(number_of_bytes or 0)
        plaintext = secrets.token_bytes(size)
        key, blob = self.encrypt(identifier, plaintext, context)
        return key, plaintext, blob

    # -- aliases ---------------------------------------------------------------------

    def _alias_config(self) -> dict[str, Any]:
        now = _now().timestamp()
        return {"created": now, "updated": now}

    def create_alias(self, name: str, target: str) -> None:
        if not name.startswith("alias/"):
            raise ValidationException(
                'Alias must start with the prefix "alias/". Please see '
                "https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html")
        if name.startswith("alias/aws/"):
            raise ValidationException(
                "Alias names starting with alias/aws/ are reserved for AWS managed keys.")
        if not ALIAS_PATTERN.fullmatch(name):
            raise ValidationException(
                f"1 validation error detected: Value '{name}' at 'aliasName' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$")
        if target.startswith("alias/") or ":alias/" in target:
            raise ValidationException("Aliases must refer to keys. Not aliases")
        key = self.get(target)
        if not self.store.create_alias(name, key.key_id, self._alias_config()):
            raise AlreadyExistsException(f"An alias with the name {self.alias_arn(name)} already exists")

    def delete_alias(self, name: str) -> None:
        if not self.store.delete_alias(name):
            raise NotFoundException(f"Alias {self.alias_arn(name)} is not found.")

    def list_aliases(self, identifier: str | None, limit: int | None,
                     marker: str | None) -> tuple[list[dict[str, Any]], str | None]:
        key_id = self.get(identifier).key_id if identifier else None
        entries: list[dict[str, Any]] = [
            {"AliasName": name, "AliasArn": self.alias_arn(name), "TargetKeyId": target,
             "CreationDate": datetime.datetime.fromtimestamp(config["created"], datetime.timezone.utc),
             "LastUpdatedDate": datetime.datetime.fromtimestamp(config["updated"],
                                                                datetime.timezone.utc)}
            for name, target, config in self.store.aliases()
            if key_id is None or target == key_id
        ]
        names = [entry["AliasName"] for entry in entries]
        start = 0
        if marker is not None:
            if marker not in names:
                raise InvalidMarkerException("Invalid marker")
            start = names.index(marker)
        page = entries[start:start + (limit or LIST_LIMIT)]
        rest = entries[start + len(page):]
        return page, rest[0]["AliasName"] if rest else None
