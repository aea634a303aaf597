"""A gateway to fuzz: SQLite store, the embedded simulator, two teams and an admin key, and short
body and header deadlines so slow-client tests stay short.

``INTERLOCK_FUZZ_EXAMPLES`` sets the examples each property and each schemathesis operation gets
(CI's default keeps the whole directory near a minute; raise it for a long run)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cache

import pytest
from hypothesis import HealthCheck, settings
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from proxy.auth import hash_key
from proxy.openapi import build_document
from tests.gateway_server import RunningGateway, gateway_settings, serve

EXAMPLES = int(os.environ.get("INTERLOCK_FUZZ_EXAMPLES", "25"))
ADMIN_KEY = "sk-test-admin"
BODY_TIMEOUT_S = 1.0
HEADER_TIMEOUT_S = 1.0

FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=EXAMPLES <= 25,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.filter_too_much])
"""Hypothesis settings of every fuzz test. CI's short run is derandomized, so a failure there
reproduces; a long run explores with fresh randomness."""


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'store.db'}"
    settings = gateway_settings(url, request_body_timeout_s=BODY_TIMEOUT_S, max_body_bytes=4 * 1024 * 1024,
                                listen={"header_timeout_s": HEADER_TIMEOUT_S},
                                admin_keys=[{"sha256": hash_key(ADMIN_KEY), "name": "ops"}])
    with serve(settings) as gateway:
        yield gateway


@cache
def document_validator(component: str) -> Draft202012Validator:
    """A component of the published document: the spec's, with the departures it documents."""
    registry = Registry().with_resource("doc", Resource.opaque(build_document()))
    return Draft202012Validator({"$ref": f"doc#/components/schemas/{component}"}, registry=registry)
