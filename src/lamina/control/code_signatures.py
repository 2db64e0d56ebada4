"""Lamina's signed .zip packages: the signature travels in the archive's comment.

AWS Signer writes a signed copy of a package to S3 and Lambda checks it there.
Lamina has no S3, so the signature is carried by the package itself, in the zip's
end-of-central-directory comment: every zip tool keeps it, no entry is added to
/var/task or /opt, and the archive stays a valid zip for any unzip.

The comment is `LaminaCodeSignature/1 ` followed by a JSON document:

    {"profileVersionArn": "arn:aws:signer:REGION:ACCOUNT:/signing-profiles/NAME/VERSION",
     "jobId": "...", "signedAt": 1733000000, "expiresAt": 1768000000,
     "digest": "<hex SHA-384 of the package with an empty comment>",
     "certificate": "<base64 DER X.509 of the profile version>",
     "signature": "<base64 DER ECDSA P-384 / SHA-384 signature of the statement>"}

The statement signed is `statement()` below: the domain line
`lamina-code-signature-v1` and the other fields (not certificate, not signature)
as canonical JSON. The digest covers the whole archive, byte for byte, except the
comment: any change to an entry, the central directory or the archive's length
breaks it. Verifiers check the signature with the key the signing profile holds
(never with the certificate carried in the package, which is there for tools
that check a package offline).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

MAGIC = b"LaminaCodeSignature/1 "
DOMAIN = b"lamina-code-signature-v1\n"
# The digest SignPayload signs for a package: its SHA-384, the payload being the
# 48 raw bytes of it (see control.signer).
DIGEST_PAYLOAD_FORMAT = "application/vnd.lamina.code-digest+sha384"

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_MAX_COMMENT = 0xFFFF


class MalformedSignature(ValueError):
    """A package whose comment claims a Lamina signature that cannot be read."""


def _end_of_central_directory(package: bytes) -> int | None:
    """Offset of the end-of-central-directory record whose comment ends the archive."""
    floor = max(0, len(package) - _EOCD_SIZE - _MAX_COMMENT)
    at = len(package) - _EOCD_SIZE
    while at >= floor:
        at = package.rfind(_EOCD, floor, at + 4)
        if at < 0:
            return None
        length = int.from_bytes(package[at + 20:at + 22], "little")
        if at + _EOCD_SIZE + length == len(package):
            return at
        at -= 1
    return None


def _hash(package: bytes) -> tuple[hashlib._Hash, bytes]:
    """(SHA-384 of the package as signed: everything but its comment, its comment),
    without copying a package of up to 50 MB."""
    at = _end_of_central_directory(package)
    if at is None:
        return hashlib.sha384(package), b""
    digest = hashlib.sha384(memoryview(package)[:at + 20])
    digest.update(b"\x00\x00")
    return digest, package[at + _EOCD_SIZE:]


def content_digest(package: bytes) -> bytes:
    """SHA-384 of the package as signed: everything but its comment."""
    return _hash(package)[0].digest()


@dataclass(frozen=True)
class CodeSignature:
    profile_version_arn: str
    job_id: str
    # Seconds since the epoch, UTC.
    signed_at: int
    expires_at: int
    digest_hex: str
    certificate_der: bytes
    signature_der: bytes = b""

    def statement(self) -> bytes:
        """The bytes the profile's key signs."""
        fields = {
            "profileVersionArn": self.profile_version_arn, "jobId": self.job_id,
            "signedAt": self.signed_at, "expiresAt": self.expires_at, "digest": self.digest_hex,
        }
        return DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def to_comment(self) -> bytes:
        document = {
            "profileVersionArn": self.profile_version_arn, "jobId": self.job_id,
            "signedAt": self.signed_at, "expiresAt": self.expires_at, "digest": self.digest_hex,
            "certificate": base64.b64encode(self.certificate_der).decode(),
            "signature": base64.b64encode(self.signature_der).decode(),
        }
        return MAGIC + json.dumps(document, separators=(",", ":")).encode()

    @classmethod
    def from_comment(cls, comment: bytes) -> CodeSignature | None:
        """The signature a zip comment carries; None if it carries none."""
        if not comment.startswith(MAGIC):
            return None
        try:
            document: dict[str, Any] = json.loads(comment[len(MAGIC):])
            return cls(
                profile_version_arn=str(document["profileVersionArn"]),
                job_id=str(document["jobId"]),
                signed_at=int(document["signedAt"]),
                expires_at=int(document["expiresAt"]),
                digest_hex=str(document["digest"]),
                certificate_der=base64.b64decode(document["certificate"], validate=True),
                signature_der=base64.b64decode(document["signature"], validate=True),
            )
        except (ValueError, KeyError, TypeError) as error:
            raise MalformedSignature(f"unreadable code signature: {error}") from None


def read(package: bytes) -> tuple[str, CodeSignature | None]:
    """(hex digest of the package as signed, the signature it carries or None)."""
    digest, comment = _hash(package)
    return digest.hexdigest(), CodeSignature.from_comment(comment)


def embed(package: bytes, signature: bytes) -> bytes:
    """The package with `signature` (a to_comment() document) as its comment,
    replacing any comment it had."""
    at = _end_of_central_directory(package)
    if at is None:
        raise ValueError("not a zip archive: no end of central directory record")
    if len(signature) > _MAX_COMMENT:
        raise ValueError("signature longer than a zip comment can hold")
    return package[:at + 20] + len(signature).to_bytes(2, "little") + signature
