"""`FindingIntake`: the pipeline's ``on_findings`` stage — cite, digest, keep, ingest.

For each finding it fetches the readings of the cited window (its devices,
``window_start_ns <= ts_ns <= window_end_ns``) through `readings_for`, keeps
them with the alert (`AlertStore.ingest(..., evidence=...)`) and ledgers
their digest, so the evidence bundle always re-hashes to the ledgered digest.

Wire it as::

    intake = FindingIntake(alert_store, readings_for=fetch, site_of=lambda f: site_id)
    Pipeline(..., on_findings=intake)

where ``fetch(finding) -> Sequence[Reading]`` reads the raw readings (for
example from the reading store, after the forwarder has caught up, or from
an in-memory window).

Failure modes handled: `readings_for` failing or timing out (the alert is
still raised, with the digest of no readings and the failure in the log,
once per outage: an alert matters more than its attachment); a bad finding
(`AlertError`, logged with its detector and device; the other findings go
on).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from anomaly.finding import Finding
from drivers.reading import Reading
from gateway.alerts.model import AlertChange, AlertError
from gateway.alerts.store import AlertStore
from gateway.evidence.digest import cited_readings, readings_digest

log = logging.getLogger(__name__)

ReadingsFor = Callable[[Finding], Awaitable[Sequence[Reading]]]


class FindingIntake:
    """Callable ``await intake(findings)``; returns nothing, never raises for one bad finding."""

    def __init__(
        self,
        alerts: AlertStore,
        *,
        readings_for: ReadingsFor,
        site_of: Callable[[Finding], str],
        timeout_s: float = 30.0,
    ) -> None:
        self.alerts = alerts
        self._readings_for = readings_for
        self._site_of = site_of
        self._timeout_s = timeout_s
        self._fetch_failing = False
        self.changes = 0
        self.failures = 0

    async def __call__(self, findings: Sequence[Finding]) -> None:
        for finding in findings:
            await self.ingest(finding)

    async def ingest(self, finding: Finding) -> AlertChange | None:
        readings = await self._fetch(finding)
        cited = cited_readings(
            readings,
            devices=finding.devices,
            start_ns=finding.window_start_ns,
            end_ns=finding.window_end_ns,
        )
        try:
            digest = await asyncio.to_thread(readings_digest, cited)
            change = await self.alerts.aingest(
                finding, site=self._site_of(finding), evidence_digest=digest, evidence=cited
            )
        except AlertError as exc:
            self.failures += 1
            log.error(
                "finding not ingested: %s",
                exc,
                extra={"detector": finding.detector, "device": finding.devices[:1]},
            )
            return None
        if change is not None:
            self.changes += 1
        return change

    async def _fetch(self, finding: Finding) -> Sequence[Reading]:
        try:
            async with asyncio.timeout(self._timeout_s):
                readings = await self._readings_for(finding)
        except Exception as exc:  # any reader failure: raise the alert without attachment
            if not self._fetch_failing:
                self._fetch_failing = True
                log.warning(
                    "cannot read the readings findings cite (%s); alerts are raised with "
                    "an empty evidence set until this recovers",
                    type(exc).__name__,
                    extra={"detector": finding.detector},
                )
            return ()
        if self._fetch_failing:
            self._fetch_failing = False
            log.info("reading the cited readings works again")
        return readings
