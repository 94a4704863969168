"""The FastAPI application: routers, auth, CORS, metrics, offline docs and error bodies.

``create_app(settings)`` builds an app for the given settings (tests pass their own);
``app`` is the one uvicorn serves, built from the environment (``C360_*``).
"""

from __future__ import annotations

import gc
import logging
import select
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import fastapi_offline
import psycopg
from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import PATTERN_MEANINGS, reject_unknown_query_parameters
from api.metrics import MetricsMiddleware, RequestMetrics
from api.queries import InvalidCursorError
from api.routes import customers, health, orders, products, realtime
from api.schemas import ErrorMessage, ValidationErrorMessage
from api.security import build_guard
from customer360.settings import Settings, get_settings

logger = logging.getLogger(__name__)

# Swagger UI and ReDoc assets ship inside the fastapi-offline wheel: the docs work offline.
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS_URL = "/docs-assets"
# Seconds a client should wait after a 503 before retrying.
RETRY_AFTER_SECONDS = 5

DESCRIPTION = """
Read API over the Customer 360 warehouse: 360 customer profiles with RFM segments, order
history, attribute history from the Data Vault satellites, product analytics and the
real-time click-stream activity.

**Authentication.** Depending on `C360_API_AUTH_MODE`: an API key in the `X-API-Key` header
(`api_key`, the default; `c360 api token` prints one), a JWT in `Authorization: Bearer`
(`jwt`; `c360 api token --jwt`), or none. `/health`, `/ready`, `/metrics` and the docs are open.

**Rate limit.** `C360_API_RATE_LIMIT_PER_MINUTE` requests per minute per key (or token
subject, or client address); beyond it, 429 with `Retry-After`.

**Pagination.** Lists return `total`, `skip`, `limit`, `next_cursor` and `items`. Page with
`skip`/`limit`, or pass `next_cursor` back as `cursor` for constant-time deep pages.

**Ids.** Customer ids compare trimmed and case-insensitively, as the warehouse stores them:
`/customers/c000042` is `/customers/C000042`, and responses carry the stored id.

**Errors.** Every error is JSON with a one-sentence `detail`: 401 no or bad credentials,
404 unknown id, 422 invalid parameter (with `errors`), 429 rate limited, 503 database
unreachable or query cancelled by the statement timeout (both with `Retry-After`).
"""

OPENAPI_TAGS = [
    {"name": "customers", "description": "Customer 360 profiles and their histories."},
    {"name": "orders", "description": "Orders with customer and product details."},
    {"name": "products", "description": "Product sales analytics."},
    {"name": "realtime", "description": "Aggregates of the click stream, updated live."},
    {"name": "health", "description": "Probes and metrics; no authentication."},
]


def _error_response(description: str, example: str, model: type = ErrorMessage) -> dict:
    return {
        "model": model,
        "description": description,
        "content": {"application/json": {"example": {"detail": example}}},
    }


INVALID_REQUEST_RESPONSE = {
    status.HTTP_422_UNPROCESSABLE_CONTENT: {
        "model": ValidationErrorMessage,
        "description": "A parameter is invalid.",
    },
}

ERROR_RESPONSES = {
    status.HTTP_401_UNAUTHORIZED: _error_response(
        "Missing or bad credentials.", "missing API key: send it in the X-API-Key header"
    ),
    **INVALID_REQUEST_RESPONSE,
    status.HTTP_429_TOO_MANY_REQUESTS: _error_response(
        "Rate limit exceeded; the Retry-After header says when to retry.",
        "rate limit of 6000 requests per minute exceeded; retry in 1 s",
    )
    | {
        "headers": {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
        }
    },
    status.HTTP_503_SERVICE_UNAVAILABLE: _error_response(
        "The database cannot be reached, the query ran past the statement timeout, or the "
        "warehouse schema is not installed; the detail says which.",
        "the database is unavailable; retry shortly",
    )
    | {
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before retrying (not sent for a missing schema).",
                "schema": {"type": "integer"},
            }
        }
    },
}


# How long the pool keeps retrying one connection to a database that does not answer.
RECONNECT_TIMEOUT_SECONDS = 5.0


async def _fail_if_closed_by_server(conn: psycopg.AsyncConnection) -> None:
    """Raise if the server has closed this idle connection, without a round trip (a query
    would cost every request a tenth of its throughput): the server writes to an idle
    connection only to end it (shutdown, restart, pg_terminate_backend), so anything to read,
    or the end of the stream, means it is gone."""
    # poll(), not select(): select() refuses descriptors from 1024 up.
    probe = select.poll()
    probe.register(conn.fileno(), select.POLLIN)
    if probe.poll(0):
        # Closed here, the pool discards it and opens another (it keeps a connection whose
        # client side still looks idle).
        await conn.close()
        raise psycopg.OperationalError("the server closed the connection")


