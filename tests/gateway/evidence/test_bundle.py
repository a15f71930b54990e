"""The evidence bundle: the shipped verifier accepts a good bundle and rejects tampering."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from anomaly.finding import Finding
from drivers.reading import DeviceKind, Reading
from gateway.alerts import AlertAction, AlertStore
from gateway.evidence import EvidenceError, build_bundle, readings_digest
from gateway.ledger import TreeHead

T0 = 1_764_300_000_000_000_000
S = 1_000_000_000


def readings() -> list[Reading]:
    out = []
    for i in range(60):
        t = T0 + i * 60 * S
        out.append(
            Reading(
                "n1",
                DeviceKind.DISPENSER_NOZZLE,
                t,
                i,
                {"volume_l": 10.0 * i + 0.25, "flow_l_min": 35.5},
            )
        )
        out.append(
            Reading("tank1", DeviceKind.TANK_GAUGE, t, 1000 + i, {"volume_l": 20_000.0 - 9.9 * i})
        )
    out.append(Reading("n1", DeviceKind.DISPENSER_NOZZLE, T0 + 3_601 * S, 60, {}, "timeout"))
    return out


def make_bundle(tmp_path: Path, *, signed: bool = False) -> tuple[bytes, AlertStore]:
    key = (
        Ed25519PrivateKey.generate()
        .private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        .hex()
        if signed
        else None
    )
    store = AlertStore(tmp_path / "alerts.sqlite", signing_key_hex=key)
    rs = readings()
    finding = Finding(
        detector="reconciliation.tank_nozzle_error",
        devices=("n1", "tank1"),
        score=4.2,
        threshold=1.0,
        window_start_ns=T0,
        window_end_ns=T0 + 3_601 * S,
        explanation="nozzle n1 over-registers by 1.0 % (95 % CI 0.8..1.2 %), MPE 0.5 %",
        estimate=1.0,
        ci_low=0.8,
        ci_high=1.2,
        unit="%",
        group="tank1",
    )
    # other alerts interleave in the ledger, so the proofs are not trivial
    store.ingest(
        Finding("integrity.counter_rollback", ("n2",), 1.0, 0.5, T0, T0 + S, "rollback"),
        site="s1",
        evidence_digest="00" * 32,
    )
    change = store.ingest(finding, site="s1", evidence_digest=readings_digest(rs))
    assert change is not None
    store.ingest(
        Finding("integrity.counter_rollback", ("n3",), 1.0, 0.5, T0, T0 + S, "rollback"),
        site="s1",
        evidence_digest="00" * 32,
    )
    store.act(change.alert.id, AlertAction.ACKNOWLEDGE, who="inspector.li", note="on site 14:00")
    alert = store.get(change.alert.id)
    data = build_bundle(alert, store.history(alert.id), rs, store.ledger)
    return data, store


@dataclass(frozen=True)
class Built:
    data: bytes
    head: TreeHead
    public_key: str | None


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One unsigned bundle for the module (rendering the chart is the slow part)."""
    data, store = make_bundle(tmp_path_factory.mktemp("bundle"))
    out = Built(data, store.ledger.head(), store.ledger.public_key)
    store.close()
    return out


