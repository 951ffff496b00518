"""Job documents in Redis, with transitions that make a redelivered task harmless.

Every transition runs under ``WATCH``/``MULTI`` on the document (and the run lock), so two
executions of one job id cannot both start it, and a terminal document is never replaced.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple, TypeVar

import redis
from redis.client import Pipeline

from shared import features, keys
from shared.config import Settings
from shared.errors import FeaturesError, JobError, MaxAttemptsExceeded, StorageUnavailableError, WorkerLost
from shared.jobs.archive import ResultArchive
from shared.jobs.inputs import InputType
from shared.jobs.model import JobDocument, JobFailure, JobStatus
from shared.jobs.owner import holder_is_dead
from shared.jobs.registry import REGISTRY
from shared.storage.redis_client import execute_scripted, redis_client
from shared.tenants import DEFAULT_TENANT, Tenant, scoped

log = logging.getLogger(__name__)
T = TypeVar("T")


class ClaimOutcome(str, Enum):
    CLAIMED = "claimed"  # this execution owns the job now: run it
    MISSING = "missing"  # no document (never submitted, or expired): nothing to do
    DONE = "done"  # already terminal: a redelivery, nothing to do
    BUSY = "busy"  # another execution holds the run lock: look again later
    EXHAUSTED = "exhausted"  # past max attempts: the claim wrote the dead-letter document
    # Its last execution ran in a group (a chunk, a batch) and lost its process; claimed in a group
    # again, it was put back ``queued`` uncharged instead: the caller re-sends it split.
    LOST = "lost"


class Claim(NamedTuple):
    outcome: ClaimOutcome
    doc: JobDocument | None = None
    retry_in_s: float = 0.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except redis.exceptions.WatchError:
        raise
    except redis.exceptions.RedisError as exc:
        raise StorageUnavailableError(f"job store unavailable ({type(exc).__name__})") from None


# A document's compact JSON names its status as one of these; a string value inside it would
# escape the quotes, so neither appears in a queued or running document.
_TERMINAL_MARKS = tuple(f'"status":"{s.value}"'.encode() for s in JobStatus if s.terminal)


def _maybe_terminal(raw: bytes | str) -> bool:
    """Whether a stored document may be terminal, without parsing it (a pre-filter only)."""
    data = raw.encode() if isinstance(raw, str) else raw
    return any(mark in data for mark in _TERMINAL_MARKS)


def _read_for_claim(pipe: Pipeline, job_id: str) -> None:
    """Queue the reads a claim decides on: document, lock holder and attempt record (see
    :func:`shared.keys.job_attempts_key`), the lock's TTL, and the probes held beside the document."""
    pipe.mget(keys.job_key(job_id), keys.job_lock_key(job_id), keys.job_attempts_key(job_id))
    pipe.pttl(keys.job_lock_key(job_id))
    pipe.hgetall(keys.job_features_key(job_id))


@dataclass(frozen=True)
class _ClaimWrite:
    """A claim's compare-and-set (:data:`_CLAIM`) and what it means once written."""

    keys: list[str]
    args: list[Any]
    claim: Claim

    def settle(self, written: Any) -> Claim | None:
        """The claim if the script wrote it; None if the job changed since it was read."""
        return self.claim if written else None


def dead_letter(doc: JobDocument, max_attempts: int) -> JobDocument:
    """The final document of a job started more than ``max_attempts`` times.

    The broker keeps no redelivery count: a job that kills its worker every time would otherwise
    loop forever.
    """
    why = MaxAttemptsExceeded(
        f"job gave up after {max_attempts} attempts; the last one did not finish "
        "(worker lost, time limit or storage unavailable)" + (f": {doc.error.message}" if doc.error else "")
    )
    return doc.failed(JobFailure.from_exception(why))


def _images_of(doc: JobDocument) -> str:
    """The image references a job reads (never the images), for operators to find a poison one."""
    types = REGISTRY.get(doc.kind).fields() if doc.kind in REGISTRY.names() else {}
    found = [
        value
        for name, value in sorted(doc.inputs.items())
        if types.get(name) in (InputType.REF, InputType.PROBE) and not features.is_digest(value)
    ]
    return ", ".join(found) if found else "none"


