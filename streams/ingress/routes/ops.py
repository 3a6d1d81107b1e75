"""Operations: liveness, readiness (RabbitMQ, Redis, PostgreSQL) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from streams.ingress.deps import ServicesDep
from streams.ingress.errors import ApiError, responses
from streams.ingress.schemas import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses=responses(503),
    summary="RabbitMQ, Redis and PostgreSQL are reachable",
)
async def readyz(svc: ServicesDep) -> Health:
    checks = await svc.check()
    if any(v != "ok" for v in checks.values()):
        raise ApiError(503, "not_ready", "a backing service is unavailable", {"checks": checks})
    return Health(status="ready", checks=checks)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics",
)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