def run_verifier(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -I -S: isolated, no site-packages: the verifier must need nothing but the standard library
    return subprocess.run(
        [sys.executable, "-I", "-S", str(directory / "verify_bundle.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=directory,
    )


def unpack(data: bytes, tmp_path: Path, name: str = "out") -> Path:
    path = tmp_path / f"{name}.zip"
    path.write_bytes(data)
    with zipfile.ZipFile(path) as z:
        z.extractall(tmp_path / name)
    (root,) = (tmp_path / name).iterdir()
    return root


def test_bundle_contents(tmp_path: Path, built: Built) -> None:
    data = built.data
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = sorted(n.split("/", 1)[1] for n in z.namelist())
        assert names == [
            "README.txt",
            "alert.json",
            "chart.png",
            "ledger/entries.json",
            "ledger/tree_head.json",
            "readings.csv",
            "verify_bundle.py",
        ]
        prefix = z.namelist()[0].split("/")[0]
        assert z.read(f"{prefix}/chart.png")[:8] == b"\x89PNG\r\n\x1a\n"
        alert = json.loads(z.read(f"{prefix}/alert.json"))
        assert [h["kind"] for h in alert["history"]] == ["created", "acknowledged"]
        assert alert["history"][1]["who"] == "inspector.li"
        readme = z.read(f"{prefix}/README.txt").decode()
        assert "python3 verify_bundle.py" in readme and alert["evidence_digest"] in readme
        csv_lines = z.read(f"{prefix}/readings.csv").decode().splitlines()
        assert len(csv_lines) == 1 + 121 and csv_lines[0].startswith(
            "device,seq,ts_ns,time_utc,quality"
        )


def test_shipped_verifier_accepts_a_good_bundle_standalone(tmp_path: Path, built: Built) -> None:
    data = built.data
    root = unpack(data, tmp_path)
    done = run_verifier(root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VERIFIED" in done.stdout and "FAIL" not in done.stdout
    # against the root the central office holds, and a wrong one
    head = built.head
    assert run_verifier(root, "--root", head.root, "--size", str(head.size)).returncode == 0
    wrong = run_verifier(root, "--root", "ab" * 32)
    assert wrong.returncode == 1 and "independently obtained root" in wrong.stdout
    # the zip itself works too
    zip_path = tmp_path / "out.zip"
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(root / "verify_bundle.py"), str(zip_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout


def test_shipped_verifier_rejects_a_tampered_csv(tmp_path: Path, built: Built) -> None:
    data = built.data
    root = unpack(data, tmp_path)
    csv_path = root / "readings.csv"
    text = csv_path.read_text()
    tampered = text.replace(",35.5,", ",35.6,", 1)  # one flow reading, one digit
    assert tampered != text
    csv_path.write_text(tampered)
    done = run_verifier(root)
    assert done.returncode == 1
    assert "FAIL  readings.csv hashes to" in done.stdout and "NOT VERIFIED" in done.stdout
    # dropping a row is caught too
    lines = text.splitlines(keepends=True)
    csv_path.write_text("".join(lines[:5] + lines[6:]))
    assert run_verifier(root).returncode == 1


def test_shipped_verifier_rejects_tampered_ledger_material(tmp_path: Path, built: Built) -> None:
    data = built.data
    root = unpack(data, tmp_path)
    entries_path = root / "ledger" / "entries.json"
    entries = json.loads(entries_path.read_text())
    # someone "improves" the acknowledgement note
    entries[1]["entry"] = entries[1]["entry"].replace("on site 14:00", "on site 09:00")
    entries_path.write_text(json.dumps(entries))
    done = run_verifier(root)
    assert done.returncode == 1 and "FAIL  ledger entry" in done.stdout
    # or the alert's status, without touching the ledger
    entries_path.write_text(
        json.dumps(json.loads((tmp_path / "x").read_text()) if False else entries)
    )


def test_status_edit_and_head_edit_are_rejected(tmp_path: Path, built: Built) -> None:
    data = built.data
    root = unpack(data, tmp_path)
    alert_path = root / "alert.json"
    alert = json.loads(alert_path.read_text())
    alert["status"] = "dismissed"
    alert_path.write_text(json.dumps(alert))
    done = run_verifier(root)
    assert done.returncode == 1 and "FAIL  the alert's status" in done.stdout
    root2 = unpack(data, tmp_path, "second")
    head_path = root2 / "ledger" / "tree_head.json"
    head = json.loads(head_path.read_text())
    head["size"] += 1
    head_path.write_text(json.dumps(head))
    assert run_verifier(root2).returncode == 1


def test_signed_bundle_verifies_with_the_script_and_openssl(tmp_path: Path) -> None:
    data, store = make_bundle(tmp_path, signed=True)
    root = unpack(data, tmp_path)
    assert (root / "ledger" / "public_key.pem").read_bytes().startswith(b"-----BEGIN PUBLIC KEY")
    public = store.ledger.public_key
    assert public is not None
    done = run_verifier(root, "--public-key", public)  # standard library only
    assert done.returncode == 0, done.stdout
    assert "OK    the tree head's Ed25519 signature" in done.stdout
    assert "OK    the tree head is signed by the registered key" in done.stdout
    wrong = run_verifier(root, "--public-key", "ab" * 32)
    assert (
        wrong.returncode == 1
        and "FAIL  the tree head is signed by the registered key" in wrong.stdout
    )
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cmd = [
        openssl,
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        "ledger/public_key.pem",
        "-rawin",
        "-in",
        "ledger/tree_head.msg",
        "-sigfile",
        "ledger/tree_head.sig",
    ]
    ok = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=30)
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout
    msg = root / "ledger" / "tree_head.msg"
    msg.write_bytes(msg.read_bytes().replace(b"\n", b"\n ", 1))
    assert subprocess.run(cmd, capture_output=True, cwd=root, timeout=30).returncode != 0
    # a forged head: the root changed, the signature kept
    head_path = root / "ledger" / "tree_head.json"
    head = json.loads(head_path.read_text())
    head["ts_ns"] += 1
    head_path.write_text(json.dumps(head))
    forged = run_verifier(root)
    assert forged.returncode == 1 and "FAIL  the tree head's Ed25519 signature" in forged.stdout
    store.close()


def test_an_alert_without_history_is_refused(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "alerts.sqlite")
    change = store.ingest(
        Finding("integrity.counter_rollback", ("n2",), 1.0, 0.5, T0, T0 + S, "rollback"),
        site="s1",
        evidence_digest="00" * 32,
    )
    assert change is not None
    alert = change.alert
    with pytest.raises(EvidenceError, match=f"alert {alert.id}: has no history"):
        build_bundle(alert, [], [], store.ledger)
    store.close()
