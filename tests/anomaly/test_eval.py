"""`meterwatch eval` on a few strong signatures (the full table is docs/eval.md)."""

import pytest

from gateway.commands.eval import CASES, run_case, table


def _case(name):
    return next(c for c in CASES if c.name == name)


@pytest.mark.slow
def test_strong_signatures_are_detected_in_time_without_false_alarms():
    results = [
        run_case(_case("calibration change"), 1, 5, 1.0),
        run_case(_case("register slowed 30 %"), 2, 4, 1.0),
    ]
    cal, slow = results
    assert cal.detected and cal.ttd_h is not None and cal.ttd_h <= 1.0
    assert cal.detector == "integrity.parameter_change"
    assert slow.detected and slow.ttd_h is not None and slow.ttd_h <= 24.0
    assert sum(r.false_alarms for r in results) == 0
    text = table(results, [_case("calibration change"), _case("register slowed 30 %")], 1, None)
    assert "| calibration change | first reading | 1.00 |" in text
