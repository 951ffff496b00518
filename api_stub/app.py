"""The FastAPI app: ``POST /v1/jobs``, ``GET /v1/jobs/{job_id}``, ``GET /v1/openapi.json``, ``GET /healthz``,
and the reviewer page under ``/review`` (``api_stub/review.py``).

Thin by design: it validates, hands the job to :class:`shared.producer.Producer` and reads job
documents back. ``uvicorn api_stub.app:app`` serves :data:`app`, built from the environment;
tests and embedding services call :func:`create_app` with their own settings.

Every job route runs as the caller's :class:`api_stub.auth.Principal`: jobs are submitted and
read in its tenant only, so another tenant's job is a 404, exactly like one that never existed.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api_stub import review
from api_stub.auth import KeyRing, Principal, check_scope, require
from api_stub.limits import BodySizeLimitMiddleware
from api_stub.quotas import Admission, check_quota_names
from api_stub.schemas import JobRequest, check_request
from shared import features
from shared.config import Settings, get_settings
from shared.errors import ForeignFeaturesError, JobError, KYCFaceError, ReferenceRejectedError, UnreadableJobError
from shared.events.bodies import KINDS
from shared.events.model import CallbackRefusedError, RequestRejectedError
from shared.events.outbox import JobMeta, forget_unless_submitted, remember
from shared.events.reasons import problems_of
from shared.gallery.probe_patterns import ProbePatterns
from shared.jobs import REGISTRY, JobDocument
from shared.jobs.model import JOB_ID_PATTERN
from shared.jobs.registry import QUEUES
from shared.jobs.sealing import for_tenant
from shared.metrics import ApiMetrics
from shared.producer import Producer
from shared.storage.redis_client import redis_client
from shared.tenants import Scope, scoped

log = logging.getLogger(__name__)

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    403: {"description": "The API key lacks the scope this request needs"},
    413: {"description": "Request body too large"},
    503: {"description": "Job store or broker unavailable"},
}


def _error_status(exc: KYCFaceError) -> int:
    if exc.transient:
        return status.HTTP_503_SERVICE_UNAVAILABLE
    if isinstance(exc, (ReferenceRejectedError, CallbackRefusedError, ForeignFeaturesError)):
        return status.HTTP_422_UNPROCESSABLE_CONTENT
    if isinstance(exc, UnreadableJobError):
        return status.HTTP_410_GONE  # stored, but no longer readable: a retry will not help
    if isinstance(exc, JobError):
        return status.HTTP_409_CONFLICT  # the id was already used for different work
    return status.HTTP_400_BAD_REQUEST


def _producer(request: Request) -> Producer:
    producer: Producer | None = request.app.state.producer
    if producer is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no broker configured (KYC_BROKER_URL)")
    return producer


ProducerDep = Annotated[Producer, Depends(_producer)]


def create_app(settings: Settings | None = None, producer: Producer | None = None) -> FastAPI:
    """Build the HTTP stub.

    Args:
        settings: API keys, body cap and the producer's settings (default: from the environment).
        producer: the producer to submit through (default: one built from ``settings``; none
            when no broker is configured, and then every job route answers 503).

    Returns:
        The ASGI application.
    """
    settings = settings or get_settings()
    if producer is None and settings.broker_url:
        features.require_key(settings, "api")
        producer = Producer(settings)
    if not settings.api_keys:
        log.warning("KYC_API_KEYS is empty: every job request will be refused with 401")

    # No /docs, /redoc or public /openapi.json: the schema is served to a key holder only, and
    # the Swagger and ReDoc pages would load their JavaScript from a CDN.
    app = FastAPI(
        title="KYCDeepFace",
        version="1",
        summary="Asynchronous KYC face matching: submit a job, poll its document.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.keyring = KeyRing(settings.api_keys)
    check_quota_names(settings)  # a misspelt bucket stops the API here, not on a request

    @app.exception_handler(KYCFaceError)
    async def on_kyc_error(request: Request, exc: KYCFaceError) -> JSONResponse:
        return JSONResponse(status_code=_error_status(exc), content={"detail": exc.message})

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # loc/msg/type only, in the intake's words (shared.events.reasons): echoing ``input``
        # back would copy features strings into responses (and into any proxy that logs them).
        errors = [problem.http() for problem in problems_of(exc.errors(), KINDS)]
        return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": errors})

    @app.exception_handler(RequestRejectedError)
    async def on_rejected(request: Request, exc: RequestRejectedError) -> JSONResponse:
        errors = [problem.http() for problem in exc.problems] or [
            {"loc": ["body"], "msg": exc.message, "type": "invalid"}
        ]
        return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": errors})

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    app.state.producer = producer
    api_metrics = _metrics_route(app, settings) if settings.api_metrics else None
    patterns = ProbePatterns(settings.api_probe_ring, settings.api_probe_near_bits)

    @app.post(
        "/v1/jobs",
        status_code=status.HTTP_202_ACCEPTED,
        responses={
            **_ERROR_RESPONSES,
            409: {"description": "job_id already used for different work"},
            422: {"description": "Invalid request, a bucket not allowed, or a callback_url refused"},
            429: {"description": "Over a quota of the key or tenant, or the live-job cap; see Retry-After"},
        },
    )
    def submit_job(
        job: Annotated[JobRequest, Body()],
        response: Response,
        producer: ProducerDep,
        caller: Annotated[Principal, Depends(require())],
    ) -> JobDocument:
        """Queue a job in the key's tenant; resubmitting the same ``job_id`` returns the existing
        job unchanged. Each kind needs its scope (``jobs:submit``, ``gallery:enroll``, ...).

        With a ``callback_url`` (its host on the tenant's allow-list, never a private address)
        the job's completion event is POSTed there, signed, once it finishes.
        """
        check_scope(caller, REGISTRY.get(job.kind).scope)
        check_request(job, caller.tenant, settings, producer.images.validate)
        admission = Admission(settings, producer.jobs.redis, patterns, api_metrics)
        address = None if job.job_id is None else scoped(caller.tenant, job.job_id)
        admission.admit(caller, job.kind, job.inputs(), address)
        if job.callback_url is None:
            doc = producer.submit(job.kind, job.inputs(), job.job_id, caller.tenant, reference=job.reference)
        else:
            doc = _submit_with_callback(job, job.callback_url, caller, producer, settings)
        admission.live.add(caller.tenant, doc.address)
        doc = for_tenant(doc)  # a resubmitted finished job: its templates sealed for the caller
        if api_metrics is not None:
            api_metrics.submitted.labels(doc.kind).inc()
        response.headers["Location"] = f"/v1/jobs/{doc.job_id}"
        return doc

    @app.get(
        "/v1/jobs/{job_id}",
        responses={
            **_ERROR_RESPONSES,
            404: {"description": "No such job (or it expired)"},
            410: {"description": "The job's stored document no longer parses"},
        },
    )
    def get_job(
        job_id: Annotated[str, Path(pattern=JOB_ID_PATTERN)],
        producer: ProducerDep,
        caller: Annotated[Principal, Depends(require(Scope.JOBS_READ))],
    ) -> JobDocument:
        """The job's current document; jobs of other tenants do not exist for this key."""
        doc = producer.get_job(job_id, caller.tenant)
        if doc is None:
            raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="no such job")
        return for_tenant(doc)  # templates sealed for the caller's tenant, unlinkable to others

    @app.get("/v1/openapi.json", include_in_schema=False, dependencies=[Depends(require())])
    def openapi() -> JSONResponse:
        """The OpenAPI schema, for any valid key (no HTML pages, no CDN assets)."""
        return JSONResponse(app.openapi())

    @app.get("/healthz", responses={503: {"description": "Redis unreachable"}})
    def healthz(request: Request) -> JSONResponse:
        """Liveness and readiness: answers 200 only when the job store (Redis) answers a ping."""
        try:
            _producer(request).jobs.redis.ping()
        except Exception as exc:  # any failure means "not ready"; the reason goes to the log
            log.warning("health check failed: %s", type(exc).__name__)
            return JSONResponse(status_code=503, content={"status": "unavailable"})
        return JSONResponse(content={"status": "ok"})

    app.include_router(review.router(settings))
    return app


def _metrics_route(app: FastAPI, settings: Settings) -> ApiMetrics:
    """``GET /metrics`` (KYC_API_METRICS): submissions by kind and queue depths, for Prometheus.

    Unauthenticated, like /healthz, so a scraper needs no API key: it carries counts only.
    """
    found = ApiMetrics(redis_client(settings.broker_url, settings) if settings.broker_url else None, QUEUES)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        body, content_type = found.exposition()
        return Response(content=body, media_type=content_type)

    return found


def _submit_with_callback(
    job: JobRequest, url: str, caller: Principal, producer: Producer, settings: Settings
) -> JobDocument:
    """Submit ``job`` with its webhook (its callback checked by :func:`check_request`):
    remembered before the job exists, so a fast worker finds it when the job finishes."""
    job_id = job.job_id or uuid.uuid4().hex
    address = scoped(caller.tenant, job_id)
    client = producer.jobs.redis
    remember(client, settings, address, JobMeta(caller.tenant, url))
    try:
        return producer.submit(job.kind, job.inputs(), job_id, caller.tenant, reference=job.reference)
    except Exception:
        forget_unless_submitted(client, address)
        raise


app = create_app()
