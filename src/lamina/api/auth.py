"""SigV4 verification: recompute the signature with botocore, never trust it.

Verification runs in two steps so that a body is never read for a request that
cannot be authentic: `authenticate` checks everything the headers decide (a
known key, its session token, the date, the credential scope's region and
service) before the body is read; `verify_signature` then recomputes the
signature over the body's actual SHA-256. An `X-Amz-Content-SHA256` header is the
client's claim about the body, so it must equal that hash (`UNSIGNED-PAYLOAD`
never does: Lambda, SQS and Logs sign their payloads).

On a loopback-only bind with no keys configured, any well-formed or missing
credentials are accepted, so local development needs no setup; everywhere else
`lamina serve` refuses to start without keys (see `require_keys_for_bind`). Even
then a request signed with an execution role's temporary credentials is verified
in full, since it is attributed to the role, and a body that does not match its
declared hash is refused.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from typing import Mapping

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lamina.control.credentials import ExecutionRoleCredentials
from lamina.errors import (
    ExpiredTokenException,
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


SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check "
    "your AWS Secret Access Key and signing method. Consult the service documentation for "
    "details."
)
INVALID_TOKEN = "The security token included in the request is invalid."


@dataclass(frozen=True)
class Principal:
    """Who sent a request, as far as its signature proves."""

    # None for an unsigned request (accepted only without configured keys).
    access_key_id: str | None
    # The execution role, for requests signed with its temporary credentials.
    role_arn: str | None = None
    # False when no keys are configured and the signature was not checked.
    verified: bool = False
    # The account the key belongs to; None: this server's own account.
    account_id: str | None = None


ANONYMOUS = Principal(None)


@dataclass(frozen=True)
class RequestHead:
    """What SigV4 covers besides the body."""

    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, str]


@dataclass(frozen=True)
class SignedRequest(RequestHead):
    body: bytes = b""

    @property
    def payload_sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()


@dataclass(frozen=True)
class Authorization:
    """A request whose headers passed; the signature is checked once the body is in."""

    principal: Principal
    # The parsed Authorization header and the key's secret, when the signature is
    # to be checked; None when it is not (no keys configured, unknown key).
    found: re.Match[str] | None = None
    secret: str | None = None


class _PayloadSigV4Auth(SigV4Auth):
    """botocore's SigV4, with the body's hash computed by the server, never the
    client's X-Amz-Content-SHA256 claim."""

    def __init__(self, credentials: Credentials, service: str, region: str,
                 payload_sha256: str) -> None:
        super().__init__(credentials, service, region)
        self._payload_sha256 = payload_sha256

    def payload(self, request: AWSRequest) -> str:
        # botocore prefers a signed X-Amz-Content-SHA256 header to this; that header
        # is checked against the body before the signature, so both agree.
        return self._payload_sha256


class SigV4Verifier:
    def __init__(
        self,
        credentials: Mapping[str, str],
        region: str = "us-east-1",
        temporary: ExecutionRoleCredentials | None = None,
        accounts: Mapping[str, str] | None = None,
    ) -> None:
        self._credentials = dict(credentials)
        # Each key's account (LAMINA_ACCESS_KEYS "AKID:SECRET:ACCOUNT"); unnamed: ours.
        self._accounts = dict(accounts or {})
        self.region = region
        self._temporary = temporary

    @property
    def enabled(self) -> bool:
        return bool(self._credentials)

    def verify(self, request: SignedRequest, service: str | None = None,
               now: datetime.datetime | None = None) -> Principal:
        """Both steps at once, for a request whose body is at hand."""
        authorization = self.authenticate(request, service, now)
        return self.verify_signature(authorization, request, request.payload_sha256)

    def authenticate(self, head: RequestHead, service: str | None = None,
                     now: datetime.datetime | None = None) -> Authorization:
        """Every check the headers alone decide; `service` is the signing name of the
        service the request is for (None when that is not known)."""
        header = head.headers.get("authorization")
        found = _AUTHORIZATION.match(header or "")
        temporary = self._temporary.find(found.group("key")) if found and self._temporary else None
        if not self.enabled and temporary is None:
            # Local development: whatever the client says it is.
            return Authorization(Principal(found.group("key")) if found else ANONYMOUS)
        if header is None:
            # AWS's answer to an unsigned request, type and wording.
            raise MissingAuthenticationTokenException("Missing Authentication Token")
        if found is None:
            raise IncompleteSignatureException(
                f"Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' "
                f"parameters. Authorization={header}"
            )
        key = found.group("key")
        token = head.headers.get("x-amz-security-token")
        role_arn = None
        if temporary is not None:
            if token is None or not hmac.compare_digest(token, temporary.session_token):
                raise UnrecognizedClientException(INVALID_TOKEN)
            if temporary.expired():
                raise ExpiredTokenException("The security token included in the request is expired")
            secret = temporary.secret_access_key
            role_arn = temporary.role_arn
        else:
            known = self._credentials.get(key)
            # A session token belongs to temporary credentials only; with a long-term
            # key it is as invalid as an unknown key.
            if known is None or token is not None:
                raise UnrecognizedClientException(INVALID_TOKEN)
            secret = known
        self._check_date(head, now)
        if found.group("region") != self.region:
            raise InvalidSignatureException("Credential should be scoped to a valid region. ")
        if service is not None and found.group("service") != service:
            raise InvalidSignatureException(
                f"Credential should be scoped to correct service: '{service}'. "
            )
        # An execution role is one of this account's roles.
        account = None if role_arn is not None else self._accounts.get(key)
        return Authorization(Principal(key, role_arn, verified=True, account_id=account), found, secret)

    @staticmethod
    def _check_date(head: RequestHead, now: datetime.datetime | None) -> None:
        amz_date = head.headers.get("x-amz-date", "")
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

    def verify_signature(self, authorization: Authorization, head: RequestHead,
                         payload_sha256: str) -> Principal:
        """The principal, once the body's hash and the signature over it check out."""
        claimed = head.headers.get("x-amz-content-sha256")
        # Checked in every mode: a body that is not the one declared is never used.
        if claimed is not None and not hmac.compare_digest(claimed.lower(), payload_sha256):
            raise InvalidSignatureException(SIGNATURE_MISMATCH)
        found, secret = authorization.found, authorization.secret
        if found is None or secret is None:
            return authorization.principal
        expected = self._signature(head, found, secret, payload_sha256)
        if not hmac.compare_digest(expected, found.group("signature")):
            raise InvalidSignatureException(SIGNATURE_MISMATCH)
        return authorization.principal

    @staticmethod
    def _signature(head: RequestHead, found: re.Match[str], secret: str,
                   payload_sha256: str) -> str:
        signed = found.group("headers").split(";")
        headers = {name: head.headers.get(name, "") for name in signed}
        url = "http://" + head.headers.get("host", "") + head.raw_path
        if head.raw_query:
            url += "?" + head.raw_query
        aws_request = AWSRequest(method=head.method, url=url, headers=headers)
        aws_request.context["timestamp"] = head.headers.get("x-amz-date", "")
        signer = _PayloadSigV4Auth(
            Credentials(found.group("key"), secret), found.group("service"),
            found.group("region"), payload_sha256,
        )
        canonical = signer.canonical_request(aws_request)
        return signer.signature(signer.string_to_sign(aws_request, canonical), aws_request)
