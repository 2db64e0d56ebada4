"""Who may use the console.

With `LAMINA_ACCESS_KEYS` set, the console asks for an access key and its
secret once, checks them against the same keys the API verifies signatures
with, and keeps a session cookie naming the key (HMAC-signed with a secret of
this server process, so a restart signs everyone out). Every operation the
console then runs is attributed to that key, as a SigV4-signed request by it
would be. Without keys the API accepts anything on loopback, and so does the
console, on loopback only.

Forms are posted only from the console's own pages: a POST whose Origin (or
Referer) names another host is refused, so another site open in the same
browser cannot drive the console.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

from starlette.requests import Request

from lamina.api.auth import ANONYMOUS, Principal, is_loopback
from lamina.config import Settings

COOKIE = "lamina_console"
SESSION_S = 12 * 3600


class ConsoleAccess:
    def __init__(self, settings: Settings) -> None:
        self._credentials = settings.credentials
        self._accounts = settings.key_accounts
        self._secret = secrets.token_bytes(32)

    @property
    def asks_for_key(self) -> bool:
        return bool(self._credentials)

    def _mac(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    def sign_in(self, access_key_id: str, secret_access_key: str) -> str | None:
        """The session cookie's value, or None when the key or secret is wrong."""
        known = self._credentials.get(access_key_id)
        if known is None or not hmac.compare_digest(known.encode(), secret_access_key.encode()):
            return None
        text = f"{access_key_id}|{int(time.time()) + SESSION_S}"
        return base64.urlsafe_b64encode(f"{text}|{self._mac(text)}".encode()).decode()

    def principal(self, request: Request) -> Principal | None:
        """Who is using the console; None: nobody allowed (sign in, or not loopback)."""
        if not self.asks_for_key:
            client = request.client
            return ANONYMOUS if client is not None and is_loopback(client.host) else None
        cookie = request.cookies.get(COOKIE, "")
        try:
            key, expires, mac = base64.urlsafe_b64decode(cookie.encode()).decode().split("|")
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(f"{key}|{expires}")) or int(expires) < time.time():
            return None
        if key not in self._credentials:
            return None
        return Principal(key, verified=True, account_id=self._accounts.get(key))

    @staticmethod
    def same_origin(request: Request) -> bool:
        """Whether a form post comes from a page of this server."""
        origin = request.headers.get("origin") or request.headers.get("referer")
        if not origin or origin == "null":
            # Browsers send Origin on every cross-site POST; none means a same-site
            # form in an old browser or a non-browser client.
            return origin is None
        return urlsplit(origin).netloc == request.headers.get("host", "")
