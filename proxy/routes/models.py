"""``/v1/models``: the catalogue aliases a caller's policy lets it use, each with the endpoints it
serves."""

from __future__ import annotations

from typing import cast

from litestar import Request, Response, get

from proxy.errors import NotFound
from proxy.gateway import Gateway
from proxy.routes.headers import authorization
from proxy.schema.codec import encode
from proxy.schema.response import ModelList, ModelObject


@get("/v1/models")
async def list_models(request: Request) -> Response[bytes]:
    return Response(encode(ModelList(data=_allowed(request))), media_type="application/json")


@get("/v1/models/{model_id:path}")
async def retrieve_model(request: Request) -> Response[bytes]:
    model_id = request.path_params["model_id"]
    alias = model_id.lstrip("/")
    for model in _allowed(request):
        if model.id == alias:
            return Response(encode(model), media_type="application/json")
    raise NotFound(f"The model '{alias}' does not exist or you do not have access to it.", param="model",
                   code="model_not_found")


def _allowed(request: Request) -> list[ModelObject]:
    gateway = cast(Gateway, request.app.state.gateway)
    principal = gateway.authenticate(authorization(request))
    snapshot = gateway.policies.current
    policy = snapshot.policy(principal)
    return [model for model in snapshot.catalogue.listed() if policy.allows_model(model.id)]
