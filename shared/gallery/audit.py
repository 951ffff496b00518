"""The audit trail of near-miss searches: who asked, for which gallery, how many candidates came back.

Near misses (every top-k candidate ranked, verified or not) are what a template can be rebuilt
from (docs/OPERATIONS.md, "Search answers"), so each answer of that kind leaves one record on the
``kyc.audit`` logger. A record names the surface, the tenant, the gallery and a count: never a
probe, a template, a face id or a score.
"""

from __future__ import annotations

import logging

AUDIT_LOGGER = "kyc.audit"

log = logging.getLogger(AUDIT_LOGGER)


def audit_near_misses(surface: str, tenant: str, gallery: str, candidates: int, who: str = "") -> None:
    """Record one near-miss search.

    Args:
        surface: where it was asked: ``api`` (at submit), ``job`` (answered by a worker), ``cli``.
        tenant: the tenant searched for.
        gallery: the gallery's name within the tenant.
        candidates: how many candidates the answer listed (0 at submit, before any answer).
        who: the API key id, where one is known.
    """
    # WARNING, not INFO: the CLI and most deployments log at WARNING, and an audit trail that a
    # log level can switch off is none.
    log.warning(
        "near-miss search: surface=%s tenant=%s gallery=%s candidates=%d key=%s",
        surface,
        tenant,
        gallery,
        candidates,
        who or "-",
    )
