"""The dashboard in real headless Chromium against real uvicorn: log in with a key,
see a live alert arrive, open the device page with its chart, acknowledge the
alert with a note, and find the action in the alert store under the key's name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from anomaly.batch import Batch
from anomaly.engine import DeviceModel, Engine, GroupModel
from anomaly.finding import Finding
from anomaly.mpe import mpe_pct
from drivers.reading import DeviceKind, Reading
from gateway.alerts import AlertStatus
from gateway.evidence import readings_digest
from simulators.offline import DeviceStream, generate
from tests.gateway.api.conftest import (
    NORTH,
    ServerThread,
    World,
    build_world,
    cheating_finding,
    close_world,
    key_of,
)

DAY_NS = 86_400 * 10**9

# One Chromium for the module (each test gets its own context via new_page); the
# tests share its event loop, which Playwright's objects are bound to.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# Generous waits: the assertions are about what appears, the suite runs on 2 noisy cores.
expect.set_options(timeout=15_000)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page in its own browser context (its own session storage)."""
    p = await browser.new_page()
    try:
        yield p
    finally:
        await p.close()


async def _login(page: Page, server: ServerThread, key: str) -> None:
    await page.goto(server.url + "/")
    await page.fill("#key", key)
    await page.click("#login-form button[type=submit]")


