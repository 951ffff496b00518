"""API-key header authentication (``X-API-Key``), keys from ``KYC_API_KEYS``."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence

from fastapi import HTTPException, Security, status
from fastapi.security import APIKeyHeader

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
