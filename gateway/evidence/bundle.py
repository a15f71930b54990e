"""The evidence bundle of one alert: a zip a court expert can check with nothing but Python.

Contents::

    README.txt            what is in the bundle and how to verify it, step by step
    verify_bundle.py      the standalone verifier (standard library only)
    alert.json            the alert, with its full history (every merged finding, every action)
    readings.csv          the readings of the window the alert's latest finding cites
    chart.png             a chart of those readings, the cited window shaded
    ledger/entries.json   the alert's ledger entries (exact bytes) with inclusion proofs
    ledger/tree_head.json the tree head (size, root, time, signature) the proofs lead to
    ledger/tree_head.msg  the exact bytes the signature covers   (signed ledgers only)
    ledger/tree_head.sig  the raw Ed25519 signature              (signed ledgers only)
    ledger/public_key.pem the signer's public key                (signed ledgers only)

`build_bundle` is synchronous and CPU-bound (the chart takes ~0.1-0.5 s): call
it from asyncio with ``await asyncio.to_thread(build_bundle, ...)``. Its
readings must be the raw readings of the cited window (`alert.devices`,
``[window_start_ns, window_end_ns]``) as they were when the finding was
ingested; if storage has since lost or changed any, the digest check of the
bundle fails, and it should.

Failure modes handled: an alert without ledger entries (`EvidenceError`),
readings with no numeric fields (the chart says so instead of failing),
history entries whose ledger index is beyond the tree (`EvidenceError`).
"""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Sequence
from importlib import resources
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from drivers.reading import Reading
from gateway.alerts.model import Alert, HistoryEntry
from gateway.evidence.digest import iso_utc, readings_csv, readings_digest
from gateway.ledger.store import Ledger

_CHART_LOCK = threading.Lock()  # matplotlib's font cache and rcParams are not thread-safe
MAX_CHART_FIELDS = 6


class EvidenceError(Exception):
    """The bundle cannot be built; `alert_id` names the alert."""

    def __init__(self, message: str, *, alert_id: int) -> None:
        super().__init__(f"alert {alert_id}: {message}")
        self.alert_id = alert_id


def verifier_source() -> bytes:
    """The bytes of the standalone `verify_bundle.py` shipped in every bundle."""
    return resources.files("gateway.evidence").joinpath("verify_bundle.py").read_bytes()


