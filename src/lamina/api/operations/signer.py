"""AWS Signer (`signer`, REST-JSON), the subset Lambda's code signing needs:
Put/Get/List/Revoke/CancelSigningProfile, Get/ListSigningPlatforms, SignPayload for
Lambda packages (StartSigningJob reads S3, which Lamina does not have), and the jobs
it makes: DescribeSigningJob, ListSigningJobs, RevokeSignature."""

from __future__ import annotations

import datetime
from typing import Any

from lamina.api.operations import Call, operation
from lamina.control.code_signatures import DIGEST_PAYLOAD_FORMAT
from lamina.control.signer import LAMBDA_PLATFORM, LAMBDA_PLATFORM_NAME
from lamina.errors import ResourceNotFoundException, ValidationException

# Signer's page size for ListSigningProfiles and ListSigningJobs without maxResults.
_PROFILE_PAGE = 25


@operation("PutSigningProfile", service="signer")
async def put_signing_profile(call: Call) -> dict[str, Any]:
    p = call.params
    return call.platform.signing_profiles.put(
        p["profileName"], p["platformId"], p.get("signatureValidityPeriod"),
        p.get("signingMaterial"), p.get("signingParameters"), p.get("overrides"), p.get("tags"))


@operation("GetSigningProfile", service="signer")
async def get_signing_profile(call: Call) -> dict[str, Any]:
    return call.platform.signing_profiles.get(call.params["profileName"])


@operation("ListSigningProfiles", service="signer")
async def list_signing_profiles(call: Call) -> dict[str, Any]:
    p = call.params
    profiles = call.platform.signing_profiles.list_profiles(
        bool(p.get("includeCanceled")), p.get("platformId"), p.get("statuses"))
    following = [x for x in profiles if p.get("nextToken") is None or x["profileName"] > p["nextToken"]]
    size = p.get("maxResults") or _PROFILE_PAGE
    page = following[:size]
    more = len(following) > size
    return {"profiles": page, "nextToken": page[-1]["profileName"] if more and page else None}


@operation("CancelSigningProfile", service="signer")
async def cancel_signing_profile(call: Call) -> dict[str, Any]:
    call.platform.signing_profiles.cancel(call.params["profileName"])
    return {}


@operation("RevokeSigningProfile", service="signer")
async def revoke_signing_profile(call: Call) -> dict[str, Any]:
    p = call.params
    effective = p["effectiveTime"]
    if isinstance(effective, bool) or not isinstance(effective, (int, float)):
        raise ValidationException("effectiveTime must be a timestamp (seconds since the epoch).")
    call.platform.signing_profiles.revoke(
        p["profileName"], p["profileVersion"], p["reason"],
        datetime.datetime.fromtimestamp(effective, datetime.timezone.utc), _who(call))
    return {}


def _who(call: Call) -> str:
    """Who asked, as Signer records it (requestedBy, revokedBy)."""
    principal = call.principal
    return principal.role_arn or principal.access_key_id or call.platform.region.account_id


@operation("DescribeSigningJob", service="signer")
async def describe_signing_job(call: Call) -> dict[str, Any]:
    return call.platform.signing_profiles.describe_job(call.params["jobId"])


@operation("ListSigningJobs", service="signer")
async def list_signing_jobs(call: Call) -> dict[str, Any]:
    p = call.params
    jobs = call.platform.signing_profiles.list_jobs(
        p.get("status"), p.get("platformId"), p.get("requestedBy"), p.get("isRevoked"))
    following = jobs
    if p.get("nextToken") is not None:
        ids = [job["jobId"] for job in jobs]
        following = jobs[ids.index(p["nextToken"]) + 1:] if p["nextToken"] in ids else []
    size = p.get("maxResults") or _PROFILE_PAGE
    page = following[:size]
    more = len(following) > size
    return {"jobs": page, "nextToken": page[-1]["jobId"] if more and page else None}


@operation("RevokeSignature", service="signer")
async def revoke_signature(call: Call) -> dict[str, Any]:
    p = call.params
    call.platform.signing_profiles.revoke_signature(p["jobId"], p["reason"], _who(call))
    return {}


@operation("SignPayload", service="signer")
async def sign_payload(call: Call) -> dict[str, Any]:
    p = call.params
    job_id, signature = call.platform.signing_profiles.sign_digest(
        p["profileName"], p["payload"], p["payloadFormat"], _who(call))
    return {
        "jobId": job_id,
        "jobOwner": call.platform.region.account_id,
        "metadata": {"profileVersionArn": signature.profile_version_arn,
                     "signatureExpiresAt": str(signature.expires_at)},
        # The document the package carries as its zip comment (control.code_signatures).
        "signature": signature.to_comment(),
    }


@operation("StartSigningJob", service="signer")
async def start_signing_job(call: Call) -> dict[str, Any]:
    raise ValidationException(
        "StartSigningJob reads the package from S3, which this Lamina server does not have. "
        f"Sign with SignPayload (payloadFormat {DIGEST_PAYLOAD_FORMAT}, the package's SHA-384 "
        "as payload) or with `lamina sign --profile NAME package.zip`.")


def _platform() -> dict[str, Any]:
    return {
        "platformId": LAMBDA_PLATFORM, "displayName": LAMBDA_PLATFORM_NAME, "partner": "AWSLambda",
        "target": "SHA384-ECDSA", "category": "AWSIoT",
        "signingConfiguration": {
            "encryptionAlgorithmOptions": {"allowedValues": ["ECDSA"], "defaultValue": "ECDSA"},
            "hashAlgorithmOptions": {"allowedValues": ["SHA384"], "defaultValue": "SHA384"},
        },
        "signingImageFormat": {"supportedFormats": ["JSONDetached"], "defaultFormat": "JSONDetached"},
        "maxSizeInMB": 250, "revocationSupported": True,
    }


@operation("GetSigningPlatform", service="signer")
async def get_signing_platform(call: Call) -> dict[str, Any]:
    if call.params["platformId"] != LAMBDA_PLATFORM:
        raise ResourceNotFoundException(f"Platform {call.params['platformId']} does not exist.")
    return _platform()


@operation("ListSigningPlatforms", service="signer")
async def list_signing_platforms(call: Call) -> dict[str, Any]:
    return {"platforms": [_platform()]}
