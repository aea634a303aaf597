"""``interlock``: serve, check a config and its policies, explain a routing decision, run the
simulator, hash an API key."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from litestar import Litestar

from proxy.auth import hash_key
from proxy.settings import ConfigError, default_config_path, load_settings
from proxy.telemetry import configure_logging, log_config


def app_from_env() -> Litestar:
    """uvicorn factory: each worker process loads the config named by ``INTERLOCK_CONFIG``."""
    from proxy.app import create_app
    from proxy.runtime import dump_stacks_on_signal, tune_gc

    path = default_config_path()
    app = create_app(load_settings(path), config_path=path)
    # Here, not in create_app: a worker process tunes its collector and takes SIGUSR1 once;
    # gateways embedded in another process (tests) leave the host's alone.
    app.on_startup.extend([tune_gc, dump_stacks_on_signal])
    return app


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from proxy.header_guard import server_options

    config_path = Path(args.config) if args.config else default_config_path()
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    # absolute(), not resolve(): a ConfigMap mount is a symlink into a directory that the next
    # update deletes; the path must keep naming the link so reloads follow it.
    os.environ["INTERLOCK_CONFIG"] = str(config_path.absolute())
    host = args.host or settings.listen.host
    port = args.port if args.port is not None else settings.listen.port
    workers = args.workers or settings.listen.workers
    uvicorn.run("proxy.cli:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=args.log_level, log_config=log_config(args.log_level, args.log_format), lifespan="on",
                timeout_graceful_shutdown=30, **server_options(settings))
    return 0


def _check(args: argparse.Namespace) -> int:
    """Validate the gateway file and every team policy file, as a reload would."""
    from policies.explain import SIMULATOR_PLACEHOLDER
    from policies.teams import PolicyError, PolicyStore

    try:
        snapshot = PolicyStore.open(args.config, simulator_url=SIMULATOR_PLACEHOLDER).current
    except PolicyError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    print(f"{args.config}: ok ({len(snapshot.settings.models)} models, {len(snapshot.teams)} teams)")
    for alias, reason in snapshot.catalogue.unavailable().items():
        print(f"  note: model '{alias}' is not served now: {reason}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    """Print where a request would go for a team and why, as JSON; exit 1 when it is refused."""
    import asyncio

    import msgspec

    from policies.explain import explain_files
    from policies.teams import PolicyError

    try:
        result = asyncio.run(explain_files(args.config, args.request, team=args.team, key=args.key))
    except PolicyError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{args.request}: {exc.strerror}", file=sys.stderr)
        return 2
    print(msgspec.json.format(msgspec.json.encode(result), indent=2).decode())
    return 1 if result.refused is not None else 0


def _hash_key(args: argparse.Namespace) -> int:
    key = args.key if args.key is not None else sys.stdin.readline().strip()
    if not key:
        print("no key given", file=sys.stderr)
        return 1
    print(hash_key(key))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="interlock", description=__doc__)
    parser.set_defaults(log_level="info", log_format="text")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="gateway YAML (default: $INTERLOCK_CONFIG or examples/gateway.yaml)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--log-format", choices=["json", "text"], default="json",
                       help="json: one object a line with request and trace ids (default); text: for a terminal")
    serve.set_defaults(handler=_serve)

    check = sub.add_parser("check", help="validate a config file and exit")
    check.add_argument("--config", required=True)
    check.set_defaults(handler=_check)

    simulate = sub.add_parser("simulate", help="run the deterministic upstream simulator", add_help=False)
    simulate.set_defaults(handler=None)

    explained = sub.add_parser("explain", help="show where a request would be routed for a team, and why")
    explained.add_argument("--config", required=True)
    explained.add_argument("--team", required=True)
    explained.add_argument("--key", help="a key name of the team, for its key-level rules")
    explained.add_argument("--request", required=True, help="a POST /v1/responses JSON body")
    explained.set_defaults(handler=_explain)

    hashed = sub.add_parser("hash-key", help="print the SHA-256 to put in a team's keys")
    hashed.add_argument("key", nargs="?", help="the key (read from stdin when omitted)")
    hashed.set_defaults(handler=_hash_key)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        from providers.simulator import main as simulate_main

        return simulate_main(argv[1:])
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
