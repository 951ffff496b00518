"""Tenants: who a job, a gallery or a result object belongs to, and how their names are scoped.

A tenant is carried as a :class:`Tenant` from the edge (an API key's tenant, the CLI's
``--tenant``, an event's ``tenant`` field) down to the one function that scopes a name,
:func:`scoped`. The job store, the result archive and the gallery factory store everything under
the scoped name, so two tenants may use the same job id or gallery name, and nothing a tenant
names can reach another tenant's data.

The default tenant (single-tenant deployments, the embedded backlog) scopes nothing: its names
are the bare names, so data written before tenants existed is still found.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from enum import Enum
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

# Letters, digits and ._- (a key id, a Redis key and an S3 object name need no escaping); never
# "/", which separates the tenant from the name it scopes and appears in no job id or gallery name.
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SEPARATOR = "/"


class Tenant(str):
    """A tenant name, checked once when it is made.

    Raises:
        ValueError: not 1-64 letters, digits, '.', '_' or '-', starting alphanumeric.
    """

    def __new__(cls, name: str) -> Tenant:
        if isinstance(name, Tenant):
            return name
        if not isinstance(name, str) or not re.fullmatch(TENANT_PATTERN, name):
            raise ValueError("tenant must be 1-64 letters, digits, '.', '_' or '-', starting alphanumeric")
        return super().__new__(cls, name)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        # A pattern-checked string in schemas (FastAPI documents it), a Tenant in Python.
        return core_schema.no_info_after_validator_function(
            cls, core_schema.str_schema(pattern=TENANT_PATTERN), serialization=core_schema.to_string_ser_schema()
        )


DEFAULT_TENANT = Tenant("default")


def scoped(tenant: Tenant, name: str) -> str:
    """``name`` (a job id or a gallery name) as stored for ``tenant``: ``tenant/name``, or the
    bare name for the default tenant."""
    return name if tenant == DEFAULT_TENANT else f"{tenant}{SEPARATOR}{name}"


class Scope(str, Enum):
    """What an API key may do. A key holds a set of them; each job kind needs one to submit."""

    JOBS_SUBMIT = "jobs:submit"  # faces, verify, match: 1:1 work that keeps nothing
    JOBS_READ = "jobs:read"  # read the tenant's job documents
    GALLERY_ENROLL = "gallery:enroll"  # put templates into the tenant's galleries
    GALLERY_DELETE = "gallery:delete"  # erase templates from them
    GALLERY_SEARCH = "gallery:search"  # 1:N searches (rate-limited per key): matches only
    # Near misses of a search (``near_misses=true``: every top-k candidate ranked, verified or
    # not), for investigators. Ranks rebuild templates, so: off by default, granted on its own,
    # audited and rate-limited on its own (docs/OPERATIONS.md, "Search answers").
    SEARCH_CANDIDATES = "search:candidates"
    REVIEW = "review"  # the reviewer's pages and decisions


API_KEY_PREFIX = "kyc_"


def new_api_key() -> str:
    """A fresh API key: 256 random bits, URL-safe, recognisable by its prefix in a leak scan."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def api_key_hash(key: str) -> str:
    """The SHA-256 (hex) under which ``key`` is configured (``KYC_API_KEYS``).

    A plain, fast, unsalted hash is enough because keys are minted by :func:`new_api_key`: with
    256 random bits there is no dictionary to try and no precomputed table to look up, so salt
    and key stretching (which exist to protect low-entropy passwords) would add nothing but a
    slower check on every request.
    """
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
