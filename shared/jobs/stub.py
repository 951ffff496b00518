"""An in-memory job store for unit tests: the transitions of :class:`~shared.jobs.store.JobStore`
without Redis, so the runner and its retries are tested without a worker.

One process, one lock: the atomicity Redis gives the real store is a ``threading.Lock`` here.
"""

from __future__ import annotations

import threading
import time

from shared.errors import StorageError
from shared.jobs.model import JobDocument, JobFailure, JobStatus
from shared.jobs.owner import holder_is_dead
from shared.jobs.store import Claim, ClaimOutcome, dead_letter, without_templates, worker_lost
from shared.tenants import DEFAULT_TENANT, Tenant


class StubJobStore:
    """Job documents in a dict.

    Args:
        archive_error: raised by every :meth:`finish` that archives, as a result archive that
            refuses writes would (e.g. a ``StorageError`` for S3 AccessDenied).
    """

    def __init__(self, archive_error: StorageError | None = None) -> None:
        self.docs: dict[str, JobDocument] = {}
        self.locks: dict[str, tuple[str, float]] = {}  # job id -> (token, expiry on time.monotonic)
        self.counts: dict[str, int] = {}
        self.groups: dict[str, int] = {}  # job id -> how many jobs its last execution ran with
        self.unstarted_at: dict[str, float] = {}
        self.archive_error = archive_error
        self._lock = threading.Lock()

    def create(self, doc: JobDocument) -> tuple[JobDocument, bool]:
        with self._lock:
            if doc.address in self.docs:
                return self.docs[doc.address], False
            self.docs[doc.address] = doc
            self.unstarted_at[doc.address] = time.time()
            return doc, True

    def erase_templates(self, digests: set[str], tenant: Tenant = DEFAULT_TENANT) -> int:
        """As :meth:`JobStore.erase_templates`: redact those templates from ``tenant``'s results."""
        erased = 0
        with self._lock:
            for address, doc in list(self.docs.items()):
                if doc.tenant != tenant:
                    continue
                clean = without_templates(doc, digests)
                if clean is not None:
                    self.docs[address] = clean
                    erased += 1
        return erased

    def get(self, job_id: str) -> JobDocument | None:
        return self.docs.get(job_id)

    def attempts(self, job_id: str) -> int:
        return self.counts.get(job_id, 0)

    def claim(self, job_id: str, token: str, lock_ttl_s: float, max_attempts: int, group: int = 1) -> Claim:
        with self._lock:
            doc = self.docs.get(job_id)
            if doc is None:
                return Claim(ClaimOutcome.MISSING)
            if doc.status.terminal:
                return Claim(ClaimOutcome.DONE, doc)
            held = self.locks.get(job_id)
            if held is not None and held[1] > time.monotonic() and not holder_is_dead(held[0]):
                return Claim(ClaimOutcome.BUSY, doc, max(held[1] - time.monotonic(), 1.0))
            charged, last_group = self.counts.get(job_id, 0), self.groups.pop(job_id, 1)
            if doc.status is JobStatus.RUNNING:  # as the real store: its last execution was lost
                charged -= 1 if last_group > 1 else 0
                doc = doc.model_copy(update={"error": worker_lost(doc, last_group)})
                if last_group > 1 and group > 1:
                    self.counts[job_id] = charged
                    self.locks.pop(job_id, None)
                    self.docs[job_id] = queued = doc.model_copy(
                        update={"status": JobStatus.QUEUED, "attempts": charged}
                    )
                    return Claim(ClaimOutcome.LOST, queued)
            attempts = self.counts[job_id] = charged + 1
            self.unstarted_at.pop(job_id, None)
            if attempts > max_attempts:
                exhausted = doc.model_copy(update={"attempts": attempts})
                self.docs[job_id] = final = dead_letter(exhausted, max_attempts)
                return Claim(ClaimOutcome.EXHAUSTED, final)
            self.groups[job_id] = group
            self.locks[job_id] = (token, time.monotonic() + lock_ttl_s)
            self.docs[job_id] = running = doc.running(attempts)
            return Claim(ClaimOutcome.CLAIMED, running)

    def requeue(self, doc: JobDocument, token: str, error: JobFailure) -> JobDocument:
        with self._lock:
            self._release(doc.address, token)
            self.docs[doc.address] = queued = doc.requeued(error)
            return queued

    def finish(self, doc: JobDocument, token: str | None, archive: bool = True) -> JobDocument:
        if archive and self.archive_error is not None:
            raise self.archive_error
        with self._lock:
            current = self.docs.get(doc.address)
            if current is not None and current.status.terminal:
                return current
            if token is not None:
                self._release(doc.address, token)
            self.docs[doc.address] = doc.with_features({})  # as the real store drops them when final
            return doc

    def terminal(self, job_ids: list[str]) -> list[bool]:
        return [i in self.docs and self.docs[i].status.terminal for i in job_ids]

    def claim_many(self, job_ids: list[str], token: str, lock_ttl_s: float, max_attempts: int) -> list[Claim]:
        return [self.claim(i, token, lock_ttl_s, max_attempts, len(set(job_ids))) for i in job_ids]

    def finish_many(self, docs: list[JobDocument], token: str) -> list[JobDocument]:
        return [self.finish(d, token) for d in docs]

    def _release(self, job_id: str, token: str) -> None:
        if self.locks.get(job_id, ("", 0.0))[0] == token:
            del self.locks[job_id]