async def test_inspector_sees_a_live_alert_and_acknowledges_it(
    world: World, server: ServerThread, page: Page
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    await _login(page, server, "mw_wrong-key-000000")
    await expect(page.locator("#login-error")).to_have_text("That key was not accepted.")

    await _login(page, server, key_of("inspector"))
    await expect(page.locator("#who")).to_have_text("inspector (inspector)")
    await expect(page.locator("#live")).to_have_text("live")
    # Only the north site's alert is listed for this key.
    rows = page.locator("#alerts-body tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-alert", str(world.north_alert.id))

    # A cheating nozzle is flagged while the page is open: the row appears by itself.
    change = await asyncio.to_thread(
        world.alerts.ingest,
        cheating_finding("n1", detector="integrity.pulse_adder"),
        site=NORTH,
        evidence_digest="f" * 64,
    )
    assert change is not None
    row = page.locator(f'#alerts-body tr[data-alert="{change.alert.id}"]')
    await expect(row).to_be_visible()
    await expect(row).to_contain_text("integrity.pulse_adder")
    await expect(row.locator(".numbers")).to_have_text(
        "estimate 2.10 % (95 % CI 1.60..2.60) · score 4.20 / 1.00"
    )
    await expect(rows).to_have_count(2)

    # Acknowledge it with a note.
    await row.locator("button.ack").click()
    await page.fill("#action-note", "Pulser seal broken; visit booked")
    await page.click("#action-ok")
    await expect(row).to_have_attribute("data-status", "acknowledged")

    stored = world.alerts.get(change.alert.id)
    assert stored.status is AlertStatus.ACKNOWLEDGED
    last = stored.history[-1]
    assert (last.who, last.note) == ("inspector", "Pulser seal broken; visit booked")

    # The device page shows a chart of its fields and its alerts.
    await page.click('#alerts-body a[href="#/devices/n1"] >> nth=0')
    await expect(page.locator("#device-id")).to_have_text("n1")
    await expect(page.locator("#chart svg path.line")).to_have_count(1)
    await expect(page.locator("#device-alerts tr")).to_have_count(2)
    options = await page.locator("#chart-field option").all_text_contents()
    assert options == ["flow_rate_lpm", "totalizer_volume_l"]

    # The key stays in this tab's session storage only, never in the URL.
    assert key_of("inspector") not in page.url
    stored_key = await page.evaluate("sessionStorage.getItem('meterwatch.key')")
    assert stored_key == key_of("inspector")
    assert errors == []


async def test_enforcement_key_sees_alerts_without_action_buttons(
    world: World, server: ServerThread, page: Page
) -> None:
    await _login(page, server, key_of("enforcement"))
    row = page.locator(f'#alerts-body tr[data-alert="{world.north_alert.id}"]')
    await expect(row).to_be_visible()
    await expect(row.locator("button")).to_have_count(0)


async def test_inspector_dismisses_a_false_alarm(
    world: World, server: ServerThread, page: Page
) -> None:
    await _login(page, server, key_of("inspector"))
    row = page.locator(f'#alerts-body tr[data-alert="{world.north_alert.id}"]')
    await row.locator("button.dismiss").click()
    await page.fill("#action-note", "Calibration visit by the verification office")
    await page.click("#action-ok")
    # Dismissed alerts leave the open list.
    await expect(row).to_have_count(0)
    await expect(page.locator("#alerts-empty")).to_be_visible()
    stored = world.alerts.get(world.north_alert.id)
    assert stored.status is AlertStatus.DISMISSED
    assert stored.history[-1].note == "Calibration visit by the verification office"


def _simulate_and_detect(world: World, *, scenario: str, days: int) -> list[str]:
    """Run `scenario` offline day by day through the anomaly engine and ingest its
    findings into the alert store, as the gateway's pipeline does; the detectors seen."""
    run = generate(scenario, seed=1, days=days)
    engine = Engine(
        [DeviceModel(d, s.kind, mpe_pct(*run.meta(d))) for d, s in run.devices.items()],
        [
            GroupModel(g.id, g.type, g.reference, tuple(g.members), g.technical_loss_pct)
            for g in run.groups
        ],
    )
    names = sorted({f for s in run.devices.values() for f in s.fields})
    detectors = []
    for day in range(days):
        lo = run.scenario.start_ns + day * DAY_NS
        masks = {d: (s.ts_ns >= lo) & (s.ts_ns < lo + DAY_NS) for d, s in run.devices.items()}
        streams = [(d, s, masks[d]) for d, s in run.devices.items()]
        batch = Batch(
            np.concatenate([np.full(m.sum(), engine.index(d), np.int32) for d, _, m in streams]),
            np.concatenate([s.ts_ns[m] for _, s, m in streams]),
            np.concatenate([s.ok[m] for _, s, m in streams]),
            {
                f: np.concatenate(
                    [s.fields.get(f, np.full(len(s.ts_ns), np.nan))[m] for _, s, m in streams]
                )
                for f in names
            },
        )
        for finding in engine.process(batch):
            cited = _cited_readings(run.devices, finding)
            world.alerts.ingest(finding, site=NORTH, evidence_digest=readings_digest(cited))
            detectors.append(finding.detector)
    return detectors


def _cited_readings(streams: dict[str, DeviceStream], finding: Finding) -> list[Reading]:
    out = []
    for device_id in finding.devices:
        s = streams[device_id]
        window = (s.ts_ns >= finding.window_start_ns) & (s.ts_ns <= finding.window_end_ns)
        for i in np.flatnonzero(window):
            values = {k: float(v[i]) for k, v in s.fields.items() if np.isfinite(v[i])}
            quality = "ok" if s.ok[i] else "timeout"
            out.append(
                Reading(device_id, DeviceKind(s.kind), int(s.ts_ns[i]), int(i), values, quality)
            )
    return out


async def test_alert_from_a_simulated_cheating_nozzle_end_to_end(
    tmp_path: Path, page: Page
) -> None:
    """The simulators' calibration-change scenario (nozzle-1's K-factor is edited),
    analysed by the anomaly engine while the dashboard is open."""
    world = await build_world(tmp_path)
    try:
        with ServerThread(world.app) as server:
            await _login(page, server, key_of("inspector"))
            await expect(page.locator("#live")).to_have_text("live")

            detectors = await asyncio.to_thread(
                _simulate_and_detect, world, scenario="calibration_change", days=5
            )
            assert "integrity.parameter_change" in detectors

            row = page.locator("#alerts-body tr", has_text="integrity.parameter_change").filter(
                has_text="nozzle-1"
            )
            await expect(row).to_be_visible()
            await expect(row.locator(".sev")).to_have_text("critical")
            await row.locator("button.ack").click()
            await page.fill("#action-note", "K-factor edited outside verification; sealing")
            await page.click("#action-ok")
            await expect(row).to_have_attribute("data-status", "acknowledged")
            alert_id = int(await row.get_attribute("data-alert") or 0)
            stored = world.alerts.get(alert_id)
            assert stored.device == "nozzle-1" and stored.status is AlertStatus.ACKNOWLEDGED
            assert stored.history[-1].who == "inspector"
    finally:
        await close_world(world)
