"""AWS Signer's signing profiles for Lambda, and signing packages with them.

A profile (PutSigningProfile, platform `AWSLambda-SHA384-ECDSA`) gets an ECDSA
P-384 key and a self-signed X.509 certificate for its version, made with
`cryptography`. The private key never leaves the server: it is written PEM
(PKCS#8) to `<data dir>/signer/`, a 0700 directory, as a 0600 file, and the
database holds only the certificate.

Signing on AWS is StartSigningJob, which reads the package from S3 and writes the
signed copy back there. Lamina has no S3: a package is signed through SignPayload
with the payload format `application/vnd.lamina.code-digest+sha384`, whose payload
is the package's 48-byte SHA-384 digest (see control.code_signatures); the answer's
`signature` is the signature document the package then carries as its zip comment.
`lamina sign` does both steps. The package itself never travels.
"""

from __future__ import annotations

import base64
import datetime
import os
import secrets
import string
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lamina.control.arns import Region
from lamina.control.code_signatures import DIGEST_PAYLOAD_FORMAT, CodeSignature
from lamina.errors import ResourceNotFoundException, ValidationException
from lamina.limits import (
    SIGNATURE_VALIDITY_DEFAULT_MONTHS,
    SIGNATURE_VALIDITY_MAX_MONTHS,
)
from lamina.store.code_signing import SigningJobStore, SigningProfileStore

