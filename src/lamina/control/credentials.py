"""Temporary credentials for execution roles, as STS's AssumeRole hands them out.

Lambda gives every execution environment the credentials of its function's
execution role (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`),
so code calling back into the platform is signed as that role. Lamina issues them
here; the API accepts a request signed with one when it also carries the session
token, and attributes the request to the role.

The registry lives in memory: credentials die with the server, as the environments
holding them do. Expired credentials stay findable (until revoked) so the API can
answer "expired" rather than "invalid", as AWS does.
"""

from __future__ import annotations

import base64
import secrets
import string
import time
from dataclasses import dataclass

# STS: temporary access key ids start with "ASIA" (long-term ones with "AKIA").
TEMPORARY_KEY_PREFIX = "ASIA"
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"
# Lambda hands out role credentials that last the environment's lifetime, at most
# hours; STS's default session is one hour, its maximum twelve.
DEFAULT_LIFETIME_S = 6 * 3600


@dataclass(frozen=True)
class TemporaryCredentials:
    access_key_id: str  # "ASIA" + 16 upper-case alphanumerics, like STS
    secret_access_key: str  # 40 characters
    session_token: str
    expiration: float  # epoch seconds
    role_arn: str

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expiration


def is_temporary_key(access_key_id: str) -> bool:
    return access_key_id.startswith(TEMPORARY_KEY_PREFIX)


class ExecutionRoleCredentials:
    """Issues, finds and revokes the temporary credentials of execution roles."""

    def __init__(self, lifetime_s: float = DEFAULT_LIFETIME_S) -> None:
        self.lifetime_s = lifetime_s
        # Only touched from the event loop's thread, and every method is a single
        # dict operation, so no lock is needed.
        self._issued: dict[str, TemporaryCredentials] = {}

    def issue(self, role_arn: str) -> TemporaryCredentials:
        while True:
            key = TEMPORARY_KEY_PREFIX + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
            if key not in self._issued:
                break
        self._forget_long_expired()
        credentials = TemporaryCredentials(
            access_key_id=key,
            secret_access_key="".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40)),
            # STS's session tokens are long opaque base64 strings; so is this one.
            session_token=base64.b64encode(secrets.token_bytes(192)).decode(),
            expiration=time.time() + self.lifetime_s,
            role_arn=role_arn,
        )
        self._issued[key] = credentials
        return credentials

    def _forget_long_expired(self) -> None:
        # Expired credentials are kept one more lifetime (so a late caller hears
        # "expired"), then dropped, so an unrevoked key cannot pile up forever.
        cutoff = time.time() - self.lifetime_s
        for key in [k for k, c in self._issued.items() if c.expiration < cutoff]:
            del self._issued[key]

    def find(self, access_key_id: str) -> TemporaryCredentials | None:
        """The issued, unrevoked credentials with this key id, expired or not."""
        return self._issued.get(access_key_id)

    def revoke(self, access_key_id: str) -> None:
        self._issued.pop(access_key_id, None)
