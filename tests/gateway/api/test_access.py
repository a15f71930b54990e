"""Every route for every role: allowed, forbidden (403), unauthenticated (401), and
another site's objects (404, the documented choice: existence does not leak)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.gateway.api.conftest import (
    ROLES,
    World,
    asgi_client,
    auth,
    build_world,
    close_world,
    key_of,
)

ALL = frozenset(ROLES)


@pytest.fixture
def world(shared_world: World) -> World:
    return shared_world


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(world.app) as c:
        yield c


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {dev} and {alert} are filled with an object of the caller's site
    allowed: frozenset[str]
    scoped: bool = True  # has an object whose site is checked
    body: dict[str, str] | None = None

    def url(self, world: World, *, other_site: bool) -> str:
        alert = world.south_alert if other_site else world.north_alert
        return self.path.format(dev="s1" if other_site else "n1", alert=alert.id)


ROUTES = [
    Route("GET", "/api/v1/me", ALL, scoped=False),
    Route("GET", "/api/v1/openapi.json", ALL, scoped=False),
    Route("GET", "/api/v1/devices", ALL, scoped=False),
    Route("GET", "/api/v1/devices/{dev}", ALL),
    Route("GET", "/api/v1/devices/{dev}/readings?every_s=600", ALL),
    Route("GET", "/api/v1/devices/{dev}/timeline", frozenset({"enforcement", "admin"})),
    Route("GET", "/api/v1/alerts", ALL, scoped=False),
    Route("GET", "/api/v1/alerts/{alert}", ALL),
    Route("GET", "/api/v1/alerts/{alert}/evidence", frozenset({"enforcement", "admin"})),
    Route(
        "POST",
        "/api/v1/alerts/{alert}/note",
        frozenset({"inspector", "admin"}),
        body={"note": "checked the seal"},
    ),
    Route("GET", "/api/v1/ledger/verify", frozenset({"enforcement", "admin"}), scoped=False),
    Route("GET", "/metrics", frozenset({"admin"}), scoped=False),
]
# The event stream never ends when allowed; its allowed case is in test_sse.py.
STREAM = Route("GET", "/api/v1/alerts/stream", ALL, scoped=False)


def _ids(route: Route) -> str:
    return f"{route.method} {route.path}"


async def _call(
    client: httpx.AsyncClient, route: Route, url: str, headers: dict[str, str]
) -> httpx.Response:
    return await client.request(route.method, url, headers=headers, json=route.body)


@pytest.mark.parametrize("route", [*ROUTES, STREAM], ids=_ids)
async def test_without_a_key_is_401(client: httpx.AsyncClient, world: World, route: Route) -> None:
    url = route.url(world, other_site=False)
    for headers in (
        {},
        {"Authorization": "Bearer mw_not-a-key"},
        {"X-API-Key": "mw_not-a-key"},
        {"Authorization": f"Basic {key_of('admin')}"},
    ):
        response = await _call(client, route, url, headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "not-a-key" not in response.text


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", ROUTES, ids=_ids)
async def test_role_matrix_on_own_site(
    client: httpx.AsyncClient, world: World, route: Route, role: str
) -> None:
    response = await _call(client, route, route.url(world, other_site=False), auth(role))
    if role in route.allowed:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 403, response.text
        assert role in response.json()["detail"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", [r for r in ROUTES if r.scoped], ids=_ids)
async def test_other_sites_objects_are_404(
    client: httpx.AsyncClient, world: World, route: Route, role: str
) -> None:
    response = await _call(client, route, route.url(world, other_site=True), auth(role))
    if role not in route.allowed:
        assert response.status_code == 403  # the role check comes first, revealing nothing
    elif role == "admin":  # admin's key is for all sites
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 404, response.text
        # the same answer as for an object that does not exist at all
        missing = route.path.format(dev="nope", alert=999_999)
        absent = await _call(client, route, missing, auth(role))
        assert absent.status_code == 404


async def test_x_api_key_header_works(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/me", headers={"X-API-Key": key_of("inspector")})
    assert response.status_code == 200
    assert response.json() == {
        "name": "inspector",
        "role": "inspector",
        "sites": ["north"],
        "max_page_size": 50,
    }


@pytest.mark.parametrize("role", ["inspector", "enforcement"])
async def test_lists_hold_only_own_sites_objects(
    client: httpx.AsyncClient, world: World, role: str
) -> None:
    devices = (await client.get("/api/v1/devices", headers=auth(role))).json()
    assert [d["id"] for d in devices] == ["n1"]
    alerts = (await client.get("/api/v1/alerts", headers=auth(role))).json()["items"]
    assert [a["id"] for a in alerts] == [world.north_alert.id]
    # asking for the other site explicitly yields nothing, not an error that confirms it
    other = await client.get("/api/v1/alerts?site=south", headers=auth(role))
    assert other.status_code == 200 and other.json()["items"] == []
    admin = (await client.get("/api/v1/alerts", headers=auth("admin"))).json()["items"]
    assert {a["site"] for a in admin} == {"north", "south"}


async def test_health_needs_no_key_and_carries_no_ids(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["reasons"] == []
    assert "n1" not in response.text and "s1" not in response.text


async def test_health_says_when_no_key_is_configured(tmp_path: Path) -> None:
    world = await build_world(tmp_path, keys=False)
    try:
        async with asgi_client(world.app) as client:
            body = (await client.get("/health")).json()
            assert body["status"] == "degraded"
            assert any("api.keys" in r for r in body["reasons"])
            assert (await client.get("/api/v1/me", headers=auth("admin"))).status_code == 401
    finally:
        await close_world(world)


async def test_dashboard_files_are_public_and_locked_down(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and "<title>meterwatch" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    script = await client.get("/static/app.js")
    assert script.status_code == 200 and "sessionStorage" in script.text


@pytest.mark.parametrize("route", [r for r in ROUTES if "openapi" not in r.path], ids=_ids)
def test_schema_documents_403_exactly_where_a_role_is_refused(world: World, route: Route) -> None:
    spec = world.app.openapi()
    template = (
        route.path.split("?")[0].replace("{dev}", "{device_id}").replace("{alert}", "{alert_id}")
    )
    responses = spec["paths"][template][route.method.lower()]["responses"]
    assert {"401", "429"} <= set(responses)
    # Readings also answer 403 to inspectors asking for more than the last 7 days.
    may_refuse = route.allowed != ALL or template.endswith("/readings")
    assert ("403" in responses) == may_refuse
