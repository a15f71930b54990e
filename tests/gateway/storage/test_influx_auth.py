"""InfluxDB v1 with authentication on: user/password work, a wrong password is a
retryable failure that never shows the secret."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from drivers.reading import DeviceKind, Reading
from gateway.storage import InfluxV1Store, ReadingEncoder, SinkUnavailable
from tests.gateway.storage.conftest import BASE_NS, HOUR_NS
from tests.services import InfluxService, influxdb_service

pytestmark = pytest.mark.integration

PASSWORD = "pw-Correct-Horse-9"


@pytest.fixture(scope="module")
def secured_influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxService]:
    svc = influxdb_service(tmp_path_factory.mktemp("influx-auth"))
    conf = svc.workdir / "influxdb.conf"
    conf.write_text(conf.read_text().replace("[http]\n", "[http]\n  auth-enabled = true\n"))
    svc.start()
    # With no users yet, InfluxDB accepts exactly this statement without credentials.
    q = urllib.parse.urlencode(
        {"q": f"CREATE USER \"admin\" WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES"}
    )
    urllib.request.urlopen(
        urllib.request.Request(f"{svc.url}/query?{q}", method="POST"), timeout=10
    ).close()
    # From now on the server really checks: an unauthenticated query is refused.
    show = urllib.parse.urlencode({"q": "SHOW DATABASES"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{svc.url}/query?{show}", timeout=10)
    assert refused.value.code == 401
    refused.value.close()
    yield svc
    svc.stop()


async def test_user_password_round_trip_and_wrong_password(secured_influx: InfluxService) -> None:
    encoder = ReadingEncoder(site_id="s")
    good = InfluxV1Store(
        url=secured_influx.url,
        database="secured",
        encoder=encoder,
        username="admin",
        password=PASSWORD,
    )
    assert await good.ensure_database()
    reading = Reading("w1", DeviceKind.WATER, BASE_NS, 1, {"flow_m3h": 2.5})
    await good.write([reading])
    result = await good.query("w1", start_ns=BASE_NS, end_ns=BASE_NS + HOUR_NS)
    assert result.columns == {"flow_m3h": [2.5]}
    await good.close()

    wrong = InfluxV1Store(
        url=secured_influx.url,
        database="secured",
        encoder=encoder,
        username="admin",
        password="not-the-password",
    )
    with pytest.raises(SinkUnavailable) as info:
        await wrong.write([reading])
    assert info.value.status == 401 and "not-the-password" not in str(info.value)
    with pytest.raises(SinkUnavailable):
        await wrong.query("w1", start_ns=BASE_NS, end_ns=BASE_NS + HOUR_NS)
    assert await wrong.ensure_database() is False
    await wrong.close()

    anonymous = InfluxV1Store(url=secured_influx.url, database="secured", encoder=encoder)
    with pytest.raises(SinkUnavailable):
        await anonymous.write([reading])
    await anonymous.close()
