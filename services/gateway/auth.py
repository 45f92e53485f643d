"""API keys: only their sha256 digests live in settings; comparison is constant-time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from services.core.errors import Unauthorized
from services.core.settings import AuthSettings


def sha256_hex(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyChecker:
    def __init__(self, settings: AuthSettings) -> None:
        self.enabled = settings.enabled
        self._api = tuple(d.lower() for d in settings.api_key_sha256)
        # An admin key is also a valid API key.
        self._admin = tuple(d.lower() for d in settings.admin_key_sha256)

    @staticmethod
    def _matches(key: str, digests: Sequence[str]) -> bool:
        digest = sha256_hex(key)
        found = False
        for candidate in digests:
            found |= hmac.compare_digest(digest, candidate)
        return found

    @staticmethod
    def bearer(header: str | None) -> str | None:
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def identify(self, authorization: str | None) -> str:
        """Return a key id (a digest prefix, safe to log and use for limits) or raise Unauthorized."""
        if not self.enabled:
            return "anonymous"
        key = self.bearer(authorization)
        if key is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        if not self._matches(key, self._api + self._admin):
            raise Unauthorized("invalid API key")
        return sha256_hex(key)[:12]

    def require_admin(self, authorization: str | None) -> str:
        """Admin endpoints need an admin key even when API auth is off."""
        key = self.bearer(authorization)
        if key is None:
            raise Unauthorized("admin endpoint: send 'Authorization: Bearer <admin key>'")
        if not self._admin or not self._matches(key, self._admin):
            raise Unauthorized("invalid admin key")
        return sha256_hex(key)[:12]
