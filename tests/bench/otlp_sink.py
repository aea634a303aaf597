"""The collector the bench gateways export their sampled spans to: ``POST /v1/traces`` (OTLP/HTTP
protobuf) answered with an empty export response, counted; ``GET /stats`` says how many exports
and bytes arrived, so the report can show that tracing was on and exporting.

    python -m tests.bench.otlp_sink --port PORT
"""

from __future__ import annotations

import argparse

from aiohttp import web

_received = {"exports": 0, "bytes": 0}


async def _export(request: web.Request) -> web.Response:
    body = await request.read()
    _received["exports"] += 1
    _received["bytes"] += len(body)
    # An empty ExportTraceServiceResponse: every span accepted.
    return web.Response(body=b"", content_type="application/x-protobuf")


async def _stats(_request: web.Request) -> web.Response:
    return web.json_response(_received)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    app = web.Application()
    app.router.add_post("/v1/traces", _export)
    app.router.add_get("/stats", _stats)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
