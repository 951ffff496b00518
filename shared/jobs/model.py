"""The job document: what a caller polls for, versioned, the same for every job kind."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from shared import features
from shared.errors import FeaturesError, JobError, KYCFaceError, ResultCode, UnreadableJobError
from shared.jobs.registry import REGISTRY
from shared.tenants import DEFAULT_TENANT, TENANT_PATTERN, Tenant, scoped

SCHEMA_VERSION: Literal[1] = 1
# Letters, digits and ._:- so an idempotency key like "case-123:verify" fits a Redis key and an
# S3 object name without escaping.
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MAX_REFERENCE_CHARS = 256  # a client's correlation string (docs/EVENTS.md, "Correlation")


class JobStatus(str, Enum):
    """``queued`` -> ``running`` -> ``succeeded`` | ``failed``; the last two are final."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobFailure(BaseModel):
    """Why a job failed, as plain data: it crosses the queue and outlives the worker's classes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str = ResultCode.ERROR.value
    type: str
    message: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> JobFailure:
        """A failure record for ``exc``; unexpected exceptions never echo their message (it may
        quote biometric input)."""
        if isinstance(exc, KYCFaceError):
            return cls(code=exc.code.value, type=type(exc).__name__, message=exc.message)
        return cls(type=type(exc).__name__, message=f"internal error: {type(exc).__name__}")


class ReviewDecision(BaseModel):
    """A reviewer's decision on a finished job: who (the API key's id, never the key), when, why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision: Literal["approved", "rejected"]
    note: str = Field(default="", max_length=1000)
    reviewer: str
    decided_at: datetime


