"""``/health``, ``/ready`` and ``/metrics``: open to probes and scrapers, no API key needed."""

from __future__ import annotations

from fastapi import APIRouter, Request, status
from fastapi.responses import PlainTextResponse

from api import queries
from api.schemas import ErrorMessage, HealthStatus

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthStatus, summary="Liveness")
async def health() -> dict:
    """The process is up and answering; says nothing about the database."""
    return {"status": "ok"}


@router.get(
    "/ready",
    response_model=HealthStatus,
    responses={
        status.HTTP_503_SERVICE_UNAVAILABLE: {
            "model": ErrorMessage,
            "description": "The database cannot be reached.",
            "content": {
                "application/json": {
                    "example": {"detail": "the database is unavailable; retry shortly"}
                }
            },
        }
    },
    summary="Readiness",
)
async def ready(request: Request) -> dict:
    """Ready when a database connection answers a query within the pool timeout."""
    settings = request.app.state.settings
    async with request.app.state.pool.connection(timeout=settings.api_pool_timeout) as conn:
        await queries.ping(conn)
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        status.HTTP_200_OK: {
            "content": {"text/plain": {"example": "c360_api_requests_total{...} 42\n"}},
            "description": "Prometheus text exposition format 0.0.4.",
        }
    },
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> PlainTextResponse:
    """Request counts by route and status, and latency histograms by route, of this worker."""
    return PlainTextResponse(
        request.app.state.metrics.render(),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )
