"""The HTTP API and inspector dashboard of meterwatch.

Public API::

    from gateway.api import create_app, DeviceStatus, DeviceState, StatusProvider

    app = create_app(settings=settings, alerts=alert_store, ledger=alert_store.ledger,
                     store=reading_store, status=status_provider,
                     metrics_registry=None)   # -> FastAPI; serve it with uvicorn

`StatusProvider` is the protocol the runtime implements: ``devices() ->
list[DeviceStatus]``, a cheap, non-blocking snapshot. See `gateway.api.app`
for routes, access control and failure modes, `gateway.api.auth` for keys.
"""

from gateway.api.app import create_app
from gateway.api.status import DeviceState, DeviceStatus, StatusProvider

__all__ = ["DeviceState", "DeviceStatus", "StatusProvider", "create_app"]