def build_bundle(
    alert: Alert,
    history: Sequence[HistoryEntry],
    readings: Sequence[Reading],
    ledger: Ledger,
) -> bytes:
    """The zip (bytes) for `alert`; `history` is ``store.history(alert.id)`` (all entries)."""
    if not history:
        raise EvidenceError("has no history, so no ledger entries to prove", alert_id=alert.id)
    head = ledger.head()
    items: list[dict[str, Any]] = []
    for h in sorted(history, key=lambda h: h.ledger_index):
        if h.ledger_index >= head.size:
            raise EvidenceError(
                f"history cites ledger entry {h.ledger_index}, beyond the tree of size {head.size}",
                alert_id=alert.id,
            )
        entry = ledger.entry(h.ledger_index)
        proof = ledger.inclusion_proof(h.ledger_index, head.size)
        items.append(
            {
                "index": h.ledger_index,
                "leaf_hash": entry.leaf_hash,
                "entry": entry.raw.decode("utf-8"),
                "proof": [p.hex() for p in proof],
            }
        )
    alert_doc = alert.to_dict()
    alert_doc["history"] = [h.to_dict() for h in history]
    digest = readings_digest(readings)
    files: dict[str, bytes] = {
        "README.txt": _readme(
            alert, head.size, head.root, digest, signed=bool(head.signature)
        ).encode("utf-8"),
        "verify_bundle.py": verifier_source(),
        "alert.json": _json(alert_doc),
        "readings.csv": readings_csv(readings).encode("utf-8"),
        "chart.png": render_chart(alert, readings),
        "ledger/entries.json": _json(items),
        "ledger/tree_head.json": _json(head.to_dict()),
    }
    if head.signature and head.public_key:
        files["ledger/tree_head.msg"] = head.message()
        files["ledger/tree_head.sig"] = bytes.fromhex(head.signature)
        files["ledger/public_key.pem"] = Ed25519PublicKey.from_public_bytes(
            bytes.fromhex(head.public_key)
        ).public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    stamp = time.gmtime(head.ts_ns // 1_000_000_000)[:6]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(f"alert-{alert.id}/{name}", date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if name.endswith(".py") else 0o644) << 16
            z.writestr(info, data)
    return out.getvalue()


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"


def render_chart(alert: Alert, readings: Sequence[Reading]) -> bytes:
    """A PNG: one panel per field (at most six), one line per device, the window shaded."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = sorted({n for r in readings for n in r.fields})[:MAX_CHART_FIELDS]
    devices = sorted({r.device_id for r in readings})
    t0 = alert.window_start_ns
    with _CHART_LOCK:
        fig = Figure(figsize=(9, 2.2 * max(len(names), 1) + 0.8), dpi=100)
        FigureCanvasAgg(fig)
        fig.suptitle(f"alert {alert.id}: {alert.detector} on {alert.device}", fontsize=10)
        if not names:
            ax = fig.add_subplot(1, 1, 1)
            ax.text(0.5, 0.5, "no numeric readings in the cited window", ha="center")
            ax.set_axis_off()
        for i, name in enumerate(names):
            ax = fig.add_subplot(len(names), 1, i + 1)
            for dev in devices:
                pts = [
                    ((r.ts_ns - t0) / 3.6e12, r.fields[name])
                    for r in readings
                    if r.device_id == dev and name in r.fields and r.ok
                ]
                if pts:
                    pts.sort()
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], label=dev, lw=1)
            ax.axvspan(0, (alert.window_end_ns - t0) / 3.6e12, color="orange", alpha=0.15)
            ax.set_ylabel(name, fontsize=8)
            ax.tick_params(labelsize=7)
            if i == 0 and devices:
                ax.legend(fontsize=7, loc="upper left")
        if names:
            fig.axes[-1].set_xlabel(
                f"hours since {iso_utc(t0)} (start of the cited window)", fontsize=8
            )
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _readme(alert: Alert, size: int, root: str, digest: str, *, signed: bool) -> str:
    sig_steps = (
        """
5. The ledger signs its tree heads with Ed25519. verify_bundle.py checks the
   signature itself; pin the key the operator registered with

       python3 verify_bundle.py --public-key <HEX>

   or check it independently with OpenSSL 3:

       openssl pkeyutl -verify -pubin -inkey ledger/public_key.pem -rawin \\
           -in ledger/tree_head.msg -sigfile ledger/tree_head.sig

   which prints "Signature Verified Successfully". tree_head.msg holds the
   size, root and time of tree_head.json, exactly as signed.
"""
        if signed
        else """
5. This ledger does not sign its tree heads; step 4 is what ties the bundle
   to a root held by someone other than the operator.
"""
    )
    return f"""meterwatch evidence bundle — alert {alert.id}

Alert:     {alert.id}, {alert.detector} on device {alert.device} (site {alert.site})
Status:    {alert.status.value}, severity {alert.severity.value}, {alert.count} finding(s)
Finding:   {alert.explanation}
Window:    {iso_utc(alert.window_start_ns)} .. {iso_utc(alert.window_end_ns)}
           ({alert.window_start_ns} .. {alert.window_end_ns} ns since 1970, UTC)
Readings:  SHA-256 digest {digest}
Ledger:    tree of {size} entries, root {root}

What is here
  alert.json          the alert and its full history (findings merged, actions by whom, when)
  readings.csv        the raw readings of the cited window, one column per field
  chart.png           those readings over time; the cited window is shaded
  ledger/entries.json the alert's entries in the gateway's evidence ledger, exact bytes,
                      each with its Merkle inclusion proof
  ledger/tree_head.json  the ledger's tree head the proofs lead to
  verify_bundle.py    a verifier that needs only Python 3.10 or newer

The ledger is an append-only Merkle tree (RFC 6962): leaf = SHA-256(0x00 || entry),
node = SHA-256(0x01 || left || right). Every alert, every change of its state and
the digest of the readings it cites are entries. Changing, removing or reordering
any entry changes the root.

How to verify, step by step
1. Unpack the zip and run, in the unpacked directory:

       python3 verify_bundle.py

   It prints one line per check and VERIFIED at the end (exit status 0).
2. It re-hashes readings.csv in the canonical form described at the top of
   verify_bundle.py and compares it with the evidence digest in alert.json and
   in the ledger entries. Change one digit of the CSV and this check fails.
3. It recomputes the tree root from each ledger entry and its proof (RFC 9162
   section 2.1.3.2) and compares it with ledger/tree_head.json.
4. Obtain the ledger's root independently — from the central office that
   collects signed tree heads, or on the gateway with

       meterwatch ledger head -c /etc/meterwatch/meterwatch.toml

   — and pass it:  python3 verify_bundle.py --root <ROOT> --size <SIZE>
   If the root you hold is of an older size, ask the operator for a consistency
   proof (`meterwatch ledger proof --consistency OLD_SIZE`) to show the
   ledger only grew since.
{sig_steps}
verify_bundle.py is short; read it before you trust it.
"""
