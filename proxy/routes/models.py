"""``/v1/models``: the catalogue aliases a caller may use, each with the endpoints it serves."""

from __future__ import annotations

from typing import cast

from litestar import Request, Response, get

from proxy.errors import NotFound
from proxy.gateway import Gateway
from proxy.schema.codec import encode
from proxy.schema.response import ModelList


@get("/v1/models")
async def list_models(request: Request) -> Response[bytes]:
    gateway = cast(Gateway, request.app.state.gateway)
    gateway.authenticate(request.headers.get("authorization"))
    return Response(encode(ModelList(data=gateway.catalogue.listed())), media_type="application/json")


@get("/v1/models/{model_id:path}")
async def retrieve_model(request: Request) -> Response[bytes]:
    model_id = request.path_params["model_id"]
    gateway = cast(Gateway, request.app.state.gateway)
    gateway.authenticate(request.headers.get("authorization"))
    alias = model_id.lstrip("/")
    for model in gateway.catalogue.listed():
        if model.id == alias:
            return Response(encode(model), media_type="application/json")
    raise NotFound(f"The model '{alias}' does not exist or you do not have access to it.", param="model",
                   code="model_not_found")
