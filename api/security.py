"""Authentication (API key or JWT bearer, chosen in settings) and per-client rate limiting.

The authenticated identity (the API key, the token's subject, or the client address when
authentication is off) is what the rate limiter counts against. Limits are kept in the memory
of each worker process: with N workers a client may get up to N times the configured rate.

No ``from __future__ import annotations`` here: FastAPI must see the real annotations of the
guards, which refer to local scheme objects.
"""

import hmac
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from customer360.settings import Settings

API_KEY_HEADER = "X-API-Key"

# Anybody can read the default secret (and .env.example's): tokens signed with it, or with a
# secret short enough to guess, must not open the API.
PUBLISHED_JWT_SECRET = Settings.model_fields["jwt_secret"].default
MIN_JWT_SECRET_BYTES = 32


class RateLimiter:
    """A token bucket per identity: ``per_minute`` requests a minute, bursts up to that many.

    Handlers run on one event loop per process and the bucket update never awaits, so no lock
    is needed.
    """

    def __init__(self, per_minute: int, max_identities: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self.max_identities = max_identities
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, identity: str, now: float) -> float:
        """What the identity's bucket holds now (a new identity's is full)."""
        tokens, last = self._buckets.get(identity, (self.capacity, now))
        return min(self.capacity, tokens + (now - last) * self.refill_per_second)

    def acquire(self, identity: str) -> float:
        """Take one request from the identity's bucket; 0 if allowed, else seconds to wait."""
        now = time.monotonic()
        tokens = self._tokens(identity, now)
        if tokens >= 1.0:
            if len(self._buckets) >= self.max_identities and identity not in self._buckets:
                # Full buckets are the default state, so forgetting them loses nothing.
                self._forget_full_buckets(now)
            self._buckets[identity] = (tokens - 1.0, now)
            return 0.0
        self._buckets[identity] = (tokens, now)
        return (1.0 - tokens) / self.refill_per_second

    def wait(self, identity: str) -> float:
        """Seconds until the identity's bucket holds a request again, taking nothing; 0 if
        it does now."""
        tokens = self._tokens(identity, time.monotonic())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.refill_per_second

    def _forget_full_buckets(self, now: float) -> None:
        for identity, (tokens, last) in list(self._buckets.items()):
            if tokens + (now - last) * self.refill_per_second >= self.capacity:
                del self._buckets[identity]


def accepted_api_keys(settings: Settings) -> list[str]:
    """The API keys configured in ``C360_API_KEYS``."""
    return [key.strip() for key in settings.api_keys.split(",") if key.strip()]


