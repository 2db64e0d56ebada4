"""SigV4 verification: recompute the signature with botocore, never trust it.

On a loopback-only bind with no keys configured, any well-formed or missing
credentials are accepted, so local development needs no setup; everywhere else
`lamina serve` refuses to start without keys (see `require_keys_for_bind`).
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import re
from dataclasses import dataclass
from typing import Mapping

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lamina.errors import (
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    UnrecognizedClientException,
)

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request,\s*SignedHeaders=(?P<headers>[^,]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})"
)
# AWS rejects requests whose X-Amz-Date is more than 5 minutes away from its clock.
MAX_CLOCK_SKEW = datetime.timedelta(minutes=5)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_keys_for_bind(host: str, credentials: Mapping[str, str]) -> None:
    if not credentials and not is_loopback(host):
        raise SystemExit(
            f"refusing to listen on {host} without access keys: set LAMINA_ACCESS_KEYS="
            "'AKID:SECRET' (anyone who can reach a non-loopback address could run code)"
        )


@dataclass(frozen=True)
class SignedRequest:
    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, str]
    body: bytes


class SigV4Verifier:
    def __init__(self, credentials: Mapping[str, str]) -> None:
        self._credentials = dict(credentials)

    @property
    def enabled(self) -> bool:
        return bool(self._credentials)

    def verify(self, request: SignedRequest, now: datetime.datetime | None = None) -> str | None:
        """The caller's access key id, or an AWS error if the signature is wrong."""
        header = request.headers.get("authorization")
        if not self.enabled:
            found = _AUTHORIZATION.match(header or "")
            return found.group("key") if found else None
        if header is None:
            # AWS's answer to an unsigned request, type and wording.
            raise MissingAuthenticationTokenException("Missing Authentication Token")
        found = _AUTHORIZATION.match(header)
        if found is None:
            raise IncompleteSignatureException(
                f"Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' "
                f"parameters. Authorization={header}"
            )
        secret = self._credentials.get(found.group("key"))
        if secret is None:
            raise UnrecognizedClientException(
                "The security token included in the request is invalid."
            )
        amz_date = request.headers.get("x-amz-date", "")
        try:
            signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc
            )
        except ValueError:
            raise IncompleteSignatureException("X-Amz-Date header is missing or malformed") from None
        now = now or datetime.datetime.now(datetime.timezone.utc)
        if abs(now - signed_at) > MAX_CLOCK_SKEW:
            raise InvalidSignatureException(
                f"Signature expired: {amz_date} is now earlier than "
                f"{(now - MAX_CLOCK_SKEW).strftime('%Y%m%dT%H%M%SZ')}"
            )
        expected = self._signature(request, found, secret, amz_date)
        if not hmac.compare_digest(expected, found.group("signature")):
            raise InvalidSignatureException(
                "The request signature we calculated does not match the signature you "
                "provided. Check your AWS Secret Access Key and signing method. Consult the "
                "service documentation for details."
            )
        return found.group("key")

    @staticmethod
    def _signature(
        request: SignedRequest, found: re.Match[str], secret: str, amz_date: str
    ) -> str:
        signed = found.group("headers").split(";")
        headers = {name: request.headers.get(name, "") for name in signed}
        url = "http://" + request.headers.get("host", "") + request.raw_path
        if request.raw_query:
            url += "?" + request.raw_query
        aws_request = AWSRequest(
            method=request.method, url=url, headers=headers, data=request.body
        )
        aws_request.context["timestamp"] = amz_date
        signer = SigV4Auth(
            Credentials(found.group("key"), secret), found.group("service"), found.group("region")
        )
        canonical = signer.canonical_request(aws_request)
        return signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
