"""A request's headers read straight from the ASGI scope.

Litestar's ``request.headers`` decodes every header into a multidict on first use, which cost
about 3% of a worker's CPU on the create route; the routes need one to three of them. The server
gives names in lower case (ASGI); the first of repeated headers is taken, as ``headers.get`` does.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection


def header(connection: ASGIConnection, name: bytes) -> str | None:
    """The value of header ``name`` (lower case), or None."""
    for key, value in connection.scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def authorization(connection: ASGIConnection) -> str | None:
    return header(connection, b"authorization")