def authentication_problem(settings: Settings) -> str | None:
    """Why the API must not start with these authentication settings, if it must not."""
    if settings.api_auth_mode == "api_key":
        keys = accepted_api_keys(settings)
        if not keys:
            return "C360_API_AUTH_MODE is api_key but C360_API_KEYS lists no key"
        if not all(key.isascii() and key.isprintable() and " " not in key for key in keys):
            # Clients encode other characters in a header differently, if at all.
            return "C360_API_KEYS: each key must be printable ASCII without spaces"
    if settings.api_auth_mode == "jwt":
        if settings.jwt_secret == PUBLISHED_JWT_SECRET:
            return (
                "C360_API_AUTH_MODE is jwt but C360_JWT_SECRET is the published default;"
                f" set a random secret of at least {MIN_JWT_SECRET_BYTES} bytes"
            )
        if len(settings.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            return (
                f"C360_JWT_SECRET is {len(settings.jwt_secret.encode())} bytes long;"
                f" jwt mode needs a random secret of at least {MIN_JWT_SECRET_BYTES}"
            )
    return None


def issue_jwt(settings: Settings, subject: str, ttl_minutes: int | None = None) -> str:
    """A signed bearer token for ``subject`` that the API accepts in ``jwt`` mode."""
    now = datetime.now(UTC)
    ttl = timedelta(minutes=ttl_minutes or settings.api_jwt_ttl_minutes)
    claims = {"sub": subject, "iat": now, "exp": now + ttl}
    return jwt.encode(claims, settings.jwt_secret, algorithm=settings.jwt_algorithm)


def _client_address(request: Request) -> str:
    """The identity of a request that carries no credential the API accepts."""
    return "ip:" + (request.client.host if request.client else "unknown")


def _unauthorized(message: str, scheme: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=message,
        headers={"WWW-Authenticate": scheme},
    )


def _rate_limited(retry_after: float, limit: int) -> HTTPException:
    seconds = max(1, math.ceil(retry_after))
    return HTTPException(
        status_code=status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"rate limit of {limit} requests per minute exceeded; retry in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


def build_guard(settings: Settings) -> Callable[..., Awaitable[str]]:
    """The dependency that authenticates a request and charges it to the rate limit.

    It returns the caller's identity. Which scheme it declares (and so which one Swagger UI's
    Authorize dialog offers) follows ``settings.api_auth_mode``.
    """
    if problem := authentication_problem(settings):
        raise ValueError(problem)
    limiter = RateLimiter(settings.api_rate_limit_per_minute)
    limit = settings.api_rate_limit_per_minute
    failures = RateLimiter(settings.api_failed_auth_per_minute)

    def charge(identity: str) -> str:
        wait = limiter.acquire(identity)
        if wait > 0:
            raise _rate_limited(wait, limit)
        return identity

    def too_many_failures(wait: float) -> HTTPException:
        seconds = max(1, math.ceil(wait))
        return HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"too many failed authentications from this address; retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )

    def refuse_while_failing(request: Request) -> None:
        """An address that has used up its failures gets a 429 before its credential is even
        looked at: a guess that happens to be right must not tell itself apart."""
        wait = failures.wait(_client_address(request))
        if wait > 0:
            raise too_many_failures(wait)

    def refusal(request: Request, message: str, scheme: str) -> HTTPException:
        """A 401, charged to the client's address; past the failures it may make, a 429."""
        wait = failures.acquire(_client_address(request))
        return too_many_failures(wait) if wait > 0 else _unauthorized(message, scheme)

    if settings.api_auth_mode == "api_key":
        keys = [key.encode() for key in accepted_api_keys(settings)]
        api_key_header = APIKeyHeader(
            name=API_KEY_HEADER,
            auto_error=False,
            description="An API key from C360_API_KEYS; `c360 api token` prints one.",
        )

        async def require_api_key(
            request: Request, api_key: Annotated[str | None, Depends(api_key_header)]
        ) -> str:
            refuse_while_failing(request)
            if not api_key:
                raise refusal(
                    request, f"missing API key: send it in the {API_KEY_HEADER} header", "ApiKey"
                )
            candidate = api_key.encode("utf-8", "surrogateescape")
            # Compare against every key so the time taken does not tell which one nearly matched.
            matched = False
            for key in keys:
                matched |= hmac.compare_digest(candidate, key)
            if not matched:
                raise refusal(request, "invalid API key", "ApiKey")
            return charge("key:" + api_key)

        return require_api_key

    if settings.api_auth_mode == "jwt":
        bearer = HTTPBearer(
            auto_error=False,
            bearerFormat="JWT",
            description="A JWT signed with C360_JWT_SECRET; `c360 api token --jwt` prints one.",
        )

        async def require_jwt(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        ) -> str:
            refuse_while_failing(request)
            if credentials is None:
                raise refusal(
                    request, "missing bearer token: send Authorization: Bearer <JWT>", "Bearer"
                )
            try:
                claims = jwt.decode(
                    credentials.credentials,
                    settings.jwt_secret,
                    algorithms=[settings.jwt_algorithm],
                    options={"require": ["exp", "sub"]},
                )
            except jwt.ExpiredSignatureError as exc:
                raise refusal(request, "bearer token has expired", "Bearer") from exc
            except jwt.InvalidTokenError as exc:
                raise refusal(request, f"invalid bearer token: {exc}", "Bearer") from exc
            if not str(claims["sub"]).strip():
                raise refusal(request, "invalid bearer token: its subject is empty", "Bearer")
            return charge("sub:" + str(claims["sub"]))

        return require_jwt

    async def anonymous(request: Request) -> str:
        return charge(_client_address(request))

    return anonymous
