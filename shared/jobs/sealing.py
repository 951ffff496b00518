"""A job document as its tenant reads it: every template of its result sealed for that tenant.

Inside the service a template is the deployment key's own string (format 2), so galleries,
matching and erasure digests work the same for every tenant. Where a tenant reads a document
(the API), each template is sealed for it (format 3, :func:`shared.features.seal_for`): the same
face then gives unrelated strings in two tenants, and one tenant's string is refused by another.
The default tenant reads the service's own strings, as before tenants had keys.
"""

from __future__ import annotations

from shared import features
from shared.errors import FeaturesError
from shared.jobs.model import JobDocument
from shared.jobs.store import TEMPLATE_FIELDS
from shared.tenants import DEFAULT_TENANT


def for_tenant(doc: JobDocument) -> JobDocument:
    """``doc`` with each template of its result sealed for ``doc.tenant``."""
    if doc.result is None or doc.tenant == DEFAULT_TENANT:
        return doc
    return doc.model_copy(update={"result": _sealed(doc.result, doc.tenant)})


def _sealed(value: object, tenant: str) -> object:
    if isinstance(value, dict):
        return {
            name: _seal(item, tenant) if name in TEMPLATE_FIELDS and isinstance(item, str) else _sealed(item, tenant)
            for name, item in value.items()
        }
    if isinstance(value, list):
        return [_sealed(item, tenant) for item in value]
    return value


def _seal(text: str, tenant: str) -> str | None:
    try:
        return features.seal_for(text, tenant)
    except FeaturesError:
        # Sealed under a key retired since: no string the tenant could use, and never the
        # service's own string in its place.
        return None
