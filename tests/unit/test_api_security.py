"""Rate limiting and token handling of the API, without a server."""

from __future__ import annotations

from datetime import UTC, datetime

import jwt
import pytest

from api import security
from customer360.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(security.time, "monotonic", fake)
    return fake


def test_bucket_allows_the_per_minute_burst_then_asks_to_wait(clock: FakeClock) -> None:
    limiter = security.RateLimiter(per_minute=60)
    assert [limiter.acquire("key:a") for _ in range(60)] == [0.0] * 60
    # Empty bucket at 1 token per second: the next request may come in 1 s.
    assert limiter.acquire("key:a") == pytest.approx(1.0)
    clock.now += 0.5
    assert limiter.acquire("key:a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("key:a") == 0.0


def test_wait_tells_how_long_without_taking_a_request(clock: FakeClock) -> None:
    limiter = security.RateLimiter(per_minute=60)
    assert limiter.wait("key:a") == 0.0
    for _ in range(60):
        limiter.acquire("key:a")
    assert limiter.wait("key:a") == pytest.approx(1.0)
    assert limiter.wait("key:a") == pytest.approx(1.0)  # asking took nothing
    clock.now += 1.0
    assert limiter.wait("key:a") == 0.0
    assert limiter.acquire("key:a") == 0.0


def test_buckets_are_per_identity(clock: FakeClock) -> None:
    limiter = security.RateLimiter(per_minute=2)
    assert limiter.acquire("key:a") == 0.0
    assert limiter.acquire("key:a") == 0.0
    assert limiter.acquire("key:a") > 0
    assert limiter.acquire("key:b") == 0.0


def test_refill_never_exceeds_the_burst(clock: FakeClock) -> None:
    limiter = security.RateLimiter(per_minute=3)
    clock.now += 3600
    assert [limiter.acquire("key:a") == 0.0 for _ in range(4)] == [True, True, True, False]


def test_full_buckets_are_forgotten_when_too_many_identities(clock: FakeClock) -> None:
    limiter = security.RateLimiter(per_minute=10, max_identities=3)
    for name in "abc":
        limiter.acquire(name)
    clock.now += 60
    limiter.acquire("d")
    assert set(limiter._buckets) == {"d"}


def test_issued_jwt_carries_subject_and_expiry() -> None:
    settings = Settings(jwt_secret="s" * 32, api_jwt_ttl_minutes=15)
    token = security.issue_jwt(settings, "analyst")
    claims = jwt.decode(token, "s" * 32, algorithms=["HS256"])
    assert claims["sub"] == "analyst"
    lifetime = claims["exp"] - claims["iat"]
    assert lifetime == 15 * 60
    assert claims["exp"] > datetime.now(UTC).timestamp()


def test_accepted_api_keys_ignore_blanks() -> None:
    settings = Settings(api_keys=" first , ,second,")
    assert security.accepted_api_keys(settings) == ["first", "second"]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"api_auth_mode": "jwt"}, "C360_JWT_SECRET is the published default"),
        ({"api_auth_mode": "jwt", "jwt_secret": "s" * 31}, "C360_JWT_SECRET is 31 bytes long"),
        ({"api_keys": "first,clé"}, "each key must be printable ASCII without spaces"),
        ({"api_keys": " , "}, "C360_API_KEYS lists no key"),
    ],
    ids=["published secret", "short secret", "non-ASCII key", "no key"],
)
def test_the_api_refuses_authentication_settings_anybody_could_pass(
    overrides: dict, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        security.build_guard(Settings(**overrides))


def test_a_secret_of_32_bytes_and_ascii_keys_are_taken() -> None:
    assert security.build_guard(Settings(api_auth_mode="jwt", jwt_secret="s" * 32))
    assert security.build_guard(Settings(api_keys="first,Second-key_3"))
