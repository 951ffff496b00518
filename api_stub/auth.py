"""API keys (``X-API-Key``): each belongs to one tenant and holds scopes; configured as hashes.

A route states what it needs with ``Depends(require("jobs:read"))`` (or ``require()`` for any
valid key) and receives the caller's :class:`Principal`, whose tenant every store call is scoped
by. Keys are looked up by their SHA-256 in ``KYC_API_KEYS`` (see :func:`shared.tenants.api_key_hash`
for why a plain hash is enough), so the service never holds a usable key.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from shared.config import ApiKey
from shared.tenants import Scope, Tenant, api_key_hash

HEADER = "X-API-Key"
_SCHEME = APIKeyHeader(name=HEADER, auto_error=False, description="An API key minted by `kycface api-key new`.")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's tenant, its id (for logs and rate limits) and its scopes."""

    tenant: Tenant
    key_id: str
    scopes: frozenset[Scope]

    def may(self, scope: Scope | str) -> bool:
        return Scope(scope) in self.scopes


class KeyRing:
    """The configured keys, by hash.

    Args:
        keys: ``KYC_API_KEYS`` (key id -> hash, tenant, scopes).
    """

    def __init__(self, keys: Mapping[str, ApiKey]) -> None:
        self._entries = [(bytes.fromhex(entry.sha256), key_id) for key_id, entry in keys.items()]
        self._by_id = dict(keys)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def principal(self, key: str | None) -> Principal | None:
        """The principal of ``key``, or None for a missing or unknown key."""
        if not key:
            return None
        digest = bytes.fromhex(api_key_hash(key))
        found = None
        # Compare with every entry, not just until the first hit, so timing says nothing.
        for stored, key_id in self._entries:
            if hmac.compare_digest(digest, stored):
                found = key_id
        return None if found is None else self.by_id(found)

    def by_id(self, key_id: str) -> Principal | None:
        """The principal of a configured key id, or None once it is gone (a reviewer's session
        remembers the id, never the key, so a removed key ends its sessions)."""
        entry = self._by_id.get(key_id)
        return None if entry is None else Principal(Tenant(entry.tenant), key_id, entry.scopes)


def authenticate(request: Request, key: str | None = Security(_SCHEME)) -> Principal:
    """The caller's principal; 401 without a valid key (and with no keys configured, always)."""
    ring: KeyRing = request.app.state.keyring
    principal = ring.principal(key)
    if principal is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid API key",
            headers={"WWW-Authenticate": HEADER},
        )
    return principal


def require(scope: Scope | str | None = None) -> Callable[..., Principal]:
    """A FastAPI dependency: the caller's :class:`Principal`, if its key holds ``scope``.

    Args:
        scope: a :class:`shared.tenants.Scope` value (``"review"``); None accepts any valid key.

    Returns:
        The dependency (``Depends(require("review"))``): 401 without a valid key, 403 when the
        key lacks the scope.
    """
    needed = Scope(scope) if scope is not None else None

    def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if needed is not None:
            check_scope(principal, needed)
        return principal

    return dependency


def check_scope(principal: Principal, scope: Scope) -> None:
    """The 403 of :func:`require`, for a scope that depends on the request (the job's kind)."""
    if not principal.may(scope):
        raise HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=f"this API key lacks the {scope.value} scope")
