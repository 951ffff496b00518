"""Every Redis key the project writes, built by functions so no module spells a key by hand.

One prefix per concept; all under ``kyc:`` so an operator can find (and size) our data with
``SCAN MATCH kyc:*`` beside the broker's own keys.
"""

from __future__ import annotations

PREFIX = "kyc:"
JOB_PREFIX = PREFIX + "job:"
JOB_ATTEMPTS_PREFIX = PREFIX + "job-attempts:"
JOB_LOCK_PREFIX = PREFIX + "job-lock:"


def job_key(job_id: str) -> str:
    """The job document (JSON string)."""
    return JOB_PREFIX + job_id


def job_attempts_key(job_id: str) -> str:
    """The attempts charged to the job: how many times a worker started it, less the starts of a
    group (a chunk, a batch) that lost its process, which are not charged (docs/OPERATIONS.md,
    "Poison jobs"). ``"2"``, or ``"2/8"`` while the last start runs with 8 jobs. The broker keeps no
    redelivery count."""
    return JOB_ATTEMPTS_PREFIX + job_id


def job_lock_key(job_id: str) -> str:
    """Held by the one execution running the job; its value is that execution's token."""
    return JOB_LOCK_PREFIX + job_id


JOBS_UNSTARTED = PREFIX + "jobs-unstarted"


def jobs_unstarted_key() -> str:
    """Sorted set job id -> submit time of jobs stored but not yet claimed by a worker.

    The sweeper re-sends the ones whose message is gone: a producer that crashed between storing
    the job and sending its task, or a message lost with Redis between a worker's pop and its
    unacked record. Claims remove their job, so the set holds the backlog's ids and nothing else.
    """
    return JOBS_UNSTARTED


JOBS_RUNNING = PREFIX + "jobs-running"


def jobs_running_key() -> str:
    """Sorted set job id -> when its run lock expires (epoch seconds), of jobs claimed and not
    finished.

    The sweeper looks at the ones well past it: a job left ``running`` whose message is gone
    (acknowledged by an execution that could not record its end, lost with Redis) is sent again
    once, or failed past the attempt limit. Each claim sets its job's time; a terminal write
    removes the job.
    """
    return JOBS_RUNNING


GALLERY_PREFIX = PREFIX + "gallery:"


def _gallery(name: str, part: str) -> str:
    # The {name} hash tag keeps one gallery's keys in one Redis Cluster slot, so its Lua
    # scripts (check model, write, log) stay atomic there too.
    return f"{GALLERY_PREFIX}{{{name}}}:{part}"


def gallery_faces_key(name: str) -> str:
    """Hash face id -> features string (model id and vector): the durable templates."""
    return _gallery(name, "faces")


def gallery_log_key(name: str) -> str:
    """Stream of ``set``/``del`` ops by face id, no vectors: what each worker's index replays."""
    return _gallery(name, "log")


def gallery_meta_key(name: str) -> str:
    """Hash with the gallery's model id, epoch and the last trimmed log id."""
    return _gallery(name, "meta")


def gallery_run_key(run_id: str) -> str:
    """Hash of a screening run fanned out over workers: its plan and how many chunks are pending."""
    return f"{GALLERY_PREFIX}run:{run_id}"


def gallery_run_parts_key(run_id: str) -> str:
    """Hash chunk number -> that chunk's hits (JSON), until the last chunk writes the report."""
    return f"{GALLERY_PREFIX}run:{run_id}:parts"


def gallery_fanout_key(fanout_id: str) -> str:
    """List the shards of a sharded search push their top-k into, for the job collecting them."""
    return f"{GALLERY_PREFIX}fanout:{fanout_id}"


EVENTS_PREFIX = PREFIX + "events:"


def event_seen_key(idempotency_key: str) -> str:
    """The job id made for one object version's bucket event: a redelivery finds it and stops."""
    return f"{EVENTS_PREFIX}seen:{idempotency_key}"


def event_counts_key() -> str:
    """Hash outcome -> count of the event consumers (created, duplicate, unmatched, malformed...)."""
    return EVENTS_PREFIX + "counts"


def processing_list_key(source: str) -> str:
    """Where the list consumer moves (LMOVE) an entry of ``source`` while it works on it."""
    return f"{EVENTS_PREFIX}processing:{source}"


def job_meta_key(job_id: str) -> str:
    """The job's tenant and callback URL (JSON), which the job document does not carry."""
    return f"{EVENTS_PREFIX}meta:{job_id}"


def job_published_key(job_id: str) -> str:
    """Set once the job's completion event is on the stream, so a re-run finish publishes none."""
    return f"{EVENTS_PREFIX}published:{job_id}"


def job_webhook_key(job_id: str) -> str:
    """Set once the job's webhook delivery is scheduled."""
    return f"{EVENTS_PREFIX}webhook:{job_id}"


def webhook_replay_key(dead_entry_id: str) -> str:
    """Set once a dead letter (its entry id on the dead-letter stream) has been replayed."""
    return f"{EVENTS_PREFIX}replayed:{dead_entry_id}"


RATE_PREFIX = PREFIX + "rate:"


def quota_bucket_key(bucket: str, holder: str) -> str:
    """Token bucket ``bucket`` (a job kind, ``submit``, ``search:candidates``) of one holder:
    ``key:<API key id>`` or ``tenant:<tenant>`` (a hash of tokens and time; expires once full)."""
    return f"{RATE_PREFIX}bucket:{bucket}:{holder}"


def tenant_live_jobs_key(tenant: str) -> str:
    """Sorted set of a tenant's job addresses submitted through the API, scored by the time their
    documents expire: how many are live, for the per-tenant cap (job ids only)."""
    return f"{RATE_PREFIX}live-jobs:{tenant}"


# --- templates held for a job, and where results hold them (erasure) -------------------------


def job_features_key(job_id: str) -> str:
    """Hash digest -> sealed features string of a job's features inputs, held only while the job
    is not final: the job document itself names them by digest (``sha256:...``)."""
    return f"{PREFIX}job-features:{job_id}"


def features_jobs_key(digest: str) -> str:
    """Set of job ids whose stored result holds the template of ``digest`` (a ``faces`` result,
    or one asked for with ``include_features``), kept as long as the jobs: erasure redacts them."""
    return f"{PREFIX}features-jobs:{digest}"


REVIEW_PREFIX = PREFIX + "review:"


def review_queue_key(tenant: str) -> str:
    """Sorted set job id -> finish time of the tenant's jobs waiting for a reviewer (one set per
    tenant, so a reviewer's page lists only its own tenant's cases)."""
    return f"{REVIEW_PREFIX}queue:{tenant}"


def review_session_key(token_hash: str) -> str:
    """A reviewer's browser session (its key id and CSRF token), by the hash of its cookie."""
    return f"{REVIEW_PREFIX}session:{token_hash}"
