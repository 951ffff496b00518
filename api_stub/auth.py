"""API-key header authentication (``X-API-Key``), keys from ``KYC_API_KEYS``."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fastapi import HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from shared.config import Settings
from shared.events.model import DEFAULT_TENANT

HEADER = "X-API-Key"


def api_key_guard(keys: Sequence[str]) -> Callable[[str | None], None]:
    """A FastAPI dependency that accepts a request only when its key is one of ``keys``.

    With no keys configured every request is refused: an unconfigured stub fails closed.

    Args:
        keys: the accepted API keys.

    Returns:
        The dependency, to use as ``Depends(...)`` on a route or router.
    """
    accepted = [k.encode() for k in keys if k]
    scheme = APIKeyHeader(name=HEADER, auto_error=False, description="One of the keys in KYC_API_KEYS.")

    def require_api_key(key: str | None = Security(scheme)) -> None:
        given = (key or "").encode()
        # Compare against every key, not just until the first hit, so timing says nothing.
        matched = False
        for candidate in accepted:
            matched |= hmac.compare_digest(given, candidate)
        if not (key and matched):
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="missing or invalid API key",
                headers={"WWW-Authenticate": HEADER},
            )

    return require_api_key


# --- principals and scopes ------------------------------------------------------------------
# The interface the tenants work provides (``Principal``, ``require``), over today's keys until
# it lands: every key of KYC_API_KEYS is tenant "default" with every scope.

SCOPES = frozenset({"jobs", "review"})


@dataclass(frozen=True)
class Principal:
    """Who a request is: the key's id (a hash, safe to record), its tenant and its scopes."""

    key_id: str
    tenant: str
    scopes: frozenset[str]


def key_id(key: str) -> str:
    """A stable, non-secret id of an API key (recorded as the reviewer, never the key)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


class Keyring:
    """The API keys and who each is."""

    def __init__(self, principals: Mapping[str, Principal]) -> None:
        self._by_key = {k.encode(): p for k, p in principals.items() if k}
        self._by_id = {p.key_id: p for p in principals.values()}

    @classmethod
    def from_settings(cls, settings: Settings) -> Keyring:
        keys = [k.get_secret_value() for k in settings.api_keys]
        return cls({k: Principal(key_id(k), DEFAULT_TENANT, SCOPES) for k in keys})

    def authenticate(self, key: str | None) -> Principal | None:
        """The principal of ``key``; compares against every key, so timing says nothing."""
        given = (key or "").encode()
        found = None
        for candidate, principal in self._by_key.items():
            if hmac.compare_digest(given, candidate):
                found = principal
        return found if key else None

    def by_id(self, key_id: str) -> Principal | None:
        """The principal of a key id (a session remembers the id, never the key)."""
        return self._by_id.get(key_id)


def require(scope: str) -> Callable[..., Principal]:
    """A FastAPI dependency: the caller's principal, when its ``X-API-Key`` holds ``scope``.

    Raises (as responses):
        401: no key, or not a known one. 403: a known key without ``scope``.
    """
    scheme = APIKeyHeader(name=HEADER, auto_error=False, description="One of the keys in KYC_API_KEYS.")

    def dependency(request: Request, key: str | None = Security(scheme)) -> Principal:
        keyring: Keyring = request.app.state.keyring
        principal = keyring.authenticate(key)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "missing or invalid API key", {"WWW-Authenticate": HEADER}
            )
        if scope not in principal.scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this key lacks the {scope!r} scope")
        return principal

    return dependency