LAMBDA_PLATFORM = "AWSLambda-SHA384-ECDSA"
LAMBDA_PLATFORM_NAME = "AWS Lambda"
ACTIVE, CANCELED, REVOKED = "Active", "Canceled", "Revoked"
# Days in a unit of signatureValidityPeriod (a month: 30 days, as Signer counts).
_UNIT_DAYS = {"DAYS": 1, "MONTHS": 30, "YEARS": 365}
_UNIT_MAX = {"DAYS": SIGNATURE_VALIDITY_MAX_MONTHS * 30, "MONTHS": SIGNATURE_VALIDITY_MAX_MONTHS,
             "YEARS": SIGNATURE_VALIDITY_MAX_MONTHS // 12}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _profile_version() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(10))


@dataclass(frozen=True)
class SigningProfile:
    """A profile as the verifier needs it."""

    name: str
    version: str
    version_arn: str
    status: str
    certificate_der: bytes
    # Signatures made at or after this moment (epoch seconds) are not trusted; None
    # while the profile is not revoked.
    revoked_from: float | None

    def public_key(self) -> ec.EllipticCurvePublicKey:
        key = x509.load_der_x509_certificate(self.certificate_der).public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("a signing profile's certificate holds an ECDSA key")
        return key

    def signed(self, signature: CodeSignature) -> bool:
        """Whether the profile's key made `signature`."""
        try:
            self.public_key().verify(signature.signature_der, signature.statement(),
                                     ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            return False
        return True


class SigningProfiles:
    def __init__(self, store: SigningProfileStore, jobs: SigningJobStore, region: Region,
                 key_dir: Path) -> None:
        self.store = store
        self.jobs = jobs
        self.region = region
        self.key_dir = key_dir

    # -- ARNs ---------------------------------------------------------------------------

    def profile_arn(self, name: str) -> str:
        return f"arn:aws:signer:{self.region.region}:{self.region.account_id}:/signing-profiles/{name}"

    def version_arn(self, name: str, version: str) -> str:
        return f"{self.profile_arn(name)}/{version}"

    # -- the API --------------------------------------------------------------------------

    def put(self, name: str, platform_id: str, validity: dict[str, Any] | None,
            signing_material: dict[str, Any] | None, signing_parameters: dict[str, str] | None,
            overrides: dict[str, Any] | None, tags: dict[str, str] | None) -> dict[str, Any]:
        if platform_id != LAMBDA_PLATFORM:
            raise ValidationException(
                f"Invalid platformId: {platform_id}. This Lamina server signs for the "
                f"{LAMBDA_PLATFORM} platform only.")
        period = self._validity(validity)
        version = _profile_version()
        key = ec.generate_private_key(ec.SECP384R1())
        certificate = self._certificate(key, name, version)
        profile: dict[str, Any] = {
            "profileName": name, "profileVersion": version, "platformId": platform_id,
            "signatureValidityPeriod": period, "status": ACTIVE,
            "certificate": base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode(),
            "createdAt": _now().timestamp(),
        }
        if signing_material:
            # An ACM certificate on AWS; Lamina has no ACM and keeps it as given.
            profile["signingMaterial"] = signing_material
        if signing_parameters:
            profile["signingParameters"] = signing_parameters
        if overrides:
            profile["overrides"] = overrides
        if tags:
            profile["tags"] = tags
        existing = self.store.get(name)
        if existing is not None:
            # A profile name is never reused, even once canceled, as on Signer.
            raise ValidationException(f"A signing profile with name {name} already exists.")
        self._write_key(name, version, key)
        if not self.store.create(name, profile):
            raise ValidationException(f"A signing profile with name {name} already exists.")
        return {"arn": self.profile_arn(name), "profileVersion": version,
                "profileVersionArn": self.version_arn(name, version)}

    def get(self, name: str) -> dict[str, Any]:
        return self._to_api(self._load(name), full=True)

    def list_profiles(self, include_canceled: bool, platform_id: str | None,
             statuses: list[str] | None) -> list[dict[str, Any]]:
        found = []
        for profile in self.store.all():
            if profile["status"] == CANCELED and not include_canceled and CANCELED not in (statuses or []):
                continue
            if platform_id is not None and profile["platformId"] != platform_id:
                continue
            if statuses and profile["status"] not in statuses:
                continue
            found.append(self._to_api(profile, full=False))
        return found

    def cancel(self, name: str) -> None:
        profile = self._load(name)
        if profile["status"] == ACTIVE:
            profile["status"] = CANCELED
            self.store.replace(name, profile)

    def revoke(self, name: str, version: str, reason: str, effective: datetime.datetime,
               revoked_by: str) -> None:
        profile = self._load(name)
        if version != profile["profileVersion"]:
            raise ResourceNotFoundException(
                f"Signing profile version {version} of {name} does not exist.")
        if profile["status"] == REVOKED:
            raise ValidationException(f"Signing profile {name} is already revoked.")
        profile["status"] = REVOKED
        profile["statusReason"] = reason
        profile["revocationRecord"] = {
            "revocationEffectiveFrom": effective.timestamp(), "revokedAt": _now().timestamp(),
            "revokedBy": revoked_by,
        }
        self.store.replace(name, profile)

    def sign_digest(self, name: str, payload: bytes, payload_format: str,
                    requested_by: str = "") -> tuple[str, CodeSignature]:
        """(job id, the signature document) for a package whose SHA-384 is `payload`."""
        if payload_format != DIGEST_PAYLOAD_FORMAT:
            raise ValidationException(
                f"Invalid payloadFormat: {payload_format}. This Lamina server signs Lambda "
                f"packages by their digest: payloadFormat {DIGEST_PAYLOAD_FORMAT} with the "
                "package's 48-byte SHA-384 (use `lamina sign`).")
        if len(payload) != 48:
            raise ValidationException(
                f"The payload must be the package's SHA-384 digest, 48 bytes; got {len(payload)}.")
        profile = self._load(name)
        if profile["status"] != ACTIVE:
            raise ValidationException(
                f"Signing profile {name} is {profile['status'].lower()}; it cannot sign.")
        version = profile["profileVersion"]
        key = self._read_key(name, version)
        signed_at = int(_now().timestamp())
        period = profile["signatureValidityPeriod"]
        expires_at = signed_at + period["value"] * _UNIT_DAYS[period["type"]] * 86400
        job_id = str(uuid.uuid4())
        unsigned = CodeSignature(
            profile_version_arn=self.version_arn(name, version), job_id=job_id,
            signed_at=signed_at, expires_at=expires_at, digest_hex=payload.hex(),
            certificate_der=base64.b64decode(profile["certificate"]),
        )
        signature = key.sign(unsigned.statement(), ec.ECDSA(hashes.SHA384()))
        account = self.region.account_id
        self.jobs.create(job_id, signed_at, {
            "jobId": job_id, "profileName": name, "profileVersion": version,
            "platformId": profile["platformId"], "platformDisplayName": LAMBDA_PLATFORM_NAME,
            "createdAt": signed_at, "completedAt": signed_at, "signatureExpiresAt": expires_at,
            "status": "Succeeded", "requestedBy": requested_by or account,
            "jobOwner": account, "jobInvoker": account,
        })
        return job_id, CodeSignature(**{**unsigned.__dict__, "signature_der": signature})

    # -- signing jobs ---------------------------------------------------------------------

    def describe_job(self, job_id: str) -> dict[str, Any]:
        return self._job_to_api(self._load_job(job_id), full=True)

    def list_jobs(self, status: str | None, platform_id: str | None, requested_by: str | None,
                  is_revoked: bool | None) -> list[dict[str, Any]]:
        found = []
        for job in self.jobs.all():
            if status is not None and job["status"] != status:
                continue
            if platform_id is not None and job["platformId"] != platform_id:
                continue
            if requested_by is not None and job["requestedBy"] != requested_by:
                continue
            if is_revoked is not None and ("revocationRecord" in job) != is_revoked:
                continue
            found.append(self._job_to_api(job, full=False))
        return found

    def revoke_signature(self, job_id: str, reason: str, revoked_by: str) -> None:
        job = self._load_job(job_id)
        if "revocationRecord" not in job:
            job["revocationRecord"] = {"reason": reason, "revokedAt": _now().timestamp(),
                                       "revokedBy": revoked_by}
            self.jobs.replace(job_id, job)

    def signature_revoked(self, job_id: str) -> bool:
        """Whether the signature a job made was revoked (RevokeSignature)."""
        job = self.jobs.get(job_id)
        return job is not None and "revocationRecord" in job

    def _load_job(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None:
            raise ResourceNotFoundException(f"Signing job {job_id} does not exist.")
        return job

    @staticmethod
    def _job_to_api(job: dict[str, Any], full: bool) -> dict[str, Any]:
        def moment(seconds: float) -> datetime.datetime:
            return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)

        output: dict[str, Any] = {
            key: job[key] for key in ("jobId", "status", "profileName", "profileVersion",
                                      "platformId", "platformDisplayName", "jobOwner", "jobInvoker")
        }
        output["createdAt"] = moment(job["createdAt"])
        output["signatureExpiresAt"] = moment(job["signatureExpiresAt"])
        record = job.get("revocationRecord")
        if full:
            output["completedAt"] = moment(job["completedAt"])
            output["requestedBy"] = job["requestedBy"]
            if record:
                output["revocationRecord"] = {**record, "revokedAt": moment(record["revokedAt"])}
        else:
            output["isRevoked"] = record is not None
        return output

    # -- for the verifier -------------------------------------------------------------------

    def find_version(self, version_arn: str) -> SigningProfile | None:
        """The profile version an ARN names, in this account and region; None if none."""
        prefix = self.profile_arn("")
        if not version_arn.startswith(prefix):
            return None
        name, _, version = version_arn[len(prefix):].partition("/")
        profile = self.store.get(name)
        if profile is None or profile["profileVersion"] != version:
            return None
        record = profile.get("revocationRecord")
        return SigningProfile(
            name=name, version=version, version_arn=version_arn, status=profile["status"],
            certificate_der=base64.b64decode(profile["certificate"]),
            revoked_from=record["revocationEffectiveFrom"] if record else None,
        )

    # -- inside -------------------------------------------------------------------------------

    def _load(self, name: str) -> dict[str, Any]:
        profile = self.store.get(name)
        if profile is None:
            raise ResourceNotFoundException(f"Profile with name {name} does not exist.")
        return profile

    @staticmethod
    def _validity(validity: dict[str, Any] | None) -> dict[str, Any]:
        if not validity:
            return {"value": SIGNATURE_VALIDITY_DEFAULT_MONTHS, "type": "MONTHS"}
        value, unit = validity.get("value"), validity.get("type")
        if unit is None or value is None:
            raise ValidationException(
                "signatureValidityPeriod needs both value and type (DAYS, MONTHS or YEARS).")
        if not 1 <= value <= _UNIT_MAX[unit]:
            raise ValidationException(
                f"signatureValidityPeriod: {value} {unit} is out of range; a signature is valid "
                f"for 1 day to {SIGNATURE_VALIDITY_MAX_MONTHS} months (1-{_UNIT_MAX[unit]} {unit}).")
        return {"value": value, "type": unit}

    def _certificate(self, key: ec.EllipticCurvePrivateKey, name: str, version: str) -> x509.Certificate:
        subject = x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name}/{version}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Lamina signer"),
        ])
        now = _now()
        return (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=SIGNATURE_VALIDITY_MAX_MONTHS * 31))
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA384())
        )

    def _key_path(self, name: str, version: str) -> Path:
        return self.key_dir / f"{name}-{version}.pem"

    def _write_key(self, name: str, version: str, key: ec.EllipticCurvePrivateKey) -> None:
        self.key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.key_dir, 0o700)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        path = self._key_path(name, version)
        # Created 0600 from the start: the key is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(pem)

    def _read_key(self, name: str, version: str) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self._key_path(name, version).read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("a signing profile's key is an ECDSA key")
        return key

    def _to_api(self, profile: dict[str, Any], full: bool) -> dict[str, Any]:
        name, version = profile["profileName"], profile["profileVersion"]
        output: dict[str, Any] = {
            "profileName": name, "profileVersion": version,
            "profileVersionArn": self.version_arn(name, version),
            "platformId": profile["platformId"], "platformDisplayName": LAMBDA_PLATFORM_NAME,
            "signatureValidityPeriod": profile["signatureValidityPeriod"],
            "status": profile["status"], "arn": self.profile_arn(name),
        }
        for member in ("signingMaterial", "signingParameters", "tags"):
            if member in profile:
                output[member] = profile[member]
        if full:
            for member in ("overrides", "statusReason"):
                if member in profile:
                    output[member] = profile[member]
            record = profile.get("revocationRecord")
            if record:
                output["revocationRecord"] = {
                    key: (datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
                          if key != "revokedBy" else value)
                    for key, value in record.items()
                }
        return output
