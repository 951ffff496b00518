"""The registry of job kinds: each kind is declared once, and every front door derives from it.

A kind is an input model (typed fields from :mod:`shared.jobs.inputs`), a handler that computes
the answer, the result model it returns, and the queue its task runs on. The producer's
validation, the HTTP request models, the CLI ``submit`` commands, the Celery task names and
routes, and the runner's dispatch all read :data:`REGISTRY`; nothing else lists the kinds.

Kinds live in the modules of :mod:`shared.jobs.kinds`, which are imported on first use of the
registry, so a new kind is one new module (or one more declaration in an existing one)::

    class LivenessInputs(JobInputs):
        image: ImageRef

    @job_kind("liveness", queue=HEAVY_QUEUE, help="is the selfie a live person")
    def liveness(inputs: LivenessInputs, job: JobContext) -> LivenessResult:
        return job.compute(job.engine.liveness, job.fetch(inputs.image))
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import JobError
from shared.jobs.inputs import InputType, input_type
from shared.tenants import Scope

if TYPE_CHECKING:
    from shared.jobs.context import JobContext

HEAVY_QUEUE = "kyc.heavy"  # image decoding and networks
LIGHT_QUEUE = "kyc.light"  # feature arithmetic and single Redis calls: answers in milliseconds
# Webhook deliveries: waits on tenants' receivers, on a pool of their own (a thread pool), so
# a receiver that trickles never holds a slot a job could use.
WEBHOOK_QUEUE = "kyc.webhooks"
JOB_QUEUES = (HEAVY_QUEUE, LIGHT_QUEUE)
QUEUES = (*JOB_QUEUES, WEBHOOK_QUEUE)
TASK_PREFIX = "kyc.jobs."
# One message for several jobs (a backlog's chunk, see ``Producer.send``): its argument is the
# list of their addresses, routed to their kinds' queue, run together by ``execute_many``.
CHUNK_TASK = TASK_PREFIX + "chunk"


class JobInputs(BaseModel):
    """Base of every kind's input model: exact fields, frozen, typed values."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    def to_wire(self, given: Mapping[str, Any] | None = None) -> dict[str, str]:
        """The inputs as the plain strings a job document carries: the caller's own strings where
        given (a reference keeps its spelling), the defaults' otherwise."""
        given = given or {}
        dumped = self.model_dump()
        # A flag is stored as spelled by its serializer ("true"/"false"), whatever the caller wrote.
        return {
            name: str(value if isinstance(getattr(self, name), bool) else given.get(name, value))
            for name, value in dumped.items()
        }


Handler = Callable[[Any, "JobContext"], BaseModel]
# Several jobs of one kind at once: per job, its answer or the error its handler would raise.
BatchHandler = Callable[[list[Any], list["JobContext"]], list[BaseModel | Exception]]


@dataclass(frozen=True)
class JobKindSpec:
    """One job kind.

    Attributes:
        name: the kind, as in ``JobDocument.kind`` and ``POST /v1/jobs`` (``"verify"``).
        inputs: the input model.
        handler: computes the answer from parsed inputs; raises typed errors.
        result: the model the handler returns.
        queue: the Celery queue of its task.
        help: one line for the CLI and the API's schema.
        task: the Celery task name.
        scope: what an API key must hold to submit it.
    """

    name: str
    inputs: type[JobInputs]
    handler: Handler
    result: Any  # a model, or a union of models (e.g. FacesResult | InvalidImageResult)
    queue: str
    help: str
    task: str
    scope: Scope = Scope.JOBS_SUBMIT

    def fields(self) -> dict[str, InputType]:
        """Input name -> its type, in declaration order."""
        return {name: input_type(info.metadata) for name, info in self.inputs.model_fields.items()}

    def parse(self, inputs: Mapping[str, Any]) -> JobInputs:
        """The inputs as typed values, without I/O.

        Raises:
            JobError: missing or unexpected fields, empty or oversized values.
            ReferenceRejectedError: a malformed image reference.
            FeaturesError: a malformed features string.
        """
        required = {name for name, info in self.inputs.model_fields.items() if info.is_required()}
        missing = sorted(required - set(inputs))
        extra = sorted(set(inputs) - set(self.fields()))
        if missing or extra:
            raise JobError(f"{self.name} job inputs: missing {missing}, unexpected {extra}")
        try:
            return self.inputs.model_validate(dict(inputs))
        except ValidationError as exc:  # only non-KYC errors land here (a wrong Python type)
            raise JobError(f"{self.name} job inputs: {exc.errors()[0]['msg']}") from None


