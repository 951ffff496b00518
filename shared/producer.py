"""Submit jobs and poll their documents. Needs only Redis: no model, no onnxruntime, no OpenCV.

Tasks are sent by name, so a web service or a cron job can enqueue without importing the
worker code. A caller may choose the job id (an idempotency key such as the onboarding case id
plus the operation): submitting it again returns the existing job and sends nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import redis
from celery import Celery
from kombu import Exchange, Queue

from shared.config import Settings, get_settings
from shared.errors import JobError, StorageUnavailableError, UnreadableJobError
from shared.jobs import REGISTRY, JobDocument, JobStatus, JobStore
from shared.jobs.inputs import InputType, parse_probe
from shared.jobs.model import JobOrigin, utcnow
from shared.jobs.owner import holder_is_dead
from shared.jobs.registry import CHUNK_TASK, QUEUES
from shared.jobs.store import dead_letter
from shared.storage import store_for
from shared.storage.prefixes import check_tenant_prefix, configured_tenants
from shared.storage.redis_client import broker_transport_options, redis_client
from shared.storage.refs import Ref
from shared.tenants import DEFAULT_TENANT, Tenant, scoped

log = logging.getLogger(__name__)


class Swept(NamedTuple):
    """What one sweep of expired running jobs did (:meth:`Producer.requeue_expired`)."""

    resent: list[str]
    failed: list[str]


def celery_config() -> dict[str, Any]:
    """What producers and workers must agree on: serialisation, the queues, each task's queue.

    Heavy (image decoding + networks) and light (feature arithmetic) work sit on separate queues
    so they scale apart: ``celery -A workers worker -Q kyc.light`` answers matches in
    milliseconds while a backlog keeps ``kyc.heavy`` busy.
    """
    return {
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_queues": [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        "task_routes": {spec.task: {"queue": spec.queue} for spec in REGISTRY},
        "broker_connection_retry_on_startup": True,
    }


# kombu's Redis transport keeps each message a worker has taken but not yet acknowledged in this
# hash (its ``unacked_key`` transport option, left at its default): not a key of ours.
KOMBU_UNACKED_KEY = "unacked"


def _task_ids(raw: Iterable[bytes | str], wrapped: bool = False) -> list[str]:
    """The jobs of raw kombu messages: a job task's id (its job's address), or every address a
    chunk carries; messages that are not Celery tasks are skipped.

    ``wrapped``: entries of kombu's unacked hash, ``[message, exchange, routing_key]``.
    """
    ids = []
    for item in raw:
        try:
            message = json.loads(item)
            message = message[0] if wrapped else message
            headers = message["headers"]
            if headers.get("task") == CHUNK_TASK:
                body = message["body"]
                if message.get("properties", {}).get("body_encoding") == "base64":
                    body = base64.b64decode(body)
                ids += [str(job_id) for job_id in json.loads(body)[0][0]]
            else:
                ids.append(str(headers["id"]))
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return ids


def _sender(settings: Settings) -> Celery:
    """A Celery app used only to publish messages; it never runs tasks."""
    app = Celery("kyc-producer", broker=settings.resolved_broker_url(), set_as_current=False)
    app.conf.update(
        **celery_config(),
        # Fail a submit fast when the broker is down rather than blocking the caller's request.
        broker_transport_options={
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.5,
            **broker_transport_options(settings),
        },
    )
    return app


class Producer:
    """Submits jobs to the workers and reads their documents.

    Args:
        settings: broker (``KYC_BROKER_URL``) and job store settings (default: from the
            environment).

    Raises:
        JobError: no broker configured.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        if not self.settings.resolved_broker_url():
            raise JobError("no broker: set KYC_BROKER_URL (or use the embedded backlog)")
        self.jobs = JobStore(self.settings)
        self.images = store_for(self.settings)
        self.app = _sender(self.settings)
        self._broker: redis.Redis | None = None  # the broker's Redis, for the sweeper's peeks
        self._prefixed_tenants = configured_tenants(self.settings)

    def submit(
        self,
        kind: str,
        inputs: dict[str, Any],
        job_id: str | None = None,
        tenant: Tenant = DEFAULT_TENANT,
        *,
        reference: str | None = None,
        origin: JobOrigin | None = None,
    ) -> JobDocument:
        """Submit a job, or return the existing one if ``job_id`` was already submitted.

        Args:
            kind: a registered kind (``faces``, ``verify``, ``match``, ``enroll``...).
            inputs: the kind's inputs (see its input model in :mod:`shared.jobs.kinds`).
            job_id: idempotency key within ``tenant``; a random id when omitted.
            tenant: who the job (and any gallery it names) belongs to.
            reference, origin: the client's correlation string and the intake entry the job was
                made from, kept in the document for its completion event (the first submit's).

        Returns:
            The job document (``queued``, or the existing document on a duplicate id).

        Raises:
            JobError: invalid request, or ``job_id`` already used for different work.
            ReferenceRejectedError: an image reference that workers would refuse.
            FeaturesError: a malformed features string.
            StorageUnavailableError: Redis or the broker is unreachable.
        """
        stored, created = self.store_many([JobDocument.new(kind, inputs, job_id, tenant, reference, origin)])[0]
        if created:
            self.send([stored])
            log.info("submitted %s job %s", stored.kind, stored.address)
        return stored

    def store(
        self, kind: str, inputs: dict[str, Any], job_id: str | None = None, tenant: Tenant = DEFAULT_TENANT
    ) -> tuple[JobDocument, bool]:
        """The first half of :meth:`submit`: validate and store the job, send nothing yet.

        Returns:
            ``(document, created)``: ``created`` is False for an id already submitted (its
            document, which needs no message); a created job must go to :meth:`send`.

        Raises:
            As :meth:`submit`.
        """
        return self.store_many([JobDocument.new(kind, inputs, job_id, tenant)])[0]

    def store_many(self, docs: Sequence[JobDocument]) -> list[tuple[JobDocument, bool]]:
        """:meth:`store` for new documents (made by :meth:`JobDocument.new`, which parsed their
        inputs), in pipelined round trips: a backlog stores a window's new rows at once.

        All or nothing: when one id was already used for different work, the jobs this call
        created are removed again before the error is raised.

        Raises:
            JobError: an id already used for different work (named in the message).
            ReferenceRejectedError: an image reference that workers would refuse.
            StorageUnavailableError: Redis is unreachable.
        """
        now = utcnow()  # submitted now, whenever the documents were made
        docs = [doc.model_copy(update={"created_at": now}) for doc in docs]
        for doc in docs:
            wire = doc.run_inputs()  # a features probe is a digest in the document
            for name, input_type in REGISTRY.get(doc.kind).fields().items():
                if input_type is InputType.REF:
                    self._check_image(self.images.validate(wire[name]), Tenant(doc.tenant))
                elif input_type is InputType.PROBE and isinstance(probe := parse_probe(wire[name]), Ref):
                    self._check_image(probe, Tenant(doc.tenant))
        stored = self.jobs.create_many(docs)
        reused = next(((doc, s) for doc, (s, created) in zip(docs, stored, strict=True)
                       if not created and not s.same_request(doc)), None)  # fmt: skip
        if reused is not None:
            for doc, created in stored:
                if created:
                    self.jobs.discard(doc.address)
            raise JobError(f"job id {reused[0].job_id!r} was already used for a different {reused[1].kind} job")
        return stored

    def send(self, docs: Sequence[JobDocument], per_message: int | None = None) -> None:
        """Send the messages of jobs :meth:`store` created: one per job, or with several, chunk
        messages (:data:`shared.jobs.registry.CHUNK_TASK`) of at most ``per_message`` jobs
        (default: all of a queue's in one) per queue.

        Raises:
            StorageUnavailableError: the broker is unreachable; the jobs not sent are discarded,
                so the caller's retry can submit them again.
        """
        by_queue: dict[str, list[JobDocument]] = {}
        for doc in docs:
            by_queue.setdefault(REGISTRY.get(doc.kind).queue, []).append(doc)
        messages = [
            (queue, members[start : start + (per_message or len(members))])
            for queue, members in by_queue.items()
            for start in range(0, len(members), per_message or len(members))
        ]
        for n, (queue, members) in enumerate(messages):
            try:
                if len(members) == 1:
                    self._send(members[0])
                else:
                    addresses = [d.address for d in members]
                    self.app.send_task(CHUNK_TASK, args=[addresses], queue=queue, task_id=uuid.uuid4().hex)
            except Exception as exc:
                # Nothing will ever run these jobs: free the ids so the caller can submit again.
                for _, unsent in messages[n:]:
                    for doc in unsent:
                        self.jobs.discard(doc.address)
                raise StorageUnavailableError(f"broker unavailable ({type(exc).__name__})") from None

    def _check_image(self, ref: Ref, tenant: Tenant) -> None:
        check_tenant_prefix(self.settings, tenant, ref, self._prefixed_tenants)

    def _send(self, doc: JobDocument) -> None:
        spec = REGISTRY.get(doc.kind)
        # task_id = the job's address: a duplicate message is recognisable, and harmless (see
        # JobStore.claim); the worker finds the document, and so the tenant, from it.
        self.app.send_task(spec.task, args=[doc.address], queue=spec.queue, task_id=doc.address)

    def requeue_stale(self, older_than_s: float, limit: int = 1000) -> list[str]:
        """Send again the task of every job that was stored ``older_than_s`` ago, never claimed,
        and whose message is no longer waiting on its queue.

        This closes two gaps: a producer that crashed between storing a job and sending its
        task, and a message lost with Redis between a worker's pop and its unacked record (the
        kombu Redis transport's window). A message still waits when an older job's message is
        still on the queue (the queue is FIFO), so a long backlog is not duplicated. Idempotent:
        a duplicate message finds the job claimed or done and does nothing.

        Returns:
            The addresses (tenant-scoped ids) of the jobs sent again.
        """

        def unstarted(job_id: str) -> JobDocument | None:
            try:
                doc = self.jobs.get(job_id)
            except UnreadableJobError:
                # No worker could run it either; failing every sweep on it would stop the others.
                log.error("job %s: its stored document does not parse; the sweeper forgets it", job_id)
                self.jobs.forget_unstarted(job_id)
                return None
            if doc is None or doc.status is not JobStatus.QUEUED or doc.attempts > 0:
                self.jobs.forget_unstarted(job_id)  # expired, or started by now
                return None
            return doc

        found = [(doc, submitted) for job_id, submitted in self.jobs.unstarted(older_than_s, limit)
                 if (doc := unstarted(job_id)) is not None]  # fmt: skip
        # A message moves from its queue to kombu's unacked hash (taken by a worker, perhaps still
        # waiting for a free pool process) and then to a claim. Reading in that order, and the
        # documents again last, a message in motion is always seen in one of the three places.
        oldest_waiting = {
            queue: self._oldest_waiting(queue) for queue in {REGISTRY.get(d.kind).queue for d, _ in found}
        }
        reserved = self._reserved() if found else set()
        resent = []
        for doc, submitted in found:
            if doc.address in reserved or submitted >= oldest_waiting[REGISTRY.get(doc.kind).queue]:
                continue
            if unstarted(doc.address) is not None:
                self._send(doc)
                self.jobs.touch_unstarted(doc.address)
                resent.append(doc.address)
        if resent:
            log.warning("re-sent %d job(s) whose message never reached a worker", len(resent))
        return resent

    def requeue_expired(self, older_than_s: float, max_attempts: int, limit: int = 1000) -> Swept:
        """Send again, once, every job left ``running`` whose run lock expired ``older_than_s``
        ago with no live holder and whose message no worker has reserved; fail instead, with
        the dead-letter record, a job that has had its ``max_attempts``.

        A job stays ``running`` with no message anywhere when the execution that claimed it was
        acknowledged without recording its end (a hard time limit or a lost process while Redis
        was down), or when Redis lost the message (its last second before a crash). A message
        kombu still holds for a lost worker comes back by itself after the visibility timeout:
        such a job is left alone while its message is reserved, and ``older_than_s`` should
        outlast that timeout, so a message given back and waiting on its queue is not duplicated
        (a duplicate would be harmless: it finds the job claimed or done).

        Returns:
            The addresses sent again and those failed.
        """
        resent: list[str] = []
        failed: list[str] = []
        due = self.jobs.expired_running(older_than_s, limit)
        reserved = self._reserved() if due else set()
        for job_id in due:
            doc, holder = self.jobs.run_state(job_id)
            if doc is None or doc.status is not JobStatus.RUNNING:
                self.jobs.forget_running(job_id)  # expired, or queued again: its claim adds it back
            elif (holder is not None and not holder_is_dead(holder)) or job_id in reserved:
                continue  # still held, or kombu will give its message back
            elif doc.attempts >= max_attempts:
                self.jobs.finish(dead_letter(doc, max_attempts), token=None)
                failed.append(job_id)
            else:
                self._send(doc)
                # Once: look again only after the message sent now had its time to be claimed.
                self.jobs.look_again(job_id, time.time())
                resent.append(job_id)
        if resent or failed:
            log.warning("%d running job(s) whose run lock expired with no message left: %d sent again, %d failed",
                        len(resent) + len(failed), len(resent), len(failed))  # fmt: skip
        return Swept(resent, failed)

    def _broker_client(self) -> redis.Redis:
        if self._broker is None:
            self._broker = redis_client(str(self.settings.resolved_broker_url()), self.settings)
        return self._broker

    def _reserved(self) -> set[str]:
        """Task ids of the messages workers have reserved and not yet acknowledged."""
        try:
            raw = self._broker_client().hvals(KOMBU_UNACKED_KEY)
        except redis.exceptions.RedisError as exc:
            raise StorageUnavailableError(f"broker unavailable ({type(exc).__name__})") from None
        return set(_task_ids(raw, wrapped=True))

    def _oldest_waiting(self, queue: str, peek: int = 20) -> float:
        """Submit time of the oldest unstarted job among the next ``peek`` messages of ``queue``
        (kombu pushes left and pops right); infinity when none is waiting."""
        try:
            raw = self._broker_client().lrange(queue, -peek, -1)
        except redis.exceptions.RedisError as exc:
            raise StorageUnavailableError(f"broker unavailable ({type(exc).__name__})") from None
        times = [t for t in self.jobs.submitted_at(_task_ids(raw)) if t is not None]
        return min(times, default=math.inf)

    def submit_faces(self, image_ref: str, job_id: str | None = None, tenant: Tenant = DEFAULT_TENANT) -> JobDocument:
        """Submit a ``faces`` job: every face of one image."""
        return self.submit("faces", {"image": image_ref}, job_id, tenant)

    def submit_verify(
        self, selfie_ref: str, document_ref: str, job_id: str | None = None, tenant: Tenant = DEFAULT_TENANT
    ) -> JobDocument:
        """Submit a ``verify`` job: the selfie's face against the document's portrait."""
        return self.submit("verify", {"selfie": selfie_ref, "document": document_ref}, job_id, tenant)

    def submit_match(
        self, features1: str, features2: str, job_id: str | None = None, tenant: Tenant = DEFAULT_TENANT
    ) -> JobDocument:
        """Submit a ``match`` job: two features strings."""
        return self.submit("match", {"features1": features1, "features2": features2}, job_id, tenant)

    def get_job(self, job_id: str, tenant: Tenant = DEFAULT_TENANT) -> JobDocument | None:
        """The job's current document, or None if ``tenant`` has no such job (or it expired)."""
        return self.jobs.get(scoped(tenant, job_id))

    def wait_for(
        self, job_id: str, timeout_s: float = 60.0, poll_s: float = 0.2, tenant: Tenant = DEFAULT_TENANT
    ) -> JobDocument:
        """Poll until the job is ``succeeded`` or ``failed``.

        Raises:
            TimeoutError: not finished within ``timeout_s``.
            JobError: no such job.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            doc = self.get_job(job_id, tenant)
            if doc is None:
                raise JobError(f"no job {job_id!r}")
            if doc.status.terminal:
                return doc
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {doc.status.value} after {timeout_s}s")
            time.sleep(poll_s)

    def close(self) -> None:
        """Release the Redis and broker connections."""
        self.jobs.redis.close()
        if self._broker is not None:
            self._broker.close()
        self.app.close()


_default_lock = threading.Lock()
_default: Producer | None = None


def default_producer() -> Producer:
    """The process's producer on :func:`get_settings`, built on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Producer(get_settings())
        return _default


