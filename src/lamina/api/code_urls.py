"""Pre-signed download URLs for code, standing in for the S3 URLs AWS hands out.

GetFunction's Code.Location must work without credentials for ten minutes (as
AWS's pre-signed S3 URLs do) and for no other blob, so each URL carries an expiry
and an HMAC over the blob's hash and that expiry.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

URL_LIFETIME_S = 600
PATH_PREFIX = "/_lamina/code/"


class CodeUrlSigner:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or secrets.token_bytes(32)

    def _mac(self, sha256_hex: str, expires: int) -> str:
        return hmac.new(self._key, f"{sha256_hex}:{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, base_url: str, sha256_hex: str, now: float | None = None) -> str:
        expires = int((now or time.time()) + URL_LIFETIME_S)
        return (
            f"{base_url.rstrip('/')}{PATH_PREFIX}{sha256_hex}.zip"
            f"?Expires={expires}&Signature={self._mac(sha256_hex, expires)}"
        )

    def verify(self, sha256_hex: str, expires: str, signature: str) -> bool:
        try:
            deadline = int(expires)
        except ValueError:
            return False
        if deadline < time.time():
            return False
        return hmac.compare_digest(self._mac(sha256_hex, deadline), signature)
