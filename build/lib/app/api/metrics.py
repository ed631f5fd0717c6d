"""``GET /metrics``: the server's metrics in Prometheus's text format (README, "Metrics and
tracing"; the metrics are defined in ``app/telemetry/metrics.py``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import EngineDep
from app.api.security.permissions import Permission, needs
from app.telemetry import metrics

router = APIRouter(tags=["metrics"])


# Not in the OpenAPI document, which describes the JSON API: Prometheus reads this route,
# not API clients (README, "Metrics and tracing", lists the metrics).
@router.get(
    "/metrics",
    response_class=Response,
    include_in_schema=False,
    openapi_extra=needs(Permission.READ),
)
async def prometheus_metrics(engine: EngineDep) -> Response:
    """Runs started and ended by workflow; tasks queued and leased by action (read from
    Redis now); queue wait and execution time; lease expiries, retries and poll timeouts;
    timer lag; script round trips; Redis errors. Counts of every process of this server;
    the task gauges are those of the caller's tenant."""
    queued = {queue.name: queue.depth for queue in await engine.store.queues()}
    leased = await engine.store.leased_by_action()
    return Response(metrics.scrape(queued, leased), media_type=CONTENT_TYPE_LATEST)
