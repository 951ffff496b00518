"""What the event consumers hand to the job system, and the two seams they reach it through.

The consumers never import the API, the producer or the workers: a caller binds
:class:`Validate` and :class:`Submit` to the project's job kinds (``shared.events.wiring`` binds
today's request models and producer), so the kinds stay declared in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import redis

from shared.errors import JobError, KYCFaceError
from shared.events.reasons import MAX_REASON_CHARS, Problem, joined
from shared.jobs.model import JobOrigin
from shared.tenants import DEFAULT_TENANT, Tenant, scoped

log = logging.getLogger(__name__)


class RequestRejectedError(JobError):
    """A job request that can never become a job as sent (bad kind, inputs, job id or callback).

    The message is the reason a producer reads on the rejects stream: it names fields, never
    their values. ``problems`` holds them one by one (see :mod:`shared.events.reasons`), for the
    422 of the HTTP API.
    """

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = tuple(problems)

    @classmethod
    def of(cls, problems: Sequence[Problem]) -> RequestRejectedError:
        """The error of ``problems``, its message their joined reason."""
        return cls(joined(problems), problems)


class CallbackRefusedError(RequestRejectedError):
    """A ``callback_url`` outside the tenant's allow-list, or resolving to a private address."""


class MalformedEventError(JobError):
    """A bucket notification in no shape we know; logged and dropped, never retried."""


@dataclass(frozen=True)
class JobRequest:
    """A validated request: the kind's inputs as the job system takes them, plus the envelope.

    ``job_id`` is always set: the producer's idempotency key, or one derived from the request so
    a redelivery finds the same job. ``reference`` is the client's correlation string and
    ``origin`` the entry the request came from; both travel to the completion event.
    """

    kind: str
    inputs: dict[str, str]
    job_id: str
    tenant: str = DEFAULT_TENANT
    callback_url: str | None = None
    reference: str | None = None
    origin: JobOrigin | None = None

    @property
    def address(self) -> str:
        """The job's tenant-scoped id, under which its document and meta are kept."""
        return scoped(Tenant(self.tenant), self.job_id)


@dataclass(frozen=True)
class ValidRequest:
    """A request that passed every check of the HTTP API: the kind's inputs as the job system
    takes them, and the envelope fields as sent (absent ones None)."""

    kind: str
    inputs: dict[str, str]
    job_id: str | None = None
    callback_url: str | None = None
    reference: str | None = None


class Validate(Protocol):
    """Check a request (the body of ``POST /v1/jobs``) of ``tenant`` the way the HTTP API does:
    its fields, the buckets its images name, its callback.

    Returns:
        The valid request.

    Raises:
        RequestRejectedError: anything wrong, each problem naming its field (the same problems,
            in the same words, as the API's 422).
    """

    def __call__(self, request: Mapping[str, Any], tenant: str) -> ValidRequest: ...


class Submit(Protocol):
    """Create the job, or find the one already made under ``request.job_id``.

    Returns:
        The job id.

    Raises:
        KYCFaceError: ``transient`` ones (Redis, broker) leave the entry for a later try; any
            other sends it to the rejects stream.
    """

    def __call__(self, request: JobRequest) -> str: ...


class Outcome(str, Enum):
    """What became of one consumed entry; each is counted in Redis (``keys.event_counts_key``)."""

    CREATED = "created"  # a job was made (or found under the same idempotency key)
    DUPLICATE = "duplicate"  # a bucket event already turned into a job
    UNMATCHED = "unmatched"  # an object key no rule matches
    IGNORED = "ignored"  # a test event, a removal: nothing to do
    REJECTED = "rejected"  # on the rejects stream with its reason
    MALFORMED = "malformed"  # not a notification: logged, dropped
    RETRY = "retry"  # a transient error: left for a later try


@dataclass(frozen=True)
class Handled:
    """The outcome of one request or object event, with the job it made or why it made none."""

    outcome: Outcome
    job_id: str | None = None
    reason: str = ""


def handled_error(exc: Exception) -> Handled:
    """The outcome of an error raised while turning an entry into a job.

    Transient errors (Redis, the broker) leave the entry for a later try; every other one
    rejects it. An unexpected exception is named by its type only: its message may quote input.
    """
    if isinstance(exc, redis.RedisError) or (isinstance(exc, KYCFaceError) and exc.transient):
        return Handled(Outcome.RETRY, reason=f"unavailable ({type(exc).__name__})")
    if isinstance(exc, KYCFaceError):
        return Handled(Outcome.REJECTED, reason=exc.message[:MAX_REASON_CHARS])
    # The type only, no traceback: an unexpected exception's message may quote the input.
    log.error("unexpected %s while making a job from an event", type(exc).__name__)
    return Handled(Outcome.REJECTED, reason=f"internal error: {type(exc).__name__}")