class JobOrigin(BaseModel):
    """The events consumer's entry a job was made from: the key it was read on (``kyc:intake``,
    ``kyc:intake-list``, ``kyc:bucket-events``) and its entry id there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(max_length=512)
    entry_id: str = Field(max_length=128)


class JobDocument(BaseModel):
    """One job, from submission to its final answer.

    ``result`` is the answer (the engine's result document, ``INVALID_IMAGE`` included) when
    ``succeeded``; ``error`` says why when ``failed``. ``timings`` holds per-stage seconds
    (``queue_s``, ``fetch_s``, ``compute_s``) of the last attempt. ``result_ref`` points at the
    full document in S3 when Redis keeps only its envelope (``KYC_RESULT_STORE=s3``).
    ``tenant`` owns the job: its ``job_id`` is unique within the tenant only, and the stores
    file it under :attr:`address`.

    A features input (a probe template) is never in ``inputs``: they name it by its digest
    (``sha256:...``), and the features string itself travels beside the document, in
    :attr:`held_features`, which the job store keeps only until the job is final.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    # Documents written before tenants existed have none: they belong to the default tenant.
    tenant: str = Field(default=DEFAULT_TENANT, pattern=TENANT_PATTERN)
    kind: str  # a name in shared.jobs.registry.REGISTRY
    status: JobStatus
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = Field(default=0, ge=0)
    inputs: dict[str, str]
    result: dict[str, Any] | None = None
    result_ref: str | None = None
    error: JobFailure | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    review: ReviewDecision | None = None  # set once, by a reviewer (docs/EVENTS.md, "Reviewer page")
    # Correlation (docs/EVENTS.md): the client's string and the intake entry, both carried to the
    # completion event and the webhook; not part of the work (see same_request).
    reference: str | None = Field(default=None, max_length=MAX_REFERENCE_CHARS)
    origin: JobOrigin | None = None
    # digest -> features string of the job's features inputs; never serialised with the document.
    _features: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("created_at", "started_at", "finished_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("timestamps must carry a timezone")
        return value

    @property
    def address(self) -> str:
        """The job's id in the stores and on the queue, unique across tenants (see
        :func:`shared.tenants.scoped`)."""
        return scoped(Tenant(self.tenant), self.job_id)

    # -- named constructors for each transition -------------------------------------------------

    @classmethod
    def new(
        cls,
        kind: str,
        inputs: dict[str, Any],
        job_id: str | None = None,
        tenant: Tenant = DEFAULT_TENANT,
        reference: str | None = None,
        origin: JobOrigin | None = None,
    ) -> JobDocument:
        """A ``queued`` job of ``tenant``; inputs parsed by the kind's model, a random id unless the
        caller gives one; ``reference`` and ``origin`` correlate it (see the fields).

        Raises:
            JobError: bad kind, inputs or job id.
            ReferenceRejectedError: a malformed image reference.
            FeaturesError: a malformed features string (``ForeignFeaturesError``: one not sealed
                for ``tenant``).
        """
        spec = REGISTRY.get(kind)
        parsed = spec.parse(inputs)
        clean = parsed.to_wire(inputs)
        held: dict[str, str] = {}
        for name in clean:
            value = getattr(parsed, name)
            if isinstance(value, features.Features):
                features.check_tenant(value, tenant)  # another tenant's template is refused here
                text, clean[name] = clean[name], features.digest(value)
                held[clean[name]] = text
        if job_id is not None and not re.fullmatch(JOB_ID_PATTERN, job_id):
            raise JobError(f"job id {job_id!r} must match {JOB_ID_PATTERN}")
        doc = cls(
            job_id=job_id or uuid.uuid4().hex,
            tenant=Tenant(tenant),
            kind=spec.name,
            status=JobStatus.QUEUED,
            created_at=utcnow(),
            inputs=clean,
            reference=reference,
            origin=origin,
        )
        return doc.with_features(held)

    @property
    def held_features(self) -> dict[str, str]:
        """Digest -> features string of the job's features inputs (empty once it is final)."""
        return dict(self._features)

    def with_features(self, held: dict[str, str]) -> JobDocument:
        """This document with the features its inputs name by digest (read back by a worker)."""
        copy = self.model_copy()
        copy._features = dict(held)
        return copy

    def run_inputs(self) -> dict[str, str]:
        """The inputs a handler parses: digests replaced by the features strings they name.

        Raises:
            FeaturesError: a digest whose features are no longer held (the job was erased).
        """
        resolved: dict[str, str] = {}
        for name, value in self.inputs.items():
            if features.is_digest(value):
                if value not in self._features:
                    raise FeaturesError("the job's features are no longer held (erased, or the job expired)")
                value = self._features[value]
            resolved[name] = value
        return resolved

    def running(self, attempts: int) -> JobDocument:
        return self.model_copy(update={"status": JobStatus.RUNNING, "started_at": utcnow(), "attempts": attempts})

    def requeued(self, error: JobFailure) -> JobDocument:
        """Back to ``queued`` after a transient error; ``error`` keeps the last one for operators."""
        return self.model_copy(update={"status": JobStatus.QUEUED, "error": error})

    def succeeded(self, result: dict[str, Any], timings: dict[str, float] | None = None) -> JobDocument:
        return self.model_copy(
            update={
                "status": JobStatus.SUCCEEDED,
                "finished_at": utcnow(),
                "result": result,
                "error": None,
                "timings": dict(timings or {}),
            }
        )

    def failed(self, error: JobFailure, timings: dict[str, float] | None = None) -> JobDocument:
        return self.model_copy(
            update={
                "status": JobStatus.FAILED,
                "finished_at": utcnow(),
                "result": None,
                "error": error,
                "timings": dict(timings or {}),
            }
        )

    def same_request(self, other: JobDocument) -> bool:
        """Whether two documents ask for the same work (an idempotent resubmission)."""
        return self.kind == other.kind and self.inputs == other.inputs

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> JobDocument:
        """Parse a stored document.

        Raises:
            UnreadableJobError: it does not parse as this schema (never the parser's own error,
                which would quote the stored inputs).
        """
        try:
            return cls.model_validate_json(data)
        except ValidationError:
            raise UnreadableJobError("the stored job document does not parse") from None
