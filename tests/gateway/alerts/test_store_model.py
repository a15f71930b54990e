"""AlertStore against a tiny model: any sequence of findings and actions keeps the rules."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from anomaly.finding import Finding
from gateway.alerts import (
    TRANSITIONS,
    AlertAction,
    AlertStatus,
    AlertStore,
    ChangeKind,
    InvalidTransitionError,
)

DEVICES = ("n1", "n2")
DETECTORS = ("a.one", "b.two")


class StoreModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.store = AlertStore(Path(self.tmp.name) / "alerts.sqlite")
        self.status: dict[int, AlertStatus] = {}
        self.key: dict[int, tuple[str, str]] = {}
        self.count: dict[int, int] = {}
        self.changes = 0
        self.t = 1_000

    def teardown(self) -> None:
        assert self.store.ledger.verify().ok
        self.store.close()
        self.tmp.cleanup()

    def active(self, key: tuple[str, str]) -> int | None:
        ids = [i for i, k in self.key.items() if k == key and self.status[i].active]
        assert len(ids) <= 1
        return ids[0] if ids else None

    @rule(device=st.sampled_from(DEVICES), detector=st.sampled_from(DETECTORS))
    def finding(self, device: str, detector: str) -> None:
        self.t += 1
        f = Finding(detector, (device,), 2.0, 1.0, self.t - 10, self.t, "x")
        expected = self.active((device, detector))
        change = self.store.ingest(f, site="s1", evidence_digest="ab" * 32)
        assert change is not None
        self.changes += 1
        if expected is None:
            assert change.kind is ChangeKind.CREATED and change.alert.id not in self.status
            self.status[change.alert.id] = AlertStatus.OPEN
            self.key[change.alert.id] = (device, detector)
            self.count[change.alert.id] = 1
        else:
            assert change.kind is ChangeKind.UPDATED and change.alert.id == expected
            self.count[expected] += 1
        assert change.alert.count == self.count[change.alert.id]

    @rule(data=st.data(), action=st.sampled_from(list(AlertAction)))
    def act(self, data: st.DataObject, action: AlertAction) -> None:
        if not self.status:
            return
        alert_id = data.draw(st.sampled_from(sorted(self.status)))
        allowed = TRANSITIONS.get((self.status[alert_id], action))
        try:
            alert = self.store.act(alert_id, action, who="insp", note="n")
        except InvalidTransitionError:
            assert allowed is None
            return
        assert allowed is not None and alert.status is allowed
        self.status[alert_id] = allowed
        self.changes += 1

    @invariant()
    def store_matches_model(self) -> None:
        assert self.store.ledger.size == self.changes
        page = self.store.query(limit=1000)
        assert {a.id: a.status for a in page.items} == self.status


TestStoreModel = StoreModel.TestCase
TestStoreModel.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
