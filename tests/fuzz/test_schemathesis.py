"""schemathesis against the live gateway, driven by the OpenAPI document the gateway publishes:
positive and negative requests to every operation, with a team key and with an admin key."""

from __future__ import annotations

import schemathesis
from schemathesis import Case, CheckContext, Response
from schemathesis.specs.openapi.checks import allow_header_conformance, positive_data_acceptance

from proxy.openapi import build_document
from tests.fuzz.conftest import ADMIN_KEY, EXAMPLES, FUZZ_SETTINGS
from tests.gateway_server import TEAM_A_KEY, RunningGateway
from tests.spec_validation import validate_error_body

CATALOGUE = ("sim", "sim-chat")


def _schema(key: str, **parameters: str) -> schemathesis.BaseSchema:
    """The document ``GET /openapi.json`` serves (``test_published_document`` checks it is this one),
    narrowed so that valid bodies reach the engine and a provider dialect rather than stopping at
    a 404: ``model`` one of the test catalogue's, no ``previous_response_id`` (``test_hostile``
    sends those). ``parameters``: fixed values of query parameters."""
    document = build_document()
    for body in ("CreateResponseBody", "CompactResponseMethodPublicBody"):
        fields = document["components"]["schemas"][body]["properties"]
        fields["model"] = {"enum": list(CATALOGUE)}
        fields["previous_response_id"] = {"type": "null"}
    config = schemathesis.Config.from_dict({
        "headers": {"Authorization": f"Bearer {key}"},
        "parameters": parameters,
        "request-timeout": 30,
        "generation": {"mode": "all", "max-examples": EXAMPLES},
    })
    return schemathesis.openapi.from_dict(document, config=config)


team_schema = _schema(TEAM_A_KEY)
# An admin key must name the team whose usage it reads, which the document cannot say.
admin_schema = _schema(ADMIN_KEY, team="team-a").include(path=["/v1/usage", "/v1/policy/explain"])


def error_envelope(ctx: CheckContext, response: Response, case: Case) -> None:
    """Every 4xx and 5xx body is the Open Responses envelope, but a status the operation
    documents with its own body (``/readyz``'s 503)."""
    if response.status_code < 400 or str(response.status_code) in case.operation.definition.raw["responses"]:
        return
    validate_error_body(response.json())


def one_content_type(ctx: CheckContext, response: Response, case: Case) -> None:
    """A body's ``Content-Type`` is one a strict parser reads: a media type and no parameter twice."""
    if not response.content:
        return
    values = response.headers.get("content-type", [])
    assert len(values) == 1, values
    media_type, *parameters = (part.strip() for part in values[0].split(";"))
    assert "/" in media_type, values
    names = [parameter.split("=", 1)[0].lower() for parameter in parameters]
    assert len(names) == len(set(names)), f"a parameter twice: {values[0]}"


# Schema-valid requests may break rules across fields that no schema states (a tool choice
# names one of the request's tools; compaction needs input or a previous response; usage's
# start <= end <= now + 1 day), so a 400 for one is no failure. Litestar's automatic OPTIONS
# reply lists the methods of a path's first handler only (no DELETE on /v1/responses/{id}); no
# client of this API sends OPTIONS.
_EXCLUDED = [allow_header_conformance, positive_data_acceptance]
_ADDED = [error_envelope, one_content_type]


def _check(case: Case, gateway: RunningGateway) -> None:
    case.call_and_validate(base_url=gateway.base_url, additional_checks=_ADDED, excluded_checks=_EXCLUDED)


@team_schema.parametrize()
@FUZZ_SETTINGS
def test_team_key(case: Case, fuzzed: RunningGateway) -> None:
    _check(case, fuzzed)


@admin_schema.parametrize()
@FUZZ_SETTINGS
def test_admin_key(case: Case, fuzzed: RunningGateway) -> None:
    _check(case, fuzzed)

