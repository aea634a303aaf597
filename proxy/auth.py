"""API-key authentication. Keys are configured as SHA-256 digests, so the config file holds no
secret; a request's key is hashed and looked up, once per key and key ring."""

from __future__ import annotations

import hashlib

from msgspec import Struct

from proxy.errors import AuthenticationFailed
from proxy.settings import Settings


class Principal(Struct, frozen=True, kw_only=True):
    team: str
    key_name: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, settings: Settings) -> None:
        self._by_digest = {
            key.sha256: Principal(team=team, key_name=key.name or key.sha256[:8])
            for team, config in settings.teams.items()
            for key in config.keys
        }
        self._known: dict[str, Principal] = {}
        """Keys that authenticated before. Only a configured key gets in, so it holds at most one
        entry per key. A lookup compares the key's bytes only after its hash matched, a hash
        keyed per process, so how long a wrong key takes tells nothing about a right one."""

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise AuthenticationFailed(
                "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationFailed("The Authorization header must be 'Bearer <key>'.")
        principal = self._known.get(token)
        if principal is None:
            principal = self._by_digest.get(hash_key(token))
            if principal is None:
                raise AuthenticationFailed("Incorrect API key provided.")
            self._known[token] = principal
        return principal
