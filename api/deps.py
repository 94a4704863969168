"""Typed dependencies of the route handlers: settings, a pooled connection, shared parameters.

All are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, a hop per
request that buys nothing here. Authentication is added per router in ``api.main``, since
its scheme depends on the settings the app is created with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.dependencies.utils import get_flat_dependant
from fastapi.exceptions import RequestValidationError
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from customer360.settings import Settings
from customer360.sources import MAX_KEY_LENGTH, MAX_TEXT_LENGTH


async def get_app_settings(request: Request) -> Settings:
    """The settings the running app was created with."""
    return request.app.state.settings


async def get_pool(request: Request) -> AsyncConnectionPool:
    """The app's connection pool."""
    return request.app.state.pool


async def get_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A connection from the pool, returned as soon as the handler finishes.

    Waiting longer than ``api_pool_timeout`` raises PoolTimeout, which the app answers with 503.
    """
    pool: AsyncConnectionPool = request.app.state.pool
    async with pool.connection(timeout=request.app.state.settings.api_pool_timeout) as conn:
        yield conn


async def reject_unknown_query_parameters(request: Request) -> None:
    """422 for a query parameter the route does not declare, or one given twice.

    Silently ignoring ``?segement=Corporate`` would answer a different question than the
    caller asked; the error names the parameter instead.
    """
    if not request.query_params:
        return
    allowed = _declared_query_parameters(request.scope.get("route"))
    seen: set[str] = set()
    # One error per parameter name, however often it is repeated.
    errors: dict[str, dict] = {}
    for name, _ in request.query_params.multi_items():
        if name not in allowed:
            takes = ", ".join(sorted(allowed)) or "no query parameters"
            message = f"unknown query parameter; this endpoint takes {takes}"
            errors[name] = {"loc": ("query", name), "msg": message, "type": "extra_forbidden"}
        elif name in seen:
            message = "given more than once; it takes one value"
            errors[name] = {"loc": ("query", name), "msg": message, "type": "multiple_values"}
        seen.add(name)
    if errors:
        raise RequestValidationError(list(errors.values()))


_query_parameters_by_route: dict[int, frozenset[str]] = {}


def _declared_query_parameters(route: object) -> frozenset[str]:
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return frozenset()
    names = _query_parameters_by_route.get(id(route))
    if names is None:
        flat = get_flat_dependant(dependant)
        names = frozenset(field.alias for field in flat.query_params)
        _query_parameters_by_route[id(route)] = names
    return names


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PoolDep = Annotated[AsyncConnectionPool, Depends(get_pool)]
# scope="function": the connection goes back to the pool before the response is serialised.
ConnectionDep = Annotated[AsyncConnection, Depends(get_connection, scope="function")]

# Business keys as the source files give them (C000001, P00001, T00000001, or a user's own in
# any script), in any case and with the spaces, tabs and line breaks around them that the
# warehouse trims (raw_vault.normalise_key): queries compare the key in that normalised form.
# Any key the warehouse takes passes, as delivered (up to MAX_KEY_LENGTH characters once
# trimmed) and as stored, upper-cased, which can make one character three ('ﬃ' is 'FFI');
# no control characters. A key that is blank once trimmed fails the pattern.
MAX_STORED_KEY_LENGTH = 3 * MAX_KEY_LENGTH
ID_PATTERN = (
    r"^[ \t\r\n]*[^\x00-\x20\x7f]"
    rf"(?:[^\x00-\x1f\x7f]{{0,{MAX_STORED_KEY_LENGTH - 2}}}[^\x00-\x20\x7f])?[ \t\r\n]*$"
)
# Free text: no control characters, which PostgreSQL text cannot hold (NUL) or mean nothing here.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]+$"
CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
# What a value failing each pattern should be, for the 422 message.
PATTERN_MEANINGS = {
    ID_PATTERN: (
        f"a business key: 1 to {MAX_STORED_KEY_LENGTH} characters once trimmed, without"
        " control characters"
    ),
    TEXT_PATTERN: "text without control characters",
    CURSOR_PATTERN: "the next_cursor of a page of this API",
}
# Deeper than this, a keyset cursor is the way to page.
MAX_SKIP = 100_000

CustomerIdPath = Annotated[
    str,
    Path(
        description=(
            "Business key of the customer, as in customers.csv; compared trimmed and "
            "case-insensitively."
        ),
        examples=["C000001"],
        pattern=ID_PATTERN,
    ),
]
Skip = Annotated[
    int,
    Query(
        ge=0,
        le=MAX_SKIP,
        description=f"Rows to skip before the page (0-{MAX_SKIP}); use `cursor` to page deeper.",
        examples=[0],
    ),
]
Limit = Annotated[
    int, Query(ge=1, le=1000, description="Most rows to return (1-1000).", examples=[100])
]
# A cursor holds a sort value and a key in base64: two stored keys at most, each at most 600
# bytes in UTF-8 (MAX_KEY_LENGTH characters as delivered, upper-cased to at most 6 bytes each).
MAX_CURSOR_LENGTH = 2048
Cursor = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_LENGTH,
        pattern=CURSOR_PATTERN,
        description=(
            "`next_cursor` of the previous page: continues right after its last row, however "
            "deep (same filters and sort required)."
        ),
        examples=["WyJjdXN0b21lcnMiLCJjdXN0b21lcl9pZCIsbnVsbCwiQzAwMDEwMCJd"],
    ),
]


def text_query(description: str, example: str) -> Query:
    """A free-text filter: as long as any text value the warehouse takes, no control
    characters."""
    return Query(
        min_length=1,
        max_length=MAX_TEXT_LENGTH,
        pattern=TEXT_PATTERN,
        description=description,
        examples=[example],
    )
