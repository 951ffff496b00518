"""The one settings object. Every knob is an environment variable with the ``KYC_`` prefix.

Units are in the names (``_S`` seconds, ``_PX`` pixels, ``_BYTES`` bytes). Build it once with
:func:`get_settings` and pass it down; nothing else in the project reads ``os.environ``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.errors import SettingsError
from shared.schemas import QualityGate, QualityLevel
from shared.tenants import DEFAULT_TENANT, TENANT_PATTERN, Scope, api_key_hash

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_model_dir() -> Path:
    """The checkout's sibling ``../shared/models`` when present (dev and CI), else the user cache."""
    sibling = _PROJECT_ROOT.parent / "shared" / "models"
    if sibling.is_dir():
        return sibling
    return Path.home() / ".cache" / "kycdeepface" / "models"


def _default_sample_faces_dir() -> Path | None:
    """The checkout's sibling ``../shared/faces`` (labelled photos for ``kycface sample-manifest``)."""
    sibling = _PROJECT_ROOT.parent / "shared" / "faces"
    return sibling if sibling.is_dir() else None


_URL_FIELDS = {"broker_url", "redis_url", "s3_endpoint_url"}


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and reprs)."""
    if ";" in url:  # kombu's list of Sentinels, sentinel://...;sentinel://...
        return ";".join(redact_url(part) for part in url.split(";"))
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


ENV_PREFIX = "KYC_"


def unknown_variables(environ: Mapping[str, str], fields: set[str]) -> list[str]:
    """Messages for the ``KYC_`` variables of ``environ`` that name no field, with the closest real one."""
    known = sorted(ENV_PREFIX + name.upper() for name in fields)
    messages = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in known:
            continue
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        messages.append(f"unknown setting {name}{hint}")
    return messages


class EventRule(BaseModel):
    """One row of the bucket-event rule table: an object key pattern and the job it starts.

    ``pattern`` names path segments with ``{name}`` and may end with ``...`` for any rest of the
    key, e.g. ``selfies/{case}/...``. Input values are templates over those names plus ``{ref}``
    (the new object's ``s3://bucket/key``); ``lookup`` inputs name a prefix in the same bucket
    whose newest object becomes the input (e.g. the document stored under ``documents/{case}/``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str
    pattern: str
    kind: str
    inputs: dict[str, str] = Field(default_factory=dict)
    lookup: dict[str, str] = Field(default_factory=dict)
    tenant: str | None = None


API_KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ApiKey(BaseModel):
    """One entry of ``KYC_API_KEYS``: the key's hash (never the key), its tenant and scopes.

    ``kycface api-key new --tenant T --scopes ...`` mints a key and prints its entry.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tenant: str = Field(default=DEFAULT_TENANT, pattern=TENANT_PATTERN)
    scopes: frozenset[Scope] = Field(min_length=1)

    @classmethod
    def of(cls, key: str, scopes: Iterable[Scope | str], tenant: str = DEFAULT_TENANT) -> ApiKey:
        """The entry admitting ``key`` (for services that build their Settings in code)."""
        return cls(sha256=api_key_hash(key), tenant=tenant, scopes=frozenset(Scope(s) for s in scopes))


class Settings(BaseSettings):
    # extra="forbid" refuses unknown keyword arguments; unknown KYC_ variables are refused by
    # _no_unknown_variables below (pydantic-settings only reads the variables it knows).
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", protected_namespaces=())

    # --- models -------------------------------------------------------------------------------
    model_dir: Path = Field(default_factory=_default_model_dir)
    detector_model: str = "yunet-2026may"
    # fr_feature (512-d) is the accurate default; "mobilefacenet" (128-d) is ~2.5x faster per face.
    # Features carry their model: a gallery or a stored features string works only with its model.
    embedding_model: str = "fr_feature"
    liveness_model: str = "fr_minifasnet"
    # Extra embedding models as a JSON file of registry entries (see shared/models/registry.py).
    model_registry_file: Path | None = None
    # 0 means "cores / worker concurrency", computed at session creation.
    intra_op_threads: int = Field(default=0, ge=0)
    # Sum the embeddings of the face and its mirror image: +0.15 pt LFW accuracy at 2x embed cost.
    embed_flip: bool = False

    # --- image limits (checked from the header, before any full decode) ----------------------
    max_image_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=50_000_000, gt=0)
    max_image_side_px: int = Field(default=16_384, gt=0)
    # (width, height) of the working copy detection runs on; larger photos are downscaled for
    # detection and their faces aligned from the full-resolution original.
    max_image_size_px: tuple[int, int] = (500, 500)
    # (width, height) under which an image is INVALID_IMAGE / TOO_SMALL.
    min_image_size_px: tuple[int, int] = (100, 100)
    # Mean luma (0-255) under which an image with no usable face is reported TOO_DARK.
    image_dark_luma: float = 20.0

    # --- detection ----------------------------------------------------------------------------
    # Chosen on ../shared/faces: every real face scores >= 0.80, the worst false face 0.74.
    det_score_threshold: float = Field(default=0.8, gt=0, lt=1)
    det_nms_iou: float = 0.3
    det_max_faces: int = Field(default=64, gt=0)

    # --- face quality (partial faces) ---------------------------------------------------------
    # A box nearer the border than this fraction of its own size (or past it) counts as CROPPED.
    crop_tolerance: float = 0.02
    # Gates by level (see shared/quality.py), derived from what hurts matching on lfw-calib
    # (`bench/calibrate.py` prints TAR of genuine pairs by the worse face's pose and sharpness):
    # * low (documents, gallery probes, get_faces' default): refuse only what the model cannot
    #   match. With fr_feature every genuine pair still matched at FAR 0.1 % up to the most turned
    #   LFW face (|yaw| 0.94) and the softest (sharpness 15), so the gate sits just past both:
    #   |yaw| 1.0 (a near profile, where the five landmarks stop being reliable), sharpness 8.
    #   Size and darkness are not exercised by LFW (all faces >= 66 px, luma >= 61): 24 px is
    #   where the 112 px crop would be upsampled ~5x, luma 25 a face with almost no contrast left.
    # * high (the verify selfie; a retake is cheap and the reason says what to fix): faces under
    #   sharpness 60 matched 91 % against 98.7 % above, so 40 is refused as BLURRY; a head turned
    #   past |yaw| 0.4 (~35 degrees) is refused as NOT_FRONT_FACING although the model often still
    #   matches it: MobileFaceNet loses TAR there, and a user can face the camera in a second.
    #   On LFW press photos this refuses ~2 % of images, the price of asking for a retake.
    # * medium: the one gate of the first release, for callers that want it.
    quality_low: QualityGate = QualityGate(
        min_face_px=24, max_yaw=1.0, min_pitch=0.05, max_pitch=0.95, min_sharpness=8.0, min_luma=25.0
    )
    quality_medium: QualityGate = QualityGate(
        min_face_px=40, max_yaw=0.45, min_pitch=0.15, max_pitch=0.85, min_sharpness=30.0, min_luma=40.0
    )
    quality_high: QualityGate = QualityGate(
        min_face_px=64, max_yaw=0.4, min_pitch=0.25, max_pitch=0.75, min_sharpness=40.0, min_luma=50.0
    )
    # Levels by role: get_faces' default (also the gallery probe), the verify selfie and document.
    quality_default: QualityLevel = QualityLevel.LOW
    quality_selfie: QualityLevel = QualityLevel.HIGH
    quality_document: QualityLevel = QualityLevel.LOW

    # --- document orientation (ID cards photographed sideways, upside down or tilted) ---------
    # A verify document whose upright pass gives no settled portrait is searched at 90, 180 and
    # 270 degrees (then 45-degree steps), and a selfie where no face is found is searched so its
    # answer can say it is TURNED (see shared/orientation.py). False: the upright pass only.
    orientation_search: bool = True
    # Detection score from which an upright-looking portrait is taken as upright without trying
    # the other turns. YuNet finds many upside-down faces with upright-looking landmarks; on LFW
    # photos (not cards) 95 % of upright faces score above 0.914, 95 % of upside-down below 0.880.
    orientation_min_score: float = Field(default=0.9, gt=0, lt=1)

    # --- liveness -----------------------------------------------------------------------------
    # off: never scored; report: the selfie face carries the score, the decision ignores it;
    # enforce: a selfie under the threshold is answered SPOOF_SUSPECTED.
    liveness: Literal["off", "report", "enforce"] = "report"
    # P(real) at which a face counts as live: 0.5 is the classifier's own boundary (P(real) >
    # P(spoof)). Not fitted here (no selfie or attack set); MANIFEST.md's figures at 0.5: 91 % of
    # genuine press photos pass, 4 % of synthetic prints and 33 % of synthetic screen replays.
    liveness_threshold: float = Field(default=0.5, gt=0, lt=1)

    # --- matching -----------------------------------------------------------------------------
    verify_confidence: float = Field(default=0.76, ge=0, le=1)

    # --- storage ------------------------------------------------------------------------------
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_bucket: str = "kyc-images"
    # Buckets an image reference may name; empty means only ``s3_bucket``.
    s3_allowed_buckets: list[str] = Field(default_factory=list)
    s3_results_bucket: str | None = None
    s3_results_prefix: str = "results/"
    s3_connect_timeout_s: float = 3.0
    s3_read_timeout_s: float = 10.0
    s3_max_attempts: int = 3
    local_storage_root: Path | None = None
    # Tenants' images are the objects under "<tenant>/" in the allowed buckets: a key of tenant
    # acme may name s3://kyc-images/acme/... only (the default tenant is not restricted).
    s3_tenant_prefixes: bool = False
    # Tenant prefix confinement (on by default): once a tenant is named in these settings (an API
    # key's, an event rule's or a webhook map's), "<that tenant>/" in the allowed buckets is its
    # own, and no other tenant, the default one included, may name an object under it.
    s3_tenant_prefix_guard: bool = True

    # --- pipeline -----------------------------------------------------------------------------
    broker_url: str | None = None
    redis_url: str | None = None  # job documents and gallery; defaults to broker_url
    result_store: Literal["redis", "s3", "both"] = "redis"
    job_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    task_soft_time_limit_s: int = 60
    task_time_limit_s: int = 90
    max_attempts: int = Field(default=3, gt=0)
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 30.0
    worker_concurrency: int = Field(default=0, ge=0)  # 0 = number of cores
    # `kycface worker`: prefork (a parent and its pool, both time limits) or solo (one process
    # that consumes and runs; faster per job, soft limit only: docs/OPERATIONS.md).
    worker_pool: Literal["prefork", "solo"] = "prefork"
    # Load the gallery's numba kernels at process start (~110 MiB RSS each); off for workers that
    # only serve faces/verify/match, which then never import numba.
    worker_warm_gallery: bool = True
    # How long a job's run lock outlives the hard time limit, and how long past the longest wait
    # a reserved message stays invisible: together they bound recovery after a lost worker host.
    lock_margin_s: int = Field(default=30, ge=1)
    redelivery_margin_s: int = Field(default=60, ge=1)
    # Seconds between sweeps for abandoned messages (kombu's unacked restore) on each worker.
    unacked_restore_interval_s: int = Field(default=10, ge=1)
    # The sweeper (``kyc.maintenance.requeue_stale`` on celery beat) re-sends jobs stored this long
    # ago, never claimed, whose message is gone (a producer crash before the send, a Redis crash).
    sweep_interval_s: float = Field(default=60.0, gt=0)
    sweep_stale_s: int = Field(default=300, gt=0)
    # Labelled photos (a labels.csv of file,identity,faces_expected) for `kycface sample-manifest`.
    sample_faces_dir: Path | None = Field(default_factory=_default_sample_faces_dir)

    # --- Redis failover (Sentinel; docs/OPERATIONS.md, "Redis failover") ------------------------
    # Sentinels ("host:port", a JSON list or comma-separated) watching the primary named
    # redis_master_name: the broker, the job store, the gallery and the events then follow its
    # failovers. kombu's own form works too: KYC_BROKER_URL=sentinel://h1:26379;sentinel://h2:26379.
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_master_name: str | None = None
    # Replicas a submit waits for (Redis WAIT) before it is acknowledged: 0 = none (asynchronous
    # replication; a failover can lose the last milliseconds of submits), 1 = the jobs are on a
    # replica too. A submit not replicated within redis_wait_timeout_ms is refused (503), undone.
    redis_wait_replicas: int = Field(default=0, ge=0)
    redis_wait_timeout_ms: int = Field(default=1000, ge=1)

    # --- api ----------------------------------------------------------------------------------
    api_max_body_bytes: int = 64 * 1024

    # --- tenants and API keys (README "Tenants and API keys") ---------------------------------
    # JSON: key id -> {"sha256": hex of the key, "tenant": ..., "scopes": [...]}. Hashes only:
    # a leaked config or environment dump gives no usable key. None configured = all refused.
    api_keys: dict[str, ApiKey] = Field(default_factory=dict)
    # Search jobs (kinds needing gallery:search) per key: a token bucket of this many tokens,
    # refilled at this many per window; over it: 429 with Retry-After.
    api_search_limit: int = Field(default=60, ge=1)
    api_search_window_s: int = Field(default=60, ge=1)

    # --- quotas per tenant and per key (docs/OPERATIONS.md, "Quotas") -------------------------
    # Token buckets in jobs per minute, each holding one minute's worth (the burst), per API key
    # and per tenant: on the job kinds named, on near-miss searches ("search:candidates") and on
    # every submission ("submit"). A request over any of its buckets: 429 + Retry-After, and it
    # takes no token from the others. A kind not named counts only towards "submit".
    api_key_quotas_per_min: dict[str, int] = Field(
        default_factory=lambda: {
            "submit": 600, "faces": 300, "verify": 300, "match": 300, "enroll": 120, "delete": 120,
            "forget": 60, "search:candidates": 10,
        }
    )  # fmt: skip
    api_tenant_quotas_per_min: dict[str, int] = Field(
        default_factory=lambda: {
            "submit": 1800, "faces": 900, "verify": 900, "match": 900, "enroll": 300, "search": 300,
            "delete": 300, "forget": 120, "search:candidates": 30,
        }
    )  # fmt: skip
    # Job documents a tenant may have live (submitted through the API within KYC_JOB_TTL_S), so
    # that one tenant cannot fill a noeviction Redis for the others: ~1.3-4 kB each.
    api_tenant_max_live_jobs: int = Field(default=100_000, ge=1)
    # Probe patterns (api_stub/probe_patterns.py): per key, the last api_probe_ring features probes
    # of searches as 64-bit sketches; one within api_probe_near_bits of them is counted and logged.
    api_probe_ring: int = Field(default=32, ge=1, le=4096)
    api_probe_near_bits: int = Field(default=8, ge=0, le=32)

    # --- gallery ------------------------------------------------------------------------------
    gallery_store: Literal["auto", "redis", "file"] = "auto"
    gallery_file_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "kycdeepface" / "gallery")
    gallery_shards: int = Field(default=1, ge=1)
    # Target false-positive identification rate of find_face: a stranger's chance of any hit.
    gallery_fpir: float = Field(default=0.01, gt=0, lt=1)
    # Rows re-scored exactly (float32) after the 8-bit first pass, per query.
    gallery_shortlist: int = Field(default=128, ge=1)
    # Ops kept in each gallery's change log; a worker further behind reloads the gallery.
    gallery_log_max_len: int = Field(default=100_000, ge=100)
    # Scheduled screening on celery beat: "gallery:against" pairs to rescreen (e.g.
    # "customers:watchlist"), galleries to dedupe, how often, and faces per chunk task.
    gallery_rescreen: list[str] = Field(default_factory=list)
    gallery_dedupe: list[str] = Field(default_factory=list)
    gallery_screen_interval_s: float = Field(default=24 * 3600, gt=0)
    gallery_chunk_size: int = Field(default=10_000, ge=1)
    # Where screening reports go (s3://bucket/prefix/ or a directory). Default: "gallery-reports/"
    # under the results bucket when one is set, else beside the gallery files.
    gallery_report_prefix: str | None = None
    # Galleries a process keeps open (each with its in-memory index), least recently used evicted
    # first: job documents name galleries, so an unbounded cache grows with whatever they name.
    gallery_cache_size: int = Field(default=32, ge=1)
    # Sharded search on Celery: how long a search waits for the other shards' workers before it
    # searches their shards itself.
    gallery_fanout_timeout_s: float = Field(default=10.0, gt=0)
    # Gallery re-rank store in float16 (issue 27, docs/GALLERY.md "Memory"): half the memory per
    # 512-d template, cosines off by up to ~5e-5 (near ties may swap); off keeps them exact.
    gallery_float16: bool = False

    # --- sealed features and template erasure (docs/OPERATIONS.md, "Templates") ----------------
    # "<key id>:<secret>" sealing every features string this service issues (HMAC-SHA256), and
    # older keys still accepted while features sealed with them are in use (key rotation).
    # Unset: a random per-process key (library, CLI, embedded demo); a worker or the API then
    # refuses to start unless features_ephemeral_key allows it (development only).
    features_key: SecretStr | None = None
    features_keys_accepted: list[SecretStr] = Field(default_factory=list)
    features_ephemeral_key: bool = False

    # --- tenant-bound features (docs/OPERATIONS.md, "Tenant-bound features") --------------------
    # A tenant's features are sealed for it (keys derived per tenant); strings sealed before that
    # (format 2, the default tenant's) are refused by every other tenant unless this is on, for
    # the migration only: such strings are linkable across tenants.
    features_untenanted_accepted: bool = False

    # --- events (docs/EVENTS.md) ----------------------------------------------------------------
    # Bucket notifications -> jobs: which object keys start which job (see EventRule).
    event_rules: list[EventRule] = Field(default_factory=list)
    # Where MinIO's Redis target or a relay writes S3 event records, and as which Redis type:
    # "list" (MinIO's access format, or a relay's LPUSH), "hash" (namespace format), "stream".
    events_bucket_key: str = "kyc:bucket-events"
    events_bucket_source: Literal["list", "hash", "stream"] = "list"
    # Plain JSON job requests from any producer: XADD to the stream or LPUSH to the list.
    events_intake_stream: str = "kyc:intake"
    events_intake_list: str = "kyc:intake-list"
    events_group: str = "kyc-intake"  # consumer group of the intake and bucket streams
    events_rejects_stream: str = "kyc:intake-rejects"
    events_completed_stream: str = "kyc:events"  # one entry per terminal job
    events_stream_max_len: int = Field(default=100_000, ge=100)  # approximate (XADD MAXLEN ~)
    events_batch: int = Field(default=100, ge=1)
    events_block_ms: int = Field(default=1000, ge=1)
    # Webhooks: callback hosts per tenant ("*.example.com" matches subdomains), one signing secret
    # ("whsec_" + base64) per tenant; requests without a tenant are tenant "default".
    webhook_allowed_hosts: dict[str, list[str]] = Field(default_factory=dict)
    webhook_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    # Hosts that may resolve to private, loopback or link-local addresses and may use plain http
    # (a receiver inside the cluster); everything else must be https to a public address.
    webhook_allow_private: list[str] = Field(default_factory=list)
    webhook_timeout_s: float = Field(default=5.0, gt=0)
    # Webhook delivery isolation: one attempt (connect, TLS, request, answer) ends at this
    # deadline however the receiver trickles (webhook_timeout_s bounds each read, and a byte a
    # second resets it), and no more of an answer than this is read.
    webhook_attempt_deadline_s: float = Field(default=10.0, gt=0)
    webhook_max_response_bytes: int = Field(default=64 * 1024, ge=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_backoff_s: float = Field(default=2.0, ge=0)  # doubled per attempt
    webhook_backoff_max_s: float = Field(default=3600.0, ge=0)
    webhook_dead_stream: str = "kyc:webhooks-dead"
    # Bounded streams (issue 30, docs/EVENTS.md "Caps"): the approximate length (XADD MAXLEN ~)
    # the rejects and dead-letter streams are trimmed to; the completion stream's is
    # events_stream_max_len. The intake stream needs none: the consumer deletes what it handled.
    events_rejects_max_len: int = Field(default=10_000, ge=100)
    webhook_dead_max_len: int = Field(default=10_000, ge=100)

    # --- backlogs and observability (issue #14; docs/OPERATIONS.md) ---------------------------
    # Manifest rows a backlog keeps in flight at most: what bounds Redis memory for any length.
    backlog_window: int = Field(default=1000, ge=1)
    # Once a queued backlog has written a job's document to its directory, Redis keeps it this
    # long (None: KYC_JOB_TTL_S). Short keeps Redis flat over a long manifest.
    backlog_result_ttl_s: int | None = Field(default=None, ge=1)
    # Jobs per broker message a queued backlog sends (1: one message per job). A message costs a
    # worker several milliseconds of CPU to consume whatever it carries (bench/RESULTS.md).
    backlog_chunk: int = Field(default=8, ge=1, le=256)
    # A worker host serves Prometheus metrics on this port (its prefork parent, aggregating the
    # children's through prometheus-client's multiprocess files in metrics_dir; None: off).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_dir: Path | None = None  # default: a fresh temporary directory per worker host
    api_metrics: bool = False  # serve GET /metrics on the API
    log_format: Literal["text", "json"] = "text"  # json: one JSON object per line (no biometrics)

    # Batched execution (issue #14): a worker takes up to this many jobs of a kind per task call,
    # claims and finishes them in pipelined Redis round trips and embeds their faces in one call;
    # 1 = one job per message. A partial batch waits at most batch_flush_ms for company. Off by
    # default: measured here it saved ~3 % CPU per job and no throughput beyond the run-to-run
    # spread (bench/RESULTS.md), so the one-job path, with its longer record, stays the default.
    batch_size: int = Field(default=1, ge=1, le=256)
    batch_flush_ms: int = Field(default=20, ge=1)
    # onnxruntime execution providers, in order of preference; only the CPU one is tested here.
    ort_providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"], min_length=1)
    ort_batch_faces_max: int = Field(default=0, ge=0)  # faces per embedder call; 0 = per provider
    # Exact PRelu rewrite (issue #27, shared/models/graph_rewrite.py): the embedder's and the
    # liveness model's PRelu spelled in ops onnxruntime keeps in its fast layout, in memory at load,
    # used only when a load-time check finds the outputs bit-identical. False: the graphs as pinned.
    ort_exact_rewrite: bool = True
    # --- review (docs/EVENTS.md, "Reviewer page") ------------------------------------------------
    # A finished verify goes to the reviewers' queue when its confidence falls in this band (around
    # the operating point, KYC_VERIFY_CONFIDENCE) or its selfie's liveness score is below the floor.
    review_confidence_min: float = Field(default=0.6, ge=0, le=1)
    review_confidence_max: float = Field(default=0.9, ge=0, le=1)
    review_liveness_below: float = Field(default=0.7, ge=0, le=1)
    review_stream: str = "kyc:reviews"  # one entry per decision
    review_session_ttl_s: int = Field(default=8 * 3600, ge=60)  # a reviewer's login
    # Review form origins (login CSRF): a form POST whose Origin (or Referer) is another site is
    # refused. Empty: the origin must name the request's own Host; behind a proxy that rewrites
    # Host, list the page's public origins ("https://review.example.com").
    review_origins: list[str] = Field(default_factory=list)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _hashed_keys_only(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):  # the clear-text list of the first release
            raise SettingsError(
                "KYC_API_KEYS maps key ids to hashes, tenants and scopes; clear keys are no longer "
                "accepted (mint one with `kycface api-key new`)"
            )
        if isinstance(value, Mapping):
            for key_id in value:
                if not re.fullmatch(API_KEY_ID_PATTERN, str(key_id)):
                    raise SettingsError("KYC_API_KEYS: key ids must be 1-64 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("api_key_quotas_per_min", "api_tenant_quotas_per_min")
    @classmethod
    def _positive_quotas(cls, value: dict[str, int]) -> dict[str, int]:
        # Which names are job kinds is the API's to check (the registry lives above this module).
        if any(rate < 1 for rate in value.values()):
            raise SettingsError("KYC_API_*_QUOTAS_PER_MIN: every quota is at least 1 job a minute")
        return value

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_variables(cls, data: Any) -> Any:
        problems = unknown_variables(os.environ, set(cls.model_fields))
        if problems:
            raise SettingsError("; ".join(problems))
        return data

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinel_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _one_sentinel_set(self) -> Settings:
        broker_names_sentinels = (self.broker_url or "").startswith("sentinel://")
        if (self.redis_sentinels or broker_names_sentinels) and not self.redis_master_name:
            raise SettingsError("KYC_REDIS_SENTINELS (or a sentinel:// broker URL) needs KYC_REDIS_MASTER_NAME")
        for entry in self.redis_sentinels:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit():
                raise SettingsError(f"KYC_REDIS_SENTINELS: {entry!r} is not host:port")
        if self.redis_sentinels and not self.broker_url:
            # The Sentinels alone name the broker: every check of KYC_BROKER_URL then sees it.
            self.broker_url = self.resolved_broker_url()
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A Redis or S3 URL may carry a password (user:password@host): never print it.
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name in _URL_FIELDS and isinstance(value, str) else value)

    def quality_gate(self, level: QualityLevel) -> QualityGate | None:
        """The thresholds of ``level``; None for ``none`` (every detected face is kept)."""
        gates = {QualityLevel.LOW: self.quality_low, QualityLevel.MEDIUM: self.quality_medium}
        return self.quality_high if level is QualityLevel.HIGH else gates.get(level)

    def resolved_redis_url(self) -> str | None:
        return self.redis_url or self.resolved_broker_url()

    def resolved_broker_url(self) -> str | None:
        """The broker URL Celery is given: with ``KYC_REDIS_SENTINELS``, kombu's sentinel:// list
        (keeping the database of ``KYC_BROKER_URL``, if one is set)."""
        if not self.redis_sentinels or (self.broker_url or "").startswith("sentinel://"):
            return self.broker_url
        given = urlsplit(self.broker_url or "")
        auth = given.netloc.rpartition("@")[0] + "@" if "@" in given.netloc else ""
        path = given.path if given.path != "/" else ""
        return ";".join(f"sentinel://{auth}{entry}" for entry in self.redis_sentinels) + path

    def allowed_buckets(self) -> set[str]:
        return set(self.s3_allowed_buckets) | {self.s3_bucket}

    def worker_processes(self) -> int:
        return self.worker_concurrency or os.cpu_count() or 1

    def onnx_threads(self) -> int:
        """Intra-op threads per process: explicit, or the cores shared out between worker processes."""
        if self.intra_op_threads:
            return self.intra_op_threads
        return max(1, (os.cpu_count() or 1) // self.worker_processes())

    def ort_batch_faces(self) -> int:
        """Faces per embedder call: explicit, or sized for the first provider and, on the CPU,
        for the threads. One onnxruntime thread gains nothing from a batch and pays for it in
        cache: fr_feature cost 7.5 ms per face alone and 9.2 in calls of 32 (bench/RESULTS.md,
        "Faces per embedder call"), so a worker process with one thread embeds face by face;
        with several threads a batch is what keeps them busy (6.6 -> 4.7 ms per face on two)."""
        if self.ort_batch_faces_max:
            return self.ort_batch_faces_max
        provider = self.ort_providers[0]
        if provider == "CPUExecutionProvider" and self.onnx_threads() == 1:
            return 1
        return _ORT_BATCH_FACES.get(provider, 32)


# Faces per embedder call by execution provider (only the CPU figures are measured here).
_ORT_BATCH_FACES = {"CPUExecutionProvider": 32, "CUDAExecutionProvider": 128, "OpenVINOExecutionProvider": 64}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
