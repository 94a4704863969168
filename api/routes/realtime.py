"""``/realtime``: click-stream aggregates written by the streaming consumer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api import queries
from api.deps import ConnectionDep
from api.schemas import RealtimeMetrics

router = APIRouter(prefix="/realtime", tags=["realtime"])


@router.get("/metrics", response_model=RealtimeMetrics, summary="Recent click-stream metrics")
async def recent_metrics(
    conn: ConnectionDep,
    minutes: Annotated[
        int,
        Query(ge=1, le=1440, description="How many minutes back to look (1-1440).", examples=[60]),
    ] = 60,
) -> dict:
    """Events per minute and event type, with the value of cart and purchase events."""
    windows = await queries.fetch_recent_metrics(conn, minutes)
    return {"minutes": minutes, "available": windows is not None, "windows": windows or []}
