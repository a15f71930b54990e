"""The typed configuration: every problem reported at once, each with its path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, DeviceSettings, Settings, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "meterwatch.example.toml"


def _base() -> dict[str, Any]:
    return {
        "site": {"id": "s1"},
        "buses": [{"id": "tcp-a", "transport": "tcp", "host": "127.0.0.1", "port": 5020}],
        "devices": [
            {
                "id": "n1",
                "kind": "dispenser_nozzle",
                "profile": "fuel_nozzle",
                "bus": "tcp-a",
                "unit_id": 1,
                "poll_interval_s": 2,
            },
            {
                "id": "t1",
                "kind": "tank_gauge",
                "profile": "tank_gauge",
                "bus": "tcp-a",
                "unit_id": 2,
                "poll_interval_s": 60,
            },
        ],
        "groups": [{"id": "g", "type": "tank", "reference": "t1", "members": ["n1"]}],
    }


def _problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_valid_config_loads_with_defaults() -> None:
    settings = parse_config(_base())
    assert settings.device("n1").poll_interval_s == 2
    assert settings.device_timeout_s(settings.device("n1")) == 1.0
    assert settings.device("n1").effective_mpe_pct == 0.5


def test_three_distinct_mistakes_give_three_precise_messages() -> None:
    data = _base()
    data["devices"][0]["poll_interval_s"] = -5  # range
    data["devices"][1]["bus"] = "tcp-b"  # unknown reference
    data["devices"][1]["timeout_s"] = 90  # above the 60 s ceiling
    data["groups"][0]["members"] = ["t1"]  # wrong kind in a tank group
    problems = dict(_problems(data))
    assert set(problems) == {
        "devices[0].poll_interval_s",
        "devices[1].bus",
        "devices[1].timeout_s",
        "groups[0].members[0]",
    }
    assert "greater than 0" in problems["devices[0].poll_interval_s"]
    assert "'tcp-b'" in problems["devices[1].bus"] and "tcp-a" in problems["devices[1].bus"]
    assert "dispenser_nozzle" in problems["groups[0].members[0]"]


def test_timeout_must_be_below_poll_interval() -> None:
    data = _base()
    data["devices"][0]["timeout_s"] = 2.5
    assert _problems(data) == [
        (
            "devices[0].timeout_s",
            "the request timeout (2.5 s) must be below the poll interval (2 s)",
        )
    ]


def test_bus_timeout_counts_when_the_device_sets_none() -> None:
    data = _base()
    data["buses"][0]["timeout_s"] = 3
    paths = [p for p, _ in _problems(data)]
    assert paths == ["devices[0].poll_interval_s"]


def test_duplicate_ids_unknown_keys_and_modbus_needs_unit() -> None:
    data = _base()
    data["devices"][1]["id"] = "n1"
    del data["devices"][1]["unit_id"]
    data["devices"][0]["pol_interval_s"] = 3
    problems = dict(_problems(data))
    assert "duplicate id 'n1'" in problems["devices[1].id"]
    assert problems["devices[0].pol_interval_s"] == "unknown setting (check the spelling)"
    assert "unit_id" in problems["devices[1].unit_id"]


def test_placeholder_and_missing_secrets_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MW_NOT_SET", raising=False)
    data = _base()
    data["alerts"] = {
        "webhooks": [
            {"url": "https://h/x", "secret": "changeme"},
            {"url": "https://h/y", "secret": "env:MW_NOT_SET"},
            {"url": "https://h/z", "secret": "short-secret"},
        ]
    }
    problems = dict(_problems(data))
    assert "placeholder" in problems["alerts.webhooks[0].secret"]
    assert "MW_NOT_SET is not set" in problems["alerts.webhooks[1].secret"]
    assert "at least 16" in problems["alerts.webhooks[2].secret"]


def test_secrets_come_from_env_and_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MW_HOOK", "a-real-secret-of-some-length")
    monkeypatch.setenv("MW_STORAGE__INFLUXDB__PASSWORD", "influx-pass-from-env")
    data = _base()
    data["alerts"] = {"webhooks": [{"url": "https://h/x", "secret": "env:MW_HOOK"}]}
    data["storage"] = {"influxdb": {"username": "mw"}}
    settings = parse_config(data)
    secret = settings.alerts.webhooks[0].secret
    assert secret.get_secret_value() == "a-real-secret-of-some-length"
    pw = settings.storage.influxdb.password
    assert pw is not None and pw.get_secret_value() == "influx-pass-from-env"
    assert "a-real-secret" not in repr(settings) and "influx-pass" not in repr(settings)


def test_mqtt_device_needs_topic_and_rtu_refuses_broadcast_unit() -> None:
    data = _base()
    data["buses"] += [
        {"id": "mq", "transport": "mqtt", "host": "127.0.0.1"},
        {"id": "rs", "transport": "rtu", "serial_port": "/dev/ttyUSB0", "parity": "X"},
    ]
    data["devices"] += [
        {"id": "e1", "kind": "electricity", "profile": "shelly_em", "bus": "mq"},
        {"id": "e2", "kind": "electricity", "profile": "eastron_sdm630", "bus": "rs", "unit_id": 0},
    ]
    problems = dict(_problems(data))
    assert "topic" in problems["devices[2].topic"]
    assert "broadcast" in problems["devices[3].unit_id"]
    assert "buses[2].parity" in problems


def test_accuracy_class_is_checked_per_kind() -> None:
    data = _base()
    data["devices"][0]["accuracy_class"] = "B"  # an electricity class on a nozzle
    problems = dict(_problems(data))
    assert "unknown class 'B' for dispenser_nozzle" in problems["devices[0].accuracy_class"]
    data["devices"][0]["mpe_pct"] = 0.3
    assert parse_config(data).device("n1").effective_mpe_pct == 0.3


def test_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MW_MQTT_PASSWORD", "broker-password-1")
    monkeypatch.setenv("MW_WEBHOOK_SECRET", "webhook-secret-0123456789")
    settings = load_config(EXAMPLE)
    assert isinstance(settings, Settings)
    assert {d.id for d in settings.devices} >= {"tank-1", "nozzle-1", "car-wash"}
    assert all(isinstance(d, DeviceSettings) for d in settings.devices)


def test_check_config_command_prints_every_problem_and_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[buses]]\nid = "a"\ntransport = "tcp"\nhost = "h"\nport = 70000\n'
        '[[devices]]\nid = "d"\nkind = "water"\nprofile = "water_meter"\nbus = "b"\nunit_id = 1\n'
        '[storage]\nbackend = "sqlite"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "3 configuration problem(s)" in out.stderr
    for path in ("buses[0].port", "devices[0].bus", "storage.backend"):
        assert path in out.stderr


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text("[site\nid = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(bad) in str(info.value) and "TOML syntax error" in str(info.value)


def test_poll_phase_must_fall_inside_the_interval() -> None:
    data = _base()
    data["devices"][0]["poll_phase_s"] = 2.0  # interval is 2 s
    assert [p for p, _ in _problems(data)] == ["devices[0].poll_phase_s"]
    data["devices"][0]["poll_phase_s"] = 0.5
    assert parse_config(data).device("n1").poll_phase_s == 0.5
