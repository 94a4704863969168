"""``c360 api``: serve the REST API, print a credential for it."""

from __future__ import annotations

import argparse
import sys

from customer360.errors import UserFacingError
from customer360.settings import get_settings


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    api = subparsers.add_parser("api", help="serve the REST API or print a credential for it")
    actions = api.add_subparsers(dest="action", required=True, metavar="ACTION")

    serve = actions.add_parser("serve", help="serve the API with uvicorn (default :8000)")
    serve.add_argument("--host", help="address to listen on (default C360_API_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default C360_API_PORT, 8000)")
    serve.add_argument("--workers", type=int, help="worker processes (default C360_API_WORKERS)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(handler=serve_api)

    token = actions.add_parser("token", help="print a credential the API accepts")
    token.add_argument(
        "--jwt", action="store_true", help="print a signed JWT instead of an API key"
    )
    token.add_argument("--subject", default="c360-cli", help="JWT subject (default c360-cli)")
    token.add_argument(
        "--ttl-minutes", type=int, help="JWT lifetime (default C360_API_JWT_TTL_MINUTES)"
    )
    token.set_defaults(handler=print_token)


def serve_api(args: argparse.Namespace) -> int:
    """Run uvicorn on ``api.main:app`` until interrupted."""
    import uvicorn

    from api.security import authentication_problem
    from api.serving import HttpProtocol

    settings = get_settings()
    workers = args.workers or settings.api_workers
    if workers < 1:
        raise UserFacingError("--workers must be at least 1")
    if problem := authentication_problem(settings):
        raise UserFacingError(problem)
    uvicorn.run(
        "api.main:app",
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        workers=workers,
        loop="uvloop",
        http=HttpProtocol,
        access_log=args.access_log,
        proxy_headers=False,
        log_level="info",
    )
    return 0


def print_token(args: argparse.Namespace) -> int:
    """Print an API key, or with ``--jwt`` a bearer token, that the configured API accepts."""
    from api.security import accepted_api_keys, issue_jwt

    settings = get_settings()
    if args.jwt:
        if settings.api_auth_mode != "jwt":
            print(f"note: C360_API_AUTH_MODE is {settings.api_auth_mode}, not jwt", file=sys.stderr)
        print(issue_jwt(settings, args.subject, args.ttl_minutes))
        return 0
    if settings.api_auth_mode == "jwt":
        raise UserFacingError(
            "the API expects JWT bearer tokens (C360_API_AUTH_MODE=jwt): use `c360 api token --jwt`"
        )
    keys = accepted_api_keys(settings)
    if not keys:
        raise UserFacingError("no API key is configured: set C360_API_KEYS")
    if settings.api_auth_mode == "none":
        print(
            "note: C360_API_AUTH_MODE is none; the API accepts requests without a key",
            file=sys.stderr,
        )
    print(keys[0])
    return 0
