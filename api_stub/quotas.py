"""Admission of a job request: the quotas of its key and tenant, the tenant's cap on live job
documents, and the near-miss scope of a search (docs/OPERATIONS.md, "Quotas").

Every request takes one token from each of its buckets: ``submit`` and its kind, per key and per
tenant, and ``search:candidates`` for a near-miss search. The per-key search bucket is
``KYC_API_SEARCH_LIMIT`` per ``KYC_API_SEARCH_WINDOW_S``; the others are
``KYC_API_KEY_QUOTAS_PER_MIN`` and ``KYC_API_TENANT_QUOTAS_PER_MIN``. Over any of them, or over
the tenant's ``KYC_API_TENANT_MAX_LIVE_JOBS``: 429 with ``Retry-After``.
"""

from __future__ import annotations

import logging

import redis
from fastapi import HTTPException, status

from api_stub.auth import Principal, check_scope
from api_stub.limits import Bucket, LiveJobs, TokenBuckets
from shared import features, keys
from shared.config import Settings
from shared.errors import FeaturesError, SettingsError
from shared.gallery.audit import audit_near_misses
from shared.gallery.probe_patterns import ProbePatterns
from shared.jobs.inputs import parse_flag
from shared.jobs.registry import REGISTRY
from shared.metrics import ApiMetrics
from shared.tenants import Scope

log = logging.getLogger(__name__)

SUBMIT = "submit"  # the bucket every submission takes a token from
CANDIDATES = Scope.SEARCH_CANDIDATES.value  # the bucket of near-miss searches


def check_quota_names(settings: Settings) -> None:
    """Refuse quota settings naming a bucket that does not exist (a misspelt kind would be no limit).

    Raises:
        SettingsError: a name that is neither a job kind, ``submit`` nor ``search:candidates``.
    """
    known = {spec.name for spec in REGISTRY} | {SUBMIT, CANDIDATES}
    for setting, quotas in (
        ("KYC_API_KEY_QUOTAS_PER_MIN", settings.api_key_quotas_per_min),
        ("KYC_API_TENANT_QUOTAS_PER_MIN", settings.api_tenant_quotas_per_min),
    ):
        unknown = sorted(set(quotas) - known)
        if unknown:
            raise SettingsError(f"{setting}: no such bucket {unknown}; buckets are {sorted(known)}")


def wants_near_misses(kind: str, inputs: dict[str, str]) -> bool:
    """Whether the request asks a search for its near misses (validated as a flag already)."""
    return kind == "search" and parse_flag(inputs.get("near_misses", "false"))


class Admission:
    """The checks a job request passes before it is submitted.

    Args:
        settings: the quotas and caps.
        client: the job store's Redis (buckets and counts are shared by every API process).
        patterns: this process's probe rings (searches with features probes are observed).
        metrics: the API's metrics, if served: refusals and near-duplicate probes are counted.
    """

    def __init__(
        self, settings: Settings, client: redis.Redis, patterns: ProbePatterns, metrics: ApiMetrics | None = None
    ) -> None:
        self.settings = settings
        self._buckets = TokenBuckets(client)
        self.live = LiveJobs(client, settings.api_tenant_max_live_jobs, settings.job_ttl_s)
        self.patterns = patterns
        self.metrics = metrics

    def buckets(self, caller: Principal, kind: str, near_misses: bool) -> list[Bucket]:
        """The buckets one request of ``kind`` takes a token from."""
        s = self.settings
        names = [SUBMIT, kind, *([CANDIDATES] if near_misses else [])]
        found: list[Bucket] = []
        for name in names:
            per_key = keys.quota_bucket_key(name, f"key:{caller.key_id}")
            if name == "search":
                found.append(Bucket(per_key, float(s.api_search_limit), s.api_search_limit / s.api_search_window_s))
            elif name in s.api_key_quotas_per_min:
                found.append(Bucket.per_minute(per_key, s.api_key_quotas_per_min[name]))
            if name in s.api_tenant_quotas_per_min:
                per_tenant = keys.quota_bucket_key(name, f"tenant:{caller.tenant}")
                found.append(Bucket.per_minute(per_tenant, s.api_tenant_quotas_per_min[name]))
        return found

    def admit(self, caller: Principal, kind: str, inputs: dict[str, str], job_address: str | None = None) -> None:
        """Let the request through, or raise its 403 or 429 (``job_address``: the job it names,
        which passes the live-job cap when it exists already: a resubmission makes nothing).

        Raises:
            HTTPException: 403 for near misses without ``search:candidates``.
            Refused: 429 (with ``Retry-After``) over a quota or the tenant's live-job cap.
            StorageUnavailableError: Redis is unreachable (503: never let through).
        """
        near_misses = wants_near_misses(kind, inputs)
        if near_misses:
            check_scope(caller, Scope.SEARCH_CANDIDATES)
        try:
            wait_s = self.live.retry_after_s(caller.tenant, job_address)
            if wait_s is not None:
                raise Refused("live_jobs", f"this tenant has {self.live.cap} live jobs, its cap", wait_s)
            wait_s = self._buckets.retry_after_s(self.buckets(caller, kind, near_misses))
            if wait_s is not None:
                raise Refused("quota", f"too many {kind} jobs for this API key or its tenant", wait_s)
        except Refused as refused:
            log.warning("refused a %s job of key %s: %s", kind, caller.key_id, refused.reason)
            if self.metrics is not None:
                self.metrics.refused.labels(kind, refused.reason).inc()
            raise
        if near_misses:
            audit_near_misses("api", caller.tenant, inputs.get("gallery", ""), 0, who=caller.key_id)
        if kind == "search":
            self._observe(caller, inputs["probe"])

    def _observe(self, caller: Principal, probe: str) -> None:
        try:
            decoded = features.decode(probe)
        except FeaturesError:
            return  # an image reference: its face is computed by the worker
        if self.patterns.observe(f"key:{caller.key_id}", decoded) and self.metrics is not None:
            self.metrics.probe_near_duplicates.inc()


class Refused(HTTPException):
    """A 429 with its ``Retry-After``, and why (``quota`` or ``live_jobs``) for the metrics."""

    def __init__(self, reason: str, detail: str, wait_s: int) -> None:
        super().__init__(status.HTTP_429_TOO_MANY_REQUESTS, detail, headers={"Retry-After": str(wait_s)})
        self.reason = reason
