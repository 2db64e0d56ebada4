"""Functions' environment variables, sealed under a KMS key whenever they are stored.

Lambda encrypts every function's variables at rest: under the function's
`KMSKeyArn` when it has one, else under the AWS managed key `aws/lambda`. Lamina
does the same with its own key service (control/keys.py): the stored function
version holds only the sealed form (`FunctionVersion.sealed_environment`, a KMS
ciphertext blob bound to the function's ARN by its encryption context), and the
variables are opened again when an execution environment starts, or when the API
shows a function's configuration to its owner. A key that is disabled, pending
deletion or gone makes both fail the way Lambda's do.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from lamina.control.keys import BLOB_VERSION, KEY_ID_LENGTH, Keys
from lamina.errors import (
    DisabledException,
    InvalidParameterValueException,
    KMSDisabledException,
    KMSInvalidStateException,
    KMSNotFoundException,
    LambdaError,
    NotFoundException,
)


@dataclass(frozen=True)
class KeyProblem:
    """Why a function's variables cannot be opened, in Lambda's words."""

    error: LambdaError
    # The function's StateReasonCode while the key stays unusable.
    reason_code: str


def _context(function_arn: str) -> dict[str, str]:
    return {"aws:lambda:FunctionArn": function_arn}


def key_id_of(sealed: str) -> str | None:
    """The id of the key a sealed environment was sealed under."""
    blob = base64.b64decode(sealed)
    if not blob or blob[0] != BLOB_VERSION:
        return None
    return blob[1:1 + KEY_ID_LENGTH].decode("ascii", errors="replace")


class EnvironmentSecrets:
    def __init__(self, keys: Keys) -> None:
        self.keys = keys

    def check_key(self, kms_key_arn: str) -> None:
        """KMSKeyArn on Create/UpdateFunctionConfiguration: a key that can encrypt."""
        self._seal_with(kms_key_arn, b"", {})

    def seal(self, variables: dict[str, str], kms_key_arn: str | None, function_arn: str) -> str:
        plaintext = json.dumps(variables, separators=(",", ":")).encode()
        return base64.b64encode(self._seal_with(kms_key_arn, plaintext,
                                                _context(function_arn))).decode()

    def _seal_with(self, kms_key_arn: str | None, plaintext: bytes,
                   context: dict[str, str]) -> bytes:
        try:
            key = kms_key_arn or self.keys.lambda_key().arn
            return self.keys.encrypt(key, plaintext, context)[1]
        except (DisabledException, KMSInvalidStateException, NotFoundException) as error:
            # Lambda's answer when it cannot use the key it was given.
            raise InvalidParameterValueException(
                "Lambda was unable to configure access to your environment variables because the "
                "KMS key is invalid for CreateGrant. Please check your KMS key settings. "
                f"KMS Exception: {error.error_type}KMS Message: {error.message}") from None

    def open(self, sealed: str, function_arn: str) -> dict[str, str]:
        """The variables; Lambda's KMS*Exception (502) when the key cannot be used."""
        opened = self.try_open(sealed, function_arn)
        if isinstance(opened, KeyProblem):
            raise opened.error
        return opened

    def try_open(self, sealed: str, function_arn: str) -> dict[str, str] | KeyProblem:
        """The variables, or why the key cannot open them."""
        try:
            plaintext = self.keys.decrypt(base64.b64decode(sealed), _context(function_arn))[1]
        except DisabledException:
            return KeyProblem(KMSDisabledException(
                "Lambda was unable to decrypt the environment variables because the KMS key used "
                "is disabled. Please check the function's KMS key settings."), "DisabledKMSKey")
        except KMSInvalidStateException:
            return KeyProblem(KMSInvalidStateException(
                "Lambda was unable to decrypt the environment variables because the KMS key used "
                "is in an invalid state for Decrypt. Please check the function's KMS key settings."),
                "InvalidStateKMSKey")
        except NotFoundException:
            return KeyProblem(KMSNotFoundException(
                "Lambda was unable to decrypt the environment variables because the KMS key was "
                "not found. Please check the function's KMS key settings."), "KMSKeyNotFound")
        variables: dict[str, str] = json.loads(plaintext)
        return variables