class Registry:
    """The job kinds by name, loaded from :mod:`shared.jobs.kinds` on first use."""

    def __init__(self) -> None:
        self._kinds: dict[str, JobKindSpec] = {}
        self._batches: dict[str, BatchHandler] = {}
        self._lock = threading.RLock()
        self._loaded = False

    def add(self, spec: JobKindSpec) -> JobKindSpec:
        """Register a kind; a second kind of the same name is a programming error."""
        with self._lock:
            if spec.name in self._kinds:
                raise ValueError(f"job kind {spec.name!r} is declared twice")
            if spec.queue not in JOB_QUEUES:
                raise ValueError(f"job kind {spec.name!r}: unknown queue {spec.queue!r}")
            self._kinds[spec.name] = spec
        return spec

    def add_batch(self, name: str, handler: BatchHandler) -> None:
        """Declare how several jobs of kind ``name`` run at once (one call for all their faces)."""
        with self._lock:
            if name not in self._kinds or name in self._batches:
                raise ValueError(f"batch handler for {name!r}: kind undeclared, or batched twice")
            self._batches[name] = handler

    def batch(self, name: str) -> BatchHandler | None:
        """The kind's batch handler; None runs its jobs one at a time."""
        self._load()
        return self._batches.get(name)

    def _load(self) -> dict[str, JobKindSpec]:
        with self._lock:
            if not self._loaded:
                from shared.jobs import kinds

                for module in pkgutil.iter_modules(kinds.__path__):
                    importlib.import_module(f"{kinds.__name__}.{module.name}")
                # Only once every module imported: a failed import fails every use, never a
                # registry that silently lacks kinds.
                self._loaded = True
            return self._kinds

    def get(self, name: str) -> JobKindSpec:
        """The kind called ``name``.

        Raises:
            JobError: no such kind.
        """
        spec = self._load().get(str(name))
        if spec is None:
            raise JobError(f"unknown job kind {name!r}")
        return spec

    def __iter__(self) -> Iterator[JobKindSpec]:
        return iter(list(self._load().values()))

    def names(self) -> list[str]:
        return list(self._load())


REGISTRY = Registry()


def job_kind(
    name: str, *, queue: str, help: str, scope: Scope = Scope.JOBS_SUBMIT, registry: Registry = REGISTRY
) -> Callable[[Handler], Handler]:
    """Declare a job kind: the decorated handler's first parameter's annotation is its input
    model, its return annotation the result model.

    Args:
        name: the kind's name.
        queue: :data:`HEAVY_QUEUE` or :data:`LIGHT_QUEUE`.
        help: one line for the CLI and the API.
        scope: the API key scope needed to submit it (default ``jobs:submit``).
        registry: where to declare it (tests declare kinds in a registry of their own).
    """

    def declare(handler: Handler) -> Handler:
        hints = get_type_hints(handler)
        params = [p for p in hints if p != "return"]
        registry.add(
            JobKindSpec(
                name=name,
                inputs=hints[params[0]],
                handler=handler,
                result=hints["return"],
                queue=queue,
                help=help,
                task=TASK_PREFIX + name,
                scope=scope,
            )
        )
        return handler

    return declare


def batch_of(name: str, registry: Registry = REGISTRY) -> Callable[[BatchHandler], BatchHandler]:
    """Declare the batch handler of kind ``name``: it must answer each job exactly as the kind's
    handler would (tests compare the two)."""

    def declare(handler: BatchHandler) -> BatchHandler:
        registry.add_batch(name, handler)
        return handler

    return declare
