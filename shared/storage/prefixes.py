"""Which tenant may name which object: the tenant-prefix rules of the allowed buckets.

One place for both doors: the producer applies them to every job it stores, and the request
checks (``shared.events.bodies.check_request``, for ``POST /v1/jobs`` and the intake) apply them
first, so a refusal names the request's field.
"""

from __future__ import annotations

from shared.config import Settings
from shared.errors import ReferenceRejectedError
from shared.storage.refs import Ref
from shared.tenants import DEFAULT_TENANT


def configured_tenants(settings: Settings) -> frozenset[str]:
    """The tenants ``settings`` name (API keys, event rules, webhook maps) other than the default
    one: each owns ``<tenant>/`` in the allowed buckets under the prefix guard."""
    named = {key.tenant for key in settings.api_keys.values()} | {rule.tenant or "" for rule in settings.event_rules}
    named |= set(settings.webhook_allowed_hosts) | set(settings.webhook_secrets)
    return frozenset(named - {"", DEFAULT_TENANT})


def check_tenant_prefix(settings: Settings, tenant: str, ref: Ref, prefixed: frozenset[str] | None = None) -> None:
    """With ``KYC_S3_TENANT_PREFIXES``, a tenant's images are the objects under ``<tenant>/``;
    with ``KYC_S3_TENANT_PREFIX_GUARD`` (the default), no tenant names an object under another
    configured tenant's prefix.

    Args:
        prefixed: :func:`configured_tenants` of ``settings``, when the caller keeps it.

    Raises:
        ReferenceRejectedError: the rule ``ref`` breaks.
    """
    if settings.s3_tenant_prefixes and tenant != DEFAULT_TENANT and not ref.key.startswith(f"{tenant}/"):
        raise ReferenceRejectedError("reference is outside the tenant's prefix")
    owner = ref.key.partition("/")[0]
    if owner == tenant or not settings.s3_tenant_prefix_guard:
        return
    if owner in (configured_tenants(settings) if prefixed is None else prefixed):
        raise ReferenceRejectedError("reference is inside another tenant's prefix")