def create_app(settings: Settings | None = None) -> FastAPI:
    """A configured API application; the database pool opens when the app starts."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(
            settings.dsn,
            min_size=settings.api_pool_min,
            max_size=settings.api_pool_max,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "application_name": "c360-api",
                "connect_timeout": 5,
                "options": f"-c statement_timeout={settings.api_statement_timeout_ms}"
                " -c TimeZone=UTC",
            },
            timeout=settings.api_pool_timeout,
            # A connection the database dropped (it restarted) is replaced before a request
            # gets it, instead of failing that request.
            check=_fail_if_closed_by_server,
            # While the database is down, the pool retries each connection with a doubling
            # delay; giving up after a few seconds lets the next request start afresh, so
            # the API recovers within seconds of the database, not minutes.
            reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
            open=False,
            name="c360-api",
        )
        # Not waiting: the API starts (and /health answers) while the database is still down.
        await pool.open(wait=False)
        app.state.pool = pool
        # Everything built so far lives as long as the process: keep it out of the garbage
        # collector's full passes, whose pauses otherwise show up in the tail latency.
        gc.collect()
        gc.freeze()
        # Requests allocate many short-lived objects: collect young ones less often.
        gc.set_threshold(50_000, 20, 20)
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="Customer 360 API",
        version="1.0.0",
        description=DESCRIPTION,
        openapi_tags=OPENAPI_TAGS,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = RequestMetrics()

    guard = build_guard(settings)
    # Every route refuses query parameters it does not take, the open probes included.
    strict_query = Depends(reject_unknown_query_parameters)
    protected = {"dependencies": [Depends(guard), strict_query], "responses": ERROR_RESPONSES}
    app.include_router(customers.router, **protected)
    app.include_router(orders.router, **protected)
    app.include_router(products.router, **protected)
    app.include_router(realtime.router, **protected)
    app.include_router(
        health.router, dependencies=[strict_query], responses=INVALID_REQUEST_RESPONSE
    )

    _add_docs(app)
    _add_error_handlers(app)

    origins = [origin.strip() for origin in settings.api_cors_origins.split(",") if origin.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET"],
            allow_headers=["X-API-Key", "Authorization"],
            expose_headers=["Retry-After"],
        )
    # Outermost, so that it times everything, including CORS preflights and errors.
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def _add_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, served with local assets."""
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
    oauth2_redirect_url = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=oauth2_redirect_url,
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True, "displayRequestDuration": True},
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )


def _message(error: dict) -> str:
    """A validation error in words: a pattern is named by what it stands for."""
    if error["type"] == "string_pattern_mismatch":
        meaning = PATTERN_MEANINGS.get(error.get("ctx", {}).get("pattern"))
        if meaning:
            return f"should be {meaning}"
    return error["msg"]


def _add_error_handlers(app: FastAPI) -> None:
    """Every error leaves as JSON with a one-sentence ``detail``; never a traceback."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"location": ".".join(str(part) for part in error["loc"]), "message": _message(error)}
            for error in exc.errors()
        ]
        summary = "; ".join(f"{error['location']}: {error['message']}" for error in errors)
        return JSONResponse(
            {"detail": f"invalid request: {summary}", "errors": errors},
            status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    @app.exception_handler(InvalidCursorError)
    async def invalid_cursor(request: Request, exc: InvalidCursorError) -> JSONResponse:
        errors = [{"location": "query.cursor", "message": str(exc)}]
        return JSONResponse(
            {"detail": f"invalid request: query.cursor: {exc}", "errors": errors},
            status.HTTP_422_UNPROCESSABLE_CONTENT,
        )

    @app.exception_handler(PoolTimeout)
    async def no_connection(request: Request, exc: PoolTimeout) -> JSONResponse:
        logger.warning("no database connection within the pool timeout: %s", exc)
        return _database_unavailable()

    @app.exception_handler(psycopg.OperationalError)
    async def database_error(request: Request, exc: psycopg.OperationalError) -> JSONResponse:
        logger.warning("database error: %s", exc)
        return _database_unavailable()

    # A subclass of OperationalError, but the database is up: the query waited or ran too
    # long, typically behind a load's refresh of a view. 503 rather than 504: the API is no
    # gateway, clients already retry 503 after Retry-After, and a 504 would look like the
    # timeout of a proxy in front of the API.
    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def query_cancelled(request: Request, exc: psycopg.errors.QueryCanceled) -> JSONResponse:
        logger.warning("query cancelled on %s: %s", request.url.path, exc)
        timeout_ms = request.app.state.settings.api_statement_timeout_ms
        detail = "the query was cancelled by the database; retry shortly"
        if "statement timeout" in str(exc):
            detail = (
                f"the query was cancelled after running longer than {timeout_ms} ms; retry shortly"
            )
        return JSONResponse(
            {"detail": detail},
            status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.exception_handler(psycopg.errors.UndefinedTable)
    async def missing_view(request: Request, exc: psycopg.Error) -> JSONResponse:
        logger.error("business view missing: %s", exc)
        return JSONResponse(
            {"detail": "the warehouse schema is not installed; run `c360 migrate` and a load"},
            status.HTTP_503_SERVICE_UNAVAILABLE,
        )

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "internal error; the server log has the details"},
            status.HTTP_500_INTERNAL_SERVER_ERROR,
        )


def _database_unavailable() -> JSONResponse:
    return JSONResponse(
        {"detail": "the database is unavailable; retry shortly"},
        status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


app = create_app()
