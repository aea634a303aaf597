"""Authenticated encryption for state the gateway hands clients to bring back later (a
provider's reasoning signatures in ``encrypted_content``). Clients can neither read nor forge it;
a token is bound to the team it was issued to, so one team cannot replay another's."""

from __future__ import annotations

import base64
import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from proxy.errors import InvalidRequest

log = logging.getLogger("interlock.sealing")

PREFIX = "ilk1."
"""Marks a token sealed by interlock (version 1: AES-256-GCM, 96-bit nonce)."""


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the sealing key must be 32 bytes (base64 of 32 random bytes)")
        self._aead = AESGCM(key)

    @classmethod
    def from_env(cls, variable: str) -> Sealer:
        """The key from ``variable`` (base64); without one, a random key for this process only,
        so sealed state does not survive a restart or reach another replica."""
        encoded = os.environ.get(variable)
        if not encoded:
            log.warning("%s is not set: sealed reasoning state is valid only within this process", variable)
            return cls(AESGCM.generate_key(bit_length=256))
        try:
            return cls(base64.b64decode(encoded, validate=True))
        except ValueError as exc:
            raise ValueError(f"{variable} must hold base64 of 32 random bytes") from exc

    @staticmethod
    def is_sealed(token: str) -> bool:
        return token.startswith(PREFIX)

    def seal(self, team: str, purpose: str, payload: bytes) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, payload, _aad(team, purpose))
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def unseal(self, team: str, purpose: str, token: str, *, param: str) -> bytes:
        """The payload; a 400 naming ``param`` when the token was altered, issued to another team,
        or sealed with another key."""
        body = token[len(PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return self._aead.decrypt(raw[:12], raw[12:], _aad(team, purpose))
        except (ValueError, InvalidTag):
            raise InvalidRequest("The encrypted content was not issued by this gateway to this team, or was "
                                 "altered.", param=param, code="invalid_encrypted_content") from None


def _aad(team: str, purpose: str) -> bytes:
    return f"interlock:{purpose}:{team}".encode()
