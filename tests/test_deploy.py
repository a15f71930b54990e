"""The deploy files refer to things that exist: canonical fields, measurements, commands."""

from __future__ import annotations

import json
import re
from pathlib import Path

from drivers.fields import CANONICAL_FIELDS
from drivers.reading import DeviceKind

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def test_grafana_queries_use_the_storage_schema() -> None:
    dash = json.loads((DEPLOY / "grafana" / "meterwatch-dashboard.json").read_text())
    queries = [t["query"] for p in dash["panels"] for t in p["targets"]]
    assert queries
    for q in queries:
        m = re.search(r'SELECT mean\("(\w+)"\) AS "\w+" FROM "(\w+)"', q)
        assert m, q
        field, measurement = m.groups()
        kind = DeviceKind(measurement)  # one measurement per device kind
        assert field in CANONICAL_FIELDS[kind], (field, measurement)
        assert '"site" =~ /^$site$/' in q
        assert "$timeFilter" in q


def test_systemd_unit_checks_the_config_and_runs_the_gateway() -> None:
    unit = (DEPLOY / "meterwatch.service").read_text()
    assert re.search(r"^ExecStartPre=.*meterwatch check-config ", unit, re.MULTILINE)
    assert re.search(r"^ExecStart=.*meterwatch run -c ", unit, re.MULTILINE)
    assert "KillSignal=SIGTERM" in unit
