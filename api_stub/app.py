"""The FastAPI app: ``POST /v1/jobs``, ``GET /v1/jobs/{job_id}``, ``GET /healthz``, and the
reviewer page under ``/review`` (``api_stub/review.py``).

Thin by design: it validates, hands the job to :class:`shared.producer.Producer` and reads job
documents back. ``uvicorn api_stub.app:app`` serves :data:`app`, built from the environment;
tests and embedding services call :func:`create_app` with their own settings.
"""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api_stub import review
from api_stub.auth import Keyring, Principal, api_key_guard, require
from api_stub.limits import BodySizeLimitMiddleware
from api_stub.schemas import JobRequest, image_fields
from shared.config import Settings, get_settings
from shared.errors import JobError, KYCFaceError, ReferenceRejectedError
from shared.events.callbacks import check_callback
from shared.events.model import CallbackRefusedError
from shared.events.outbox import JobMeta, forget_unless_submitted, remember
from shared.jobs import JobDocument
from shared.jobs.model import JOB_ID_PATTERN
from shared.producer import Producer

log = logging.getLogger(__name__)

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or invalid API key"},
    413: {"description": "Request body too large"},
    503: {"description": "Job store or broker unavailable"},
}


def _error_status(exc: KYCFaceError) -> int:
    if exc.transient:
        return status.HTTP_503_SERVICE_UNAVAILABLE
    if isinstance(exc, (ReferenceRejectedError, CallbackRefusedError)):
        return status.HTTP_422_UNPROCESSABLE_CONTENT
    if isinstance(exc, JobError):
        return status.HTTP_409_CONFLICT  # the id was already used for different work
    return status.HTTP_400_BAD_REQUEST


def _producer(request: Request) -> Producer:
    producer: Producer | None = request.app.state.producer
    if producer is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no broker configured (KYC_BROKER_URL)")
    return producer


ProducerDep = Annotated[Producer, Depends(_producer)]


def _check_buckets(job: JobRequest, producer: Producer) -> None:
    """Refuse references to buckets outside the allow-list, naming the offending field."""
    errors = []
    for name in image_fields(job.kind):
        try:
            producer.images.validate(getattr(job, name))
        except ReferenceRejectedError as exc:
            errors.append({"loc": ("body", name), "msg": exc.message, "type": "reference_rejected"})
    if errors:
        raise RequestValidationError(errors)


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
        producer = Producer(settings)
    if not settings.api_keys:
        log.warning("KYC_API_KEYS is empty: every job request will be refused with 401")

    app = FastAPI(
        title="KYCDeepFace",
        version="1",
        summary="Asynchronous KYC face matching: submit a job, poll its document.",
    )

    @app.exception_handler(KYCFaceError)
    async def on_kyc_error(request: Request, exc: KYCFaceError) -> JSONResponse:
        return JSONResponse(status_code=_error_status(exc), content={"detail": exc.message})

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # loc/msg/type only: echoing ``input`` back would copy features strings into responses
        # (and into any proxy that logs them).
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": errors})

    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    app.state.producer = producer
    app.state.keyring = Keyring.from_settings(settings)
    guarded = [Depends(api_key_guard([k.get_secret_value() for k in settings.api_keys]))]

    @app.post(
        "/v1/jobs",
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=guarded,
        responses={
            **_ERROR_RESPONSES,
            409: {"description": "job_id already used for different work"},
            422: {"description": "Invalid request, a bucket not allowed, or a callback_url refused"},
        },
    )
    def submit_job(
        job: Annotated[JobRequest, Body()],
        response: Response,
        producer: ProducerDep,
        principal: Annotated[Principal, Depends(require("jobs"))],
    ) -> JobDocument:
        """Queue a job; resubmitting the same ``job_id`` returns the existing job unchanged.

        With a ``callback_url`` (its host on the tenant's allow-list, never a private address)
        the job's completion event is POSTed there, signed, once it finishes.
        """
        _check_buckets(job, producer)
        if job.callback_url is None:
            doc = producer.submit(job.kind, job.inputs(), job.job_id)
        else:
            doc = _submit_with_callback(job, job.callback_url, principal, producer, settings)
        response.headers["Location"] = f"/v1/jobs/{doc.job_id}"
        return doc

    @app.get(
        "/v1/jobs/{job_id}",
        dependencies=guarded,
        responses={**_ERROR_RESPONSES, 404: {"description": "No such job (or it expired)"}},
    )
    def get_job(job_id: Annotated[str, Path(pattern=JOB_ID_PATTERN)], producer: ProducerDep) -> JobDocument:
        """The job's current document."""
        doc = producer.get_job(job_id)
        if doc is None:
            raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="no such job")
        return doc

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


def _submit_with_callback(
    job: JobRequest, url: str, principal: Principal, producer: Producer, settings: Settings
) -> JobDocument:
    """Submit ``job`` with its webhook: the callback is checked first (a refusal makes no job),
    and remembered before the job exists, so a fast worker finds it when the job finishes."""
    check_callback(settings, principal.tenant, url)
    job_id = job.job_id or uuid.uuid4().hex
    client = producer.jobs.redis
    remember(client, settings, job_id, JobMeta(principal.tenant, url))
    try:
        return producer.submit(job.kind, job.inputs(), job_id)
    except Exception:
        forget_unless_submitted(client, job_id)
        raise


app = create_app()
