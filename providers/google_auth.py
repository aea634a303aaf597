"""OAuth2 access tokens for Google Cloud (Vertex AI) from a service-account key.

The two-legged flow of RFC 7523: sign a JWT with the key's RSA private key (RS256, via
``cryptography``) and exchange it at the token endpoint for a bearer token. A token is cached
until shortly before it expires; concurrent requests share one exchange, and a token the API
rejected (401) is replaced once by whoever sees the rejection first.

Nothing here logs or echoes the key, the assertion or the token.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from proxy.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from proxy.schema.upstream import Timeouts

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_ASSERTION_LIFETIME_S = 3600  # the most Google accepts
_REFRESH_MARGIN_S = 300.0
"""A token is replaced this long before it expires (or at half its life, if shorter), so a request
never leaves with a token that expires on the way."""

_json_encode = msgspec.json.Encoder().encode


class ServiceAccountKey(msgspec.Struct, kw_only=True):
    """The fields of a service-account JSON key the flow needs (others are ignored)."""

    client_email: str
    private_key: str
    private_key_id: str | None = None


class _TokenReply(msgspec.Struct, kw_only=True):
    access_token: str
    expires_in: float = 3600.0


def _auth_failure(message: str) -> UpstreamError:
    return UpstreamError(f"the gateway could not authenticate to Google: {message}", code="upstream_auth_failed",
                         retryable=False)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class ServiceAccountTokens:
    """Bearer tokens for one service account at one token endpoint."""

    def __init__(self, service_account_json: str, token_url: str = DEFAULT_TOKEN_URL, *,
                 scope: str = CLOUD_PLATFORM_SCOPE, clock: Callable[[], float] = time.time) -> None:
        try:
            self._account = msgspec.json.decode(service_account_json, type=ServiceAccountKey)
        except msgspec.DecodeError:  # also covers a ValidationError; the message would quote the key
            raise _auth_failure("the service_account credential is not a service-account JSON key") from None
        self._token_url = token_url
        self._scope = scope
        self._clock = clock
        self._key: rsa.RSAPrivateKey | None = None
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self, session: aiohttp.ClientSession, timeouts: Timeouts, *, rejected: str | None = None) -> str:
        """A valid access token. ``rejected`` is a token the API refused: it is replaced unless
        another request already did so."""
        async with self._lock:
            stale = self._token is None or self._token == rejected or self._clock() >= self._refresh_at
            if stale:
                await self._exchange(session, timeouts)
            assert self._token is not None
            return self._token

    def assertion(self) -> str:
        """The signed JWT that asks the token endpoint for a token."""
        now = int(self._clock())
        header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
        if self._account.private_key_id:
            header["kid"] = self._account.private_key_id
        claims = {"iss": self._account.client_email, "scope": self._scope, "aud": self._token_url,
                  "iat": now, "exp": now + _ASSERTION_LIFETIME_S}
        signing_input = f"{_b64url(_json_encode(header))}.{_b64url(_json_encode(claims))}".encode()
        signature = self._private_key().sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{_b64url(signature)}"

    def _private_key(self) -> rsa.RSAPrivateKey:
        if self._key is None:
            try:
                key = serialization.load_pem_private_key(self._account.private_key.encode(), password=None)
            except (ValueError, TypeError, UnsupportedAlgorithm):
                raise _auth_failure("the service account's private_key is not a PEM private key") from None
            if not isinstance(key, rsa.RSAPrivateKey):
                raise _auth_failure("the service account's private_key is not an RSA key")
            self._key = key
        return self._key

    async def _exchange(self, session: aiohttp.ClientSession, timeouts: Timeouts) -> None:
        form = {"grant_type": _GRANT_TYPE, "assertion": self.assertion()}
        timeout = aiohttp.ClientTimeout(total=timeouts.first_byte, sock_connect=timeouts.connect)
        started = self._clock()
        try:
            # Not followed: a redirect would carry the signed assertion elsewhere.
            async with session.post(self._token_url, data=form, timeout=timeout, allow_redirects=False) as response:
                status, body = response.status, await response.read()
        except TimeoutError as exc:
            raise UpstreamTimeout("the Google token endpoint did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"could not reach the Google token endpoint: {type(exc).__name__}") from exc
        if status >= 500:
            raise UpstreamUnavailable(f"the Google token endpoint failed with status {status}")
        if status != 200:
            raise _auth_failure(f"the token endpoint refused the service account ({status} {_oauth_error(body)})")
        try:
            reply = msgspec.json.decode(body, type=_TokenReply)
        except msgspec.DecodeError:
            raise UpstreamError("the Google token endpoint sent an unexpected reply") from None
        self._token = reply.access_token
        self._refresh_at = started + reply.expires_in - min(_REFRESH_MARGIN_S, reply.expires_in / 2)


def _oauth_error(body: bytes) -> str:
    """The OAuth ``error`` code of a refusal (``invalid_grant``...); its description may quote the
    account, so only the code is kept."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return "no details"
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else "no details"
