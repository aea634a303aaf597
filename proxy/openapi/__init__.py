"""The gateway's OpenAPI document (``GET /openapi.json``): ``build_document()``."""

from proxy.openapi.document import build_document

__all__ = ["build_document"]