def worker_lost(doc: JobDocument, group: int) -> JobFailure:
    """The record of an execution that lost its process (SIGKILL, the OOM killer, a crash in
    native code) while running ``doc``, naming the images it was reading."""
    company = f" with {group - 1} other job{'' if group == 2 else 's'}" if group > 1 else " alone"
    why = WorkerLost(f"its process was lost while running it{company} (image {_images_of(doc)})")
    return JobFailure.from_exception(why)


def _attempt_record(raw: bytes | str | None) -> tuple[int, int]:
    """``(attempts charged, jobs the last execution ran with)`` from the attempt key's value."""
    charged, _, group = _text(raw or b"0").partition("/")
    return int(charged or 0), int(group or 1)


def _attempt_value(charged: int, group: int) -> str:
    return f"{charged}/{group}" if group > 1 else str(charged)


# SET NX the document and, only if it was new, remember the job as not yet sent: one atomic step,
# so no crash can leave a stored job that the sweeper does not know about.
# The job's held features (digest, features pairs from ARGV[5]) in the same step, each indexed by
# its digest (KEYS[4...], in the same order) for erasure: a worker never finds a document whose
# probe is missing, and an erasure never misses a probe waiting in the queue.
_CREATE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
  if #ARGV > 4 then
    redis.call('HSET', KEYS[3], unpack(ARGV, 5))
    redis.call('EXPIRE', KEYS[3], ARGV[2])
    for i = 4, #KEYS do
      redis.call('SADD', KEYS[i], ARGV[4])
      redis.call('EXPIRE', KEYS[i], ARGV[2])
    end
  end
  return 1
end
return 0
"""


# Start an execution (JobStore.claim), if the job's document, lock holder and attempt record are
# still what the caller read (their SHA-1, the holder, the record: ARGV[1-3], '' for none): an
# optimistic transaction in one round trip, where WATCH/MULTI takes three. 0 when any changed (read
# again). KEYS: document, lock, attempts, unstarted set, running set. ARGV[5] is the new attempt
# record; an empty ARGV[9] (past the attempts) only writes it and drops the job from the unstarted
# set, as the dead letter follows; else the job enters the running set at its lock's expiry
# (ARGV[10]), for the sweeper. An empty token (ARGV[7]) writes the document and releases the lock
# instead of taking it: a job put back ``queued`` after its group lost its process
# (ClaimOutcome.LOST), which leaves the running set.
_CLAIM = """
local raw = redis.call('GET', KEYS[1])
if not raw or redis.sha1hex(raw) ~= ARGV[1] then return 0 end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then return 0 end
if (redis.call('GET', KEYS[3]) or '') ~= ARGV[3] then return 0 end
redis.call('ZREM', KEYS[4], ARGV[4])
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6])
if ARGV[9] ~= '' then
  if ARGV[7] ~= '' then
    redis.call('SET', KEYS[2], ARGV[7], 'PX', ARGV[8])
    redis.call('ZADD', KEYS[5], ARGV[10], ARGV[4])
  else
    redis.call('DEL', KEYS[2])
    redis.call('ZREM', KEYS[5], ARGV[4])
  end
  redis.call('SET', KEYS[1], ARGV[9], 'KEEPTTL')
end
return 1
"""

# Write a job's next document (JobStore._transition) unless it already has a terminal one, which
# is returned instead (terminal states are final); one round trip. KEYS: document, lock, held
# features, the running set, then the erasure index of each template the result holds. ARGV: the document, '1' if
# it is terminal (TTL renewed, probe dropped, indexes filled) or '0' (TTL kept), the TTL, the job's
# address, and the execution's lock token ('' for none), whose lock alone is released.
_TRANSITION = """
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, current = pcall(cjson.decode, raw)
  if ok and type(current) == 'table' and (current.status == 'succeeded' or current.status == 'failed') then
    return raw
  end
end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[4])
  for i = 5, #KEYS do
    redis.call('SADD', KEYS[i], ARGV[4])
    redis.call('EXPIRE', KEYS[i], ARGV[3])
  end
else
  redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
end
if ARGV[5] ~= '' and redis.call('GET', KEYS[2]) == ARGV[5] then
  redis.call('DEL', KEYS[2])
