"""Media a caller sends inline: ``data:`` URLs (RFC 2397), as the adapters read them."""

from __future__ import annotations


def data_url(url: str) -> tuple[str, list[str], str] | None:
    """``(media type, parameters, payload)`` of a ``data:`` URL, as written; ``None`` for any
    other URL and for one without the comma before its payload."""
    if not url.startswith("data:"):
        return None
    head, comma, payload = url[len("data:"):].partition(",")
    if not comma:
        return None
    media_type, *parameters = head.split(";")
    return media_type, parameters, payload


def base64_data_url(url: str) -> tuple[str, str] | None:
    """``(media type, base64 payload)`` of a ``data:`` URL with a media type and ``;base64`` as its
    only parameter (what Anthropic and Gemini take inline); ``None`` for any other URL."""
    parts = data_url(url)
    if parts is None:
        return None
    media_type, parameters, payload = parts
    if parameters != ["base64"] or not media_type:
        return None
    return media_type, payload