def submit(
    kind: str, inputs: dict[str, Any], job_id: str | None = None, tenant: Tenant = DEFAULT_TENANT
) -> JobDocument:
    """:meth:`Producer.submit` on the default producer."""
    return default_producer().submit(kind, inputs, job_id, tenant)


def submit_faces(image_ref: str, job_id: str | None = None) -> JobDocument:
    """:meth:`Producer.submit_faces` on the default producer."""
    return default_producer().submit_faces(image_ref, job_id)


def submit_verify(selfie_ref: str, document_ref: str, job_id: str | None = None) -> JobDocument:
    """:meth:`Producer.submit_verify` on the default producer."""
    return default_producer().submit_verify(selfie_ref, document_ref, job_id)


def submit_match(features1: str, features2: str, job_id: str | None = None) -> JobDocument:
    """:meth:`Producer.submit_match` on the default producer."""
    return default_producer().submit_match(features1, features2, job_id)


def get_job(job_id: str, tenant: Tenant = DEFAULT_TENANT) -> JobDocument | None:
    """:meth:`Producer.get_job` on the default producer."""
    return default_producer().get_job(job_id, tenant)


def wait_for(job_id: str, timeout_s: float = 60.0, poll_s: float = 0.2, tenant: Tenant = DEFAULT_TENANT) -> JobDocument:
    """:meth:`Producer.wait_for` on the default producer."""
    return default_producer().wait_for(job_id, timeout_s, poll_s, tenant)