end
return false
"""


# The result fields that hold a template: faces[].features, an enrolment's, a search probe's.
TEMPLATE_FIELDS = ("features", "probe_features")


def _digest_of(text: str) -> str | None:
    try:
        return features.digest_of_string(text)
    except FeaturesError:
        return None


def result_digests(result: object) -> set[str]:
    """Digests of the templates a result holds, at any depth (see :func:`shared.features.digest`)."""
    found: set[str] = set()
    if isinstance(result, dict):
        for name, value in result.items():
            if name in TEMPLATE_FIELDS and isinstance(value, str):
                found.update(d for d in [_digest_of(value)] if d is not None)
            else:
                found |= result_digests(value)
    elif isinstance(result, list):
        for item in result:
            found |= result_digests(item)
    return found


def redacted(result: object, digests: set[str]) -> object:
    """``result`` with every template of ``digests`` replaced by None (the rest untouched)."""
    if isinstance(result, dict):
        return {
            name: None
            if name in TEMPLATE_FIELDS and isinstance(value, str) and _digest_of(value) in digests
            else redacted(value, digests)
            for name, value in result.items()
        }
    if isinstance(result, list):
        return [redacted(item, digests) for item in result]
    return result


ERASED = "erased"  # what an erased template's digest or image reference reads in a job's inputs


def without_templates(doc: JobDocument, digests: set[str]) -> JobDocument | None:
    """The document with those templates erased, or None when it holds none of them.

    A finished job that held one (in its result, or its probe's digest in its inputs) also
    loses those digests and its image references (``s3://``): they would still link the job
    to the erased face. An unfinished one keeps its inputs: it fails as erased when it runs.
    """
    in_result = doc.result is not None and bool(result_digests(doc.result) & digests)
    in_inputs = doc.status.terminal and any(value in digests for value in doc.inputs.values())
    if not (in_result or in_inputs):
        return None
    update: dict[str, Any] = {}
    if in_result:
        update["result"] = redacted(doc.result, digests)
    if doc.status.terminal:
        update["inputs"] = {
            name: ERASED if value in digests or value.startswith("s3://") else value
            for name, value in doc.inputs.items()
        }
    return doc.model_copy(update=update)


class JobStore:
    """Job documents on Redis (TTL ``KYC_JOB_TTL_S``), terminal ones also in S3 when configured.

    With ``KYC_RESULT_STORE=s3`` Redis keeps the state of each job but, once it is final, only
    its envelope (no ``result``, with ``result_ref``); :meth:`get` fetches the full document from
    S3. With ``both`` Redis and S3 each hold the full document.

    Jobs are filed by :attr:`JobDocument.address` (the tenant-scoped id): every ``job_id``
    argument below is an address, so one tenant's id never reaches another tenant's document.

    Args:
        settings: Redis URL (``KYC_REDIS_URL``, default ``KYC_BROKER_URL``), TTL, result store.
        client: an existing Redis client (default: one built from the settings).

    Raises:
        JobError: no Redis URL configured.
    """

    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        url = settings.resolved_redis_url()
        if client is None and url is None:
            raise JobError("no job store: set KYC_REDIS_URL or KYC_BROKER_URL")
        self.redis = client if client is not None else redis_client(str(url), settings)
        self.ttl_s = settings.job_ttl_s
        self.mode = settings.result_store
        self.wait_replicas = settings.redis_wait_replicas
        self.wait_timeout_ms = settings.redis_wait_timeout_ms
        self.archive = ResultArchive(settings) if self.mode in ("s3", "both") else None
        self._create = self.redis.register_script(_CREATE)
        self._claim = self.redis.register_script(_CLAIM)
        self._write = self.redis.register_script(_TRANSITION)

    # -- producer side --------------------------------------------------------------------------

    def create(self, doc: JobDocument) -> tuple[JobDocument, bool]:
        """Store a new ``queued`` document unless the job id exists (``SET NX``).

        A new job is also recorded as unstarted until a worker claims it, so a message that never
        reaches a worker leaves a trace the sweeper acts on (see :meth:`unstarted`).

        Returns:
            ``(doc, True)`` if stored, ``(existing, False)`` if the id was taken.
        """
        return self.create_many([doc])[0]

    def create_many(self, docs: Sequence[JobDocument]) -> list[tuple[JobDocument, bool]]:
        """:meth:`create` for each document, in one pipelined round trip (and one more to read
        the documents of the ids already taken).

        Returns:
            ``(doc, created)`` per document, in order; the existing document where the id was
            taken (the same one for an id given twice in ``docs``).
        """
        with _redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for doc in docs:
                held_features = doc.held_features
                address, tenant = doc.address, Tenant(doc.tenant)
                job_keys = [keys.job_key(address), keys.jobs_unstarted_key(), keys.job_features_key(address)]
                job_keys += [keys.features_jobs_key(scoped(tenant, found)) for found in held_features]
                held = [part for pair in held_features.items() for part in pair]
                args: list[str | int | float] = [doc.to_json(), self.ttl_s, time.time(), address, *held]
                if self.wait_replicas:
                    # EVAL, not EVALSHA: a NOSCRIPT retry would run on another connection, which
                    # the WAIT below does not cover.
                    pipe.eval(_CREATE, len(job_keys), *job_keys, *args)
                else:
                    self._create(keys=job_keys, args=args, client=pipe)
            if self.wait_replicas:
                # On this connection, after its writes: they are on that many replicas once it returns.
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
                *replies, replicated = pipe.execute()
            else:
                replies, replicated = execute_scripted(pipe), 0
            created = [bool(stored) for stored in replies]
            if int(replicated) < self.wait_replicas:
                self._undo_unreplicated([doc for doc, new in zip(docs, created, strict=True) if new], int(replicated))
            taken = [doc.address for doc, new in zip(docs, created, strict=True) if not new]
            raws = self.redis.mget([keys.job_key(address) for address in taken]) if taken else []
        existing = dict(zip(taken, raws, strict=True))
        results = []
        for doc, new in zip(docs, created, strict=True):
            if new:
                results.append((doc, True))
                continue
            found = self._document(doc.address, existing[doc.address])
            # None: expired between the two round trips; extremely unlikely, try once more.
            results.append((found, False) if found is not None else self.create(doc))
        return results

    def _undo_unreplicated(self, created: list[JobDocument], replicated: int) -> None:
        """Refuse a submit that did not reach ``KYC_REDIS_WAIT_REPLICAS`` replicas in time: what it
        stored is removed again (a failover could lose it), so the caller's retry submits anew.

        Raises:
            StorageUnavailableError: always.
        """
        for doc in created:
            try:
                self.discard(doc.address)
            except StorageUnavailableError:
                break  # the primary is gone: so is what it held alone
        raise StorageUnavailableError(
            f"job store: the submit reached {replicated} of {self.wait_replicas} replica(s) "
            f"within {self.wait_timeout_ms} ms; not accepted"
        )

    def discard(self, job_id: str) -> None:
        """Remove a ``queued`` document whose task could not be sent, so the id can be reused."""
        key = keys.job_key(job_id)

        def remove(pipe: Pipeline) -> None:
            raw = pipe.get(key)
            if raw is not None and JobDocument.from_json(raw).status is JobStatus.QUEUED:
                pipe.multi()
                pipe.delete(key)

        with _redis_errors():
            self._atomic(remove, key)
            self.redis.zrem(keys.jobs_unstarted_key(), job_id)
            self.redis.delete(keys.job_features_key(job_id))

    def forget_unstarted(self, job_id: str) -> None:
        """Take the job off the sweeper's list (it started, finished or expired)."""
        with _redis_errors():
            self.redis.zrem(keys.jobs_unstarted_key(), job_id)

    def touch_unstarted(self, job_id: str) -> None:
        """Its task was just sent again: it now waits behind every message already queued."""
        with _redis_errors():
            self.redis.zadd(keys.jobs_unstarted_key(), {job_id: time.time()}, xx=True)

    def unstarted(self, older_than_s: float, limit: int = 1000) -> list[tuple[str, float]]:
        """``(job id, submit time)`` of jobs stored over ``older_than_s`` ago and never claimed."""
        with _redis_errors():
            found = self.redis.zrangebyscore(
                keys.jobs_unstarted_key(), "-inf", time.time() - older_than_s, 0, limit, withscores=True
            )
        pairs: list[tuple[bytes | str, float]] = list(found)  # type: ignore[arg-type]
        return [(i.decode() if isinstance(i, bytes) else str(i), float(score)) for i, score in pairs]

    def expired_running(self, older_than_s: float, limit: int = 1000) -> list[str]:
        """Jobs claimed and not finished whose run lock expired over ``older_than_s`` ago (or
        that the sweeper last looked at then: :meth:`look_again`), oldest first."""
        with _redis_errors():
            found = self.redis.zrangebyscore(keys.jobs_running_key(), "-inf", time.time() - older_than_s, 0, limit)
        return [_text(i) for i in found]  # type: ignore[arg-type]

    def run_state(self, job_id: str) -> tuple[JobDocument | None, str | None]:
        """The job's document and its run lock's holder (None when the lock expired)."""
        with _redis_errors():
            raw, holder = self.redis.mget(keys.job_key(job_id), keys.job_lock_key(job_id))
        return self._document(job_id, raw), None if holder is None else _text(holder)

    def look_again(self, job_id: str, at: float) -> None:
        """Keep a running job in the sweeper's sight, but not before ``at`` (epoch seconds)."""
        with _redis_errors():
            self.redis.zadd(keys.jobs_running_key(), {job_id: at}, xx=True)

    def forget_running(self, job_id: str) -> None:
        """Take the job out of the sweeper's running set (done, queued again, or expired)."""
        with _redis_errors():
            self.redis.zrem(keys.jobs_running_key(), job_id)

    def submitted_at(self, job_ids: list[str]) -> list[float | None]:
        """Submit times of jobs still unstarted (None for the others)."""
        if not job_ids:
            return []
        with _redis_errors():
            return list(self.redis.zmscore(keys.jobs_unstarted_key(), job_ids))

    def get(self, job_id: str) -> JobDocument | None:
        """The job's document, from Redis or (for final documents) the S3 archive."""
        with _redis_errors():
            raw = self.redis.get(keys.job_key(job_id))
        return self._document(job_id, raw)

    def finished_many(self, job_ids: Sequence[str], per_round_trip: int = 500) -> tuple[list[JobDocument], list[str]]:
        """The terminal documents among ``job_ids`` and the ids with no document at all, in
        pipelined MGETs; an unfinished document is not parsed (a poller reads each many times).

        Returns:
            The terminal documents (in the order of ``job_ids``) and the unknown ids.
        """
        with _redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for start in range(0, len(job_ids), per_round_trip):
                pipe.mget([keys.job_key(j) for j in job_ids[start : start + per_round_trip]])
            raws = [raw for chunk in pipe.execute() for raw in chunk]
        done, unknown = [], []
        for job_id, raw in zip(job_ids, raws, strict=True):
            if raw is not None and not _maybe_terminal(raw):
                continue
            doc = self._document(job_id, raw)
            if doc is None:
                unknown.append(job_id)
            elif doc.status.terminal:
                done.append(doc)
        return done, unknown

    def expire_soon(self, docs: Sequence[JobDocument], ttl_s: int) -> None:
        """Cut the TTL of terminal documents to ``ttl_s`` (never lengthen it), in one pipelined
        round trip: for a reader that keeps the documents elsewhere (a backlog's directory).

        With each document go the keys kept beside it for as long, and its entries in the erasure
        index: a backlog of a million jobs, each with its own templates, would otherwise leave a
        million index entries for the week the documents no longer live. An erasure in the
        seconds left misses such a document; it is gone within ``ttl_s``.
        """
        with _redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for doc in docs:
                address, tenant = doc.address, Tenant(doc.tenant)
                # Its attempt count and its completion event's once-only marker: a redelivery then
                # finds no job at all.
                for key in (keys.job_key(address), keys.job_attempts_key(address), keys.job_published_key(address)):
                    pipe.expire(key, ttl_s, lt=True)
                probes = {value for value in doc.inputs.values() if features.is_digest(value)}
                for digest in sorted(probes | result_digests(doc.result)):
                    pipe.srem(keys.features_jobs_key(scoped(tenant, digest)), address)
            pipe.execute()

    def _document(self, job_id: str, raw: bytes | str | None) -> JobDocument | None:
        if raw is None:
            return self.archive.read(job_id) if self.archive is not None else None
        doc = JobDocument.from_json(raw)
        if doc.status.terminal and doc.result_ref is not None and self.archive is not None:
            return self.archive.read(job_id) or doc
        return doc

    def terminal(self, job_ids: list[str]) -> list[bool]:
        """Whether each job has its terminal document (one ``MGET``)."""
        with _redis_errors():
            raws = self.redis.mget([keys.job_key(i) for i in job_ids]) if job_ids else []
        return [raw is not None and JobDocument.from_json(raw).status.terminal for raw in raws]

    def attempts(self, job_id: str) -> int:
        """The attempts charged to the job so far (see :meth:`claim`)."""
        with _redis_errors():
            return _attempt_record(self.redis.get(keys.job_attempts_key(job_id)))[0]

    def eviction_policy(self) -> str | None:
        """Redis's ``maxmemory-policy``, or None where ``CONFIG`` is not allowed (managed Redis)."""
        try:
            found = self.redis.config_get("maxmemory-policy")
        except redis.exceptions.ResponseError:
            return None
        except redis.exceptions.RedisError as exc:
            raise StorageUnavailableError(f"job store unavailable ({type(exc).__name__})") from None
        value = found.get("maxmemory-policy")
        return value.decode() if isinstance(value, bytes) else value

    # -- erasure --------------------------------------------------------------------------------

    def erase_templates(self, digests: set[str], tenant: Tenant = DEFAULT_TENANT) -> int:
        """Redact the templates of ``digests`` out of every stored result holding them, in Redis
        and in the S3 archive (a gallery ``delete``, a ``forget``).

        Job inputs never hold a template (only its digest; the features themselves wait beside
        an unfinished job and are dropped here), nor do results unless the caller asked; those
        that do are indexed by digest when they are stored.

        Only ``tenant``'s documents: the index is kept per tenant, so one tenant's erasure never
        touches another's results even when both hold the same face.

        Returns:
            How many job documents were redacted.
        """
        erased: set[str] = set()
        for found in sorted(digests):
            index = keys.features_jobs_key(scoped(tenant, found))
            with _redis_errors():
                job_ids = sorted(_text(j) for j in self.redis.smembers(index))
            for job_id in job_ids:
                if self._redact(job_id, digests):
                    erased.add(job_id)
            with _redis_errors():
                self.redis.delete(index)
        return len(erased)

    def _redact(self, job_id: str, digests: set[str]) -> bool:
        key = keys.job_key(job_id)
        with _redis_errors():
            # A job not yet final still holds its probe: it then fails as erased, never runs on it.
            held = bool(self.redis.hdel(keys.job_features_key(job_id), *sorted(digests)))

        def rewrite(pipe: Pipeline) -> bool:
            raw = pipe.get(key)
            clean = None if raw is None else without_templates(JobDocument.from_json(raw), digests)
            if clean is None:
                return False
            pipe.multi()
            pipe.set(key, clean.to_json(), keepttl=True)
            return True

        with _redis_errors():
            changed = self._atomic(rewrite, key) or held
        if self.archive is not None:
            archived = self.archive.read(job_id)
            clean = None if archived is None else without_templates(archived, digests)
            if clean is not None:
                self.archive.replace(clean)
                changed = True
        return changed

    # -- worker side ----------------------------------------------------------------------------

    def claim(self, job_id: str, token: str, lock_ttl_s: float, max_attempts: int, group: int = 1) -> Claim:
        """Start an execution: take the run lock, count the attempt, mark the job ``running``.

        Args:
            job_id: the job to start.
            token: unique per execution (:func:`shared.jobs.owner.execution_token`); only its
                holder may release the lock.
            lock_ttl_s: how long the lock outlives a crashed holder (past the hard time limit).
            max_attempts: attempts past this one are refused and the job is dead-lettered.
            group: how many jobs this execution runs together (a chunk's, a batch's). The attempt
                of a group execution that loses its process is not charged (docs/OPERATIONS.md,
                "Poison jobs"): claimed in a group again, such a job is answered ``LOST`` (put back
                ``queued``, for the caller to re-send split); claimed alone, it is charged only
                this attempt.
        """
        with _redis_errors():
            while True:
                pipe = self.redis.pipeline(transaction=False)
                _read_for_claim(pipe, job_id)
                step = self._claim_step(job_id, pipe.execute(), token, lock_ttl_s, max_attempts, group)
                claim = step if isinstance(step, Claim) else step.settle(self._claim(keys=step.keys, args=step.args))
                if claim is not None:
                    return self._dead_lettered(job_id, claim, max_attempts)

    def claim_many(self, job_ids: list[str], token: str, lock_ttl_s: float, max_attempts: int) -> list[Claim]:
        """:meth:`claim` for a batch, in two pipelined round trips: every job's reads, then every
        claimable job's compare-and-set (:data:`_CLAIM`). A job that changed between the two
        (another execution of it) is claimed again on its own, so the answers are those of
        :meth:`claim` in every case. The jobs are claimed as one group (their number of
        distinct ids): a job whose last group execution was lost is answered ``LOST``.

        Returns:
            One :class:`Claim` per id, in order.
        """
        group = len(set(job_ids))
        if group != len(job_ids) or len(job_ids) < 2:
            return [self.claim(i, token, lock_ttl_s, max_attempts, group) for i in job_ids]
        with _redis_errors():
            reads = self.redis.pipeline(transaction=False)
            for job_id in job_ids:
                _read_for_claim(reads, job_id)
            replies = reads.execute()
            steps = [
                self._claim_step(job_id, replies[3 * n : 3 * n + 3], token, lock_ttl_s, max_attempts, group)
                for n, job_id in enumerate(job_ids)
            ]
            writes = [step for step in steps if isinstance(step, _ClaimWrite)]
            written: list[Any] = []
            if writes:
                pipe = self.redis.pipeline(transaction=False)
                for step in writes:
                    self._claim(keys=step.keys, args=step.args, client=pipe)
                written = execute_scripted(pipe)
        settled = iter(written)
        claims = [step if isinstance(step, Claim) else step.settle(next(settled)) for step in steps]
        return [
            self._dead_lettered(job_id, c, max_attempts)
            if c is not None
            else self.claim(job_id, token, lock_ttl_s, max_attempts, group)
            for job_id, c in zip(job_ids, claims, strict=True)
        ]

    def _claim_step(
        self, job_id: str, read: list[Any], token: str, lock_ttl_s: float, max_attempts: int, group: int = 1
    ) -> Claim | _ClaimWrite:
        """Decide a claim from what :func:`_read_for_claim` read: an answer already (missing,
        done, busy), or the compare-and-set that starts the job (or, ``LOST``, puts it back) if
        nothing changed meanwhile."""
        (raw, holder, record), held_ms, held_features = read
        if raw is None:
            return Claim(ClaimOutcome.MISSING)
        doc = JobDocument.from_json(raw)
        if doc.status.terminal:
            return Claim(ClaimOutcome.DONE, doc)
        if holder is not None and not holder_is_dead(holder):
            return Claim(ClaimOutcome.BUSY, doc, max(int(held_ms), 1000) / 1000)
        charged, last_group = _attempt_record(record)
        # Running, with no live holder: the last execution lost its process mid-run.
        lost = doc.status is JobStatus.RUNNING
        if lost:
            if last_group > 1:
                charged -= 1  # a group's loss is not charged to each of its jobs: bisect instead
            doc = doc.model_copy(update={"error": worker_lost(doc, last_group)})
        if lost and last_group > 1 and group > 1:
            next_doc: JobDocument | None = doc.model_copy(update={"status": JobStatus.QUEUED, "attempts": charged})
            value, lock_token = _attempt_value(charged, 1), ""
            claim = Claim(ClaimOutcome.LOST, next_doc)
        else:
            attempts = charged + 1
            next_doc = (
                None
                if attempts > max_attempts
                else doc.running(attempts).with_features({_text(k): _text(v) for k, v in held_features.items()})
            )
            value, lock_token = _attempt_value(attempts, group), token
            claim = (
                Claim(ClaimOutcome.CLAIMED, next_doc)
                if next_doc is not None
                else Claim(ClaimOutcome.EXHAUSTED, doc.model_copy(update={"attempts": attempts}))
            )
        raw_bytes = raw if isinstance(raw, bytes) else raw.encode()
        return _ClaimWrite(
            keys=[
                keys.job_key(job_id),
                keys.job_lock_key(job_id),
                keys.job_attempts_key(job_id),
                keys.jobs_unstarted_key(),
                keys.jobs_running_key(),
            ],
            args=[
                hashlib.sha1(raw_bytes).hexdigest(),  # what Redis compares: a change detector, not a signature
                holder or "",
                record or "",
                job_id,
                value,
                self.ttl_s,
                lock_token,
                int(lock_ttl_s * 1000),
                next_doc.to_json() if next_doc is not None else "",
                time.time() + lock_ttl_s,
            ],
            claim=claim,
        )

    def _dead_lettered(self, job_id: str, claim: Claim, max_attempts: int) -> Claim:
        """``claim``, with the dead-letter document written when the job ran out of attempts."""
        if claim.outcome is ClaimOutcome.EXHAUSTED and claim.doc is not None:
            log.error("job %s dead-lettered after %d attempts", job_id, max_attempts)
            return Claim(ClaimOutcome.EXHAUSTED, self.finish(dead_letter(claim.doc, max_attempts), token=None))
        return claim

    def finish_many(self, docs: list[JobDocument], token: str) -> list[JobDocument]:
        """:meth:`finish` for a batch of terminal documents: each job's own transition script
        (the one :meth:`finish` runs: write unless terminal, drop the held probe, index the
        templates for erasure, release the lock if ``token`` holds it), all in one pipelined
        round trip. With a result archive it is :meth:`finish` per document (the S3 copy is
        written first, once).

        Returns:
            Each job's final document, in order: its own, or the one written first by another
            execution.
        """
        if self.archive is not None or len(docs) < 2:
            return [self.finish(d, token) for d in docs]
        with _redis_errors():
            pipe = self.redis.pipeline(transaction=False)
            for doc in docs:
                self._write(keys=self._transition_keys(doc, final=True), args=self._transition_args(doc, doc, True, token),
                            client=pipe)  # fmt: skip
            replies = execute_scripted(pipe)
        return [
            doc if current is None else JobDocument.from_json(current)
            for doc, current in zip(docs, replies, strict=True)
        ]

    def requeue(self, doc: JobDocument, token: str, error: JobFailure) -> JobDocument:
        """Give a job back after a transient error: ``queued`` again, lock released."""
        return self._transition(doc.requeued(error), token, final=False)

    def finish(self, doc: JobDocument, token: str | None, archive: bool = True) -> JobDocument:
        """Write a terminal document, unless the job already has one.

        Args:
            doc: the terminal document.
            token: the execution's run-lock token (its lock is released).
            archive: False to keep the document in Redis only, whole (a failure record for a
                result the archive refused).

        Returns:
            The job's final document: ``doc``, or the one written first by another execution.
        """
        archived = archive and self.archive is not None
        if archived and self.archive is not None:
            doc = self.archive.write_once(doc)
        return self._transition(doc, token, final=True, archived=archived)

    def _atomic(self, fn: Callable[[Pipeline], T], *watch: str) -> T:
        """Run ``fn`` under WATCH on ``watch``; it reads, calls ``multi()`` and queues writes.
        Re-run from the start whenever a watched key changed before EXEC."""
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*watch)
                    value = fn(pipe)
                    pipe.execute()
                    return value
                except redis.exceptions.WatchError:
                    continue

    def _transition_keys(self, doc: JobDocument, final: bool) -> list[str]:
        """The keys of :data:`_TRANSITION` for ``doc``: its document, lock and held probe, and the
        erasure index of each template its result holds (a terminal write indexes them)."""
        index_keys = (
            [keys.features_jobs_key(scoped(Tenant(doc.tenant), found)) for found in result_digests(doc.result)]
            if final
            else []
        )
        address = doc.address
        return [
            keys.job_key(address),
            keys.job_lock_key(address),
            keys.job_features_key(address),
            keys.jobs_running_key(),
            *index_keys,
        ]

    def _transition_args(
        self, doc: JobDocument, stored: JobDocument, final: bool, token: str | None
    ) -> list[str | int]:
        return [stored.to_json(), "1" if final else "0", self.ttl_s, doc.address, token or ""]

    def _transition(self, doc: JobDocument, token: str | None, final: bool, archived: bool = False) -> JobDocument:
        stored = doc
        if final and archived and self.mode == "s3" and self.archive is not None:
            stored = doc.model_copy(update={"result": None, "result_ref": self.archive.ref_for(doc.address)})

        with _redis_errors():
            current = self._write(
                keys=self._transition_keys(doc, final), args=self._transition_args(doc, stored, final, token)
            )
        result = doc if current is None else JobDocument.from_json(current)
        if result is not doc and result.result_ref is not None and self.archive is not None:
            return self.archive.read(doc.address) or result
        return result
