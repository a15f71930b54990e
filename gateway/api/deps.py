"""FastAPI dependencies: the authenticated principal and permission checks.

The OpenAPI schema declares both credential forms (``Authorization: Bearer``
and ``X-API-Key``) as security schemes, so clients and schemathesis see them.
A bearer header wins when both are sent.

The failure budget is per TCP peer address (``request.client``).
``X-Forwarded-For`` is not trusted (anyone can send it), so behind a reverse
proxy all clients share the proxy's budget; run the API on the edge box's own
address, as the default config does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from gateway.api.auth import FailureLimiter, KeyRing, Permission, Principal
from gateway.api.metrics import ApiMetrics

log = logging.getLogger("gateway.api")

bearer_scheme = HTTPBearer(auto_error=False, description="An API key as a bearer token")
api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key")


class AuthState:
    """What authentication needs, kept on ``app.state.auth``."""

    def __init__(self, *, keys: KeyRing, limiter: FailureLimiter, metrics: ApiMetrics) -> None:
        self.keys = keys
        self.limiter = limiter
        self.metrics = metrics


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """The caller, or 401 (no/unknown key) or 429 (too many recent failures)."""
    auth: AuthState = request.app.state.auth
    ip = client_ip(request)
    retry_after = auth.limiter.retry_after_s(ip)
    if retry_after is not None:
        auth.metrics.auth_throttled.inc()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed authentications from this address; try again later",
            headers={"Retry-After": str(retry_after)},
        )
    presented: str | None = None
    if bearer is not None and bearer.credentials.strip():
        presented = bearer.credentials.strip()
    elif api_key is not None and api_key.strip():
        presented = api_key.strip()
    found = auth.keys.authenticate(presented) if presented is not None else None
    if found is None:
        auth.limiter.record_failure(ip)
        auth.metrics.auth_failures.inc()
        # The key itself is never logged; the address and whether one was sent are.
        log.warning(
            "API authentication failed",
            extra={"client": ip, "credential": "unknown" if presented else "missing"},
        )
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.principal = found
    return found


def need(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """A dependency that authenticates and then requires `permission` (403 otherwise)."""

    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.can(permission):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {who.role.value} may not do this (needs {permission.value})",
            )
        return who

    check.__name__ = f"need_{permission.name.lower()}"
    return check
